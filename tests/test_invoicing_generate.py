"""erp:generate-recurring-invoices: a year of daily runs per frequency, month ends,
end date and limit, double runs, catch-up, failures, two generators on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from conftest import make_settings
from erpq.db import make_engine, upgrade
from erpq.invoicing import periods, service
from erpq.invoicing.models import Invoice, InvoiceLine, RecurringInvoice
from erpq.models import EventOutbox
from erpq.ops import Actor, Invalid, Ops
from erpq.runtime import Runtime, set_current

D = dt.date
LINES = [{"description": "Support plan", "quantity": "3", "unit_price": "19.99", "tax_rate": "19"},
         {"description": "Rounding probe", "quantity": "0.5", "unit_price": "0.05", "tax_rate": "19"}]


def _ops(rt) -> Ops:
    return Ops(rt, Actor("tester", None, "cli"))


def _add(ops, tenant="acme", **kw):
    kw.setdefault("lines", LINES)
    kw.setdefault("name", f"{kw['frequency']} plan")
    return ops.invoicing.add(tenant, kw.pop("name"), kw.pop("lines"), kw.pop("frequency"), **kw)


def _invoices(rt, template_id=None):
    with rt.read_session() as s:
        q = sa.select(Invoice).order_by(Invoice.id)
        if template_id is not None:
            q = q.where(Invoice.recurring_invoice_id == template_id)
        return list(s.scalars(q))


def _days(first: dt.date, last: dt.date):
    d = first
    while d <= last:
        yield d
        d += dt.timedelta(days=1)


@pytest.fixture
def ops(runtime):
    o = _ops(runtime)
    o.add_tenant("acme")
    return o


def test_money_is_rounded_per_line_and_per_total():
    lines = service.parse_lines(LINES)
    assert [(ln.net, ln.tax, ln.total) for ln in lines] == [
        (Decimal("59.97"), Decimal("11.39"), Decimal("71.36")), (Decimal("0.03"), Decimal("0.01"), Decimal("0.04"))]
    assert service.totals(lines) == (Decimal("60.00"), Decimal("11.40"), Decimal("71.40"))
    with pytest.raises(ValueError, match="line 1 unit_price: not a number"):
        service.parse_lines([{"description": "x", "unit_price": "abc"}])


def test_month_end_anchor_across_february_leap_and_not():
    def dates(start, n):
        return [periods.occurrence("monthly", 1, start, 31, i) for i in range(n)]

    assert dates(D(2027, 1, 31), 4) == [D(2027, 1, 31), D(2027, 2, 28), D(2027, 3, 31), D(2027, 4, 30)]
    assert dates(D(2028, 1, 31), 4) == [D(2028, 1, 31), D(2028, 2, 29), D(2028, 3, 31), D(2028, 4, 30)]
    assert periods.occurrence("monthly", 1, D(2027, 1, 10), 5, 0) == D(2027, 2, 5)  # day 5 already past
    assert periods.occurrence("yearly", 1, D(2028, 2, 29), None, 1) == D(2029, 2, 28)
    assert periods.occurrence("yearly", 1, D(2028, 2, 29), None, 4) == D(2032, 2, 29)


def test_a_year_of_daily_runs_per_frequency(runtime, ops):
    daily = _add(ops, frequency="daily", interval=3, start_date=D(2027, 1, 1))
    weekly = _add(ops, frequency="weekly", interval=2, anchor_day=1, start_date=D(2027, 1, 1))
    monthly = _add(ops, frequency="monthly", anchor_day=31, start_date=D(2027, 1, 15), payment_terms_days=30)
    quarterly = _add(ops, frequency="quarterly", start_date=D(2027, 1, 1))
    yearly = _add(ops, frequency="yearly", start_date=D(2027, 1, 1))
    for day in _days(D(2027, 1, 1), D(2027, 12, 31)):
        service.generate(runtime, day)

    def issued(t):
        return [i.issue_date for i in _invoices(runtime, t.id)]

    assert issued(daily) == [D(2027, 1, 1) + dt.timedelta(days=3 * i) for i in range(122)]
    assert issued(weekly) == [D(2027, 1, 4) + dt.timedelta(weeks=2 * i) for i in range(26)]
    assert issued(monthly) == [D(2027, 1, 31), D(2027, 2, 28), D(2027, 3, 31), D(2027, 4, 30), D(2027, 5, 31),
                               D(2027, 6, 30), D(2027, 7, 31), D(2027, 8, 31), D(2027, 9, 30), D(2027, 10, 31),
                               D(2027, 11, 30), D(2027, 12, 31)]
    assert issued(quarterly) == [D(2027, 1, 1), D(2027, 4, 1), D(2027, 7, 1), D(2027, 10, 1)]
    assert issued(yearly) == [D(2027, 1, 1)]
    invoices = _invoices(runtime)
    assert len(invoices) == 122 + 26 + 12 + 4 + 1
    assert all((i.subtotal, i.tax_total, i.total) == (Decimal("60.00"), Decimal("11.40"), Decimal("71.40"))
               for i in invoices)
    assert sum(i.total for i in invoices) == Decimal("71.40") * 165
    # Numbers: per tenant, sequential in issue order, no gaps, no duplicates.
    assert sorted(i.number for i in invoices) == [f"INV-2027-{n:06d}" for n in range(1, 166)]
    feb = next(i for i in _invoices(runtime, monthly.id) if i.issue_date.month == 2)
    assert (feb.period_start, feb.period_end, feb.due_date) == (D(2027, 2, 28), D(2027, 3, 30), D(2027, 3, 30))
    with runtime.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InvoiceLine)) == 165 * 2
        assert s.scalar(sa.select(sa.func.count()).select_from(EventOutbox)
                        .where(EventOutbox.name == "invoice.created")) == 165
    info = ops.invoicing.template(monthly.id)
    last = _invoices(runtime, monthly.id)[-1]
    assert (info.next_date, info.last_invoice, info.state) == (D(2028, 1, 31), last.number, "active")
    assert info.last_invoice_date == D(2027, 12, 31)


def test_month_end_generation_in_leap_and_non_leap_years(runtime, ops):
    a = _add(ops, frequency="monthly", start_date=D(2027, 1, 31))
    b = _add(ops, frequency="monthly", start_date=D(2028, 1, 31))
    service.generate(runtime, D(2028, 4, 30))
    assert [i.issue_date for i in _invoices(runtime, a.id)][:4] == [D(2027, 1, 31), D(2027, 2, 28), D(2027, 3, 31),
                                                                     D(2027, 4, 30)]
    assert [i.issue_date for i in _invoices(runtime, b.id)] == [D(2028, 1, 31), D(2028, 2, 29), D(2028, 3, 31),
                                                                D(2028, 4, 30)]
    numbers = [i.number for i in _invoices(runtime)]
    assert "INV-2028-000001" in numbers and "INV-2027-000012" in numbers  # numbering restarts each year


def test_end_date_and_occurrence_limit_deactivate(runtime, ops):
    ends = _add(ops, frequency="daily", start_date=D(2027, 1, 1), end_date=D(2027, 1, 5))
    limited = _add(ops, frequency="weekly", start_date=D(2027, 1, 1), max_occurrences=3)
    for day in _days(D(2027, 1, 1), D(2027, 2, 28)):
        service.generate(runtime, day)
    assert [i.issue_date for i in _invoices(runtime, ends.id)] == [D(2027, 1, d) for d in range(1, 6)]
    assert [i.issue_date for i in _invoices(runtime, limited.id)] == [D(2027, 1, 1), D(2027, 1, 8), D(2027, 1, 15)]
    a, b = ops.invoicing.template(ends.id), ops.invoicing.template(limited.id)
    assert (a.state, a.next_date, a.reason) == ("ended", None, "end date reached (2027-01-05)")
    assert (b.state, b.occurrences, b.reason) == ("ended", 3, "occurrence limit reached (3)")


def test_a_run_repeated_the_same_day_issues_nothing_more(runtime, ops):
    t = _add(ops, frequency="daily", start_date=D(2027, 3, 1))
    first = service.generate(runtime, D(2027, 3, 3))
    again = service.generate(runtime, D(2027, 3, 3))
    assert (first.invoices, again.invoices) == (3, 0)
    assert len(_invoices(runtime, t.id)) == 3
    # The unique key refuses a second invoice for a period even behind the generator's back.
    with pytest.raises(sa.exc.IntegrityError), runtime.session() as s:
        s.add(Invoice(tenant_id=t.tenant_id, number="X-1", recurring_invoice_id=t.id, period_start=D(2027, 3, 1),
                      issue_date=D(2027, 3, 1), total=0, currency="EUR"))


@pytest.mark.parametrize("limit,issued,left", [(50, 40, 0), (30, 30, 10)])
def test_catch_up_after_a_40_day_gap(tmp_path, limit, issued, left):
    rt = Runtime(make_settings(tmp_path, invoicing={"catch_up_limit": limit}))
    set_current(rt)
    try:
        ops = _ops(rt)
        ops.add_tenant("acme")
        t = _add(ops, frequency="daily", start_date=D(2027, 1, 1))
        r = service.generate(rt, D(2027, 2, 9))  # 40 days, nothing run before
        assert r.invoices == issued
        assert len(r.backlog.get(t.id, [])) == left
        info = ops.invoicing.template(t.id)
        dates = [i.issue_date for i in _invoices(rt, t.id)]
        assert dates == [D(2027, 1, 1) + dt.timedelta(days=i) for i in range(issued)]
        if left:
            assert r.backlog[t.id][0] == D(2027, 1, 31) and r.backlog[t.id][-1] == D(2027, 2, 9)
            assert info.state == "paused" and "10 more period(s) due from 2027-01-31" in info.reason
            assert info.next_date == D(2027, 1, 31)  # no gap: the next invoice is the next period
            assert service.generate(rt, D(2027, 2, 9)).invoices == 0  # paused: reported, not issued
            ops.invoicing.resume(t.id)
            assert service.generate(rt, D(2027, 2, 9)).invoices == 10
        assert [i.number for i in _invoices(rt)] == [f"INV-2027-{n:06d}" for n in range(1, 41)][:len(_invoices(rt))]
        assert len(_invoices(rt)) == 40
    finally:
        set_current(None)
        rt.close()


def test_a_failing_template_is_paused_after_n_failures_and_others_go_on(runtime, ops):
    bad = _add(ops, frequency="daily", start_date=D(2027, 1, 1))
    good = _add(ops, frequency="daily", start_date=D(2027, 1, 1))
    with runtime.session() as s:
        s.get(RecurringInvoice, bad.id).lines = [{"description": "x", "unit_price": "oops"}]
    for day in (D(2027, 1, 1), D(2027, 1, 2), D(2027, 1, 3), D(2027, 1, 4)):
        r = service.generate(runtime, day)
        assert r.invoices == 1
    assert [i.issue_date for i in _invoices(runtime, good.id)] == [D(2027, 1, d) for d in range(1, 5)]
    info = ops.invoicing.template(bad.id)
    assert info.state == "failing" and info.consecutive_failures == 3
    assert info.reason.startswith("paused after 3 consecutive failures: ValueError: line 1 unit_price")
    assert ops.invoicing.templates_page().items[0].id == bad.id  # failing ones first on the panel
    assert [i.number for i in _invoices(runtime)] == [f"INV-2027-{n:06d}" for n in range(1, 5)]  # no gaps


def test_add_refuses_bad_input_and_writes_nothing(runtime, ops):
    for kw, msg in ((dict(frequency="fortnightly"), "frequency 'fortnightly'"),
                    (dict(frequency="monthly", anchor_day=32), "anchor day must be 1-31"),
                    (dict(frequency="daily", lines=[]), "at least one line"),
                    (dict(frequency="daily", start_date=D(2027, 2, 1), end_date=D(2027, 1, 1)), "before the start")):
        with pytest.raises(Invalid, match=msg):
            _add(ops, **kw)
    assert ops.invoicing.templates() == []


def test_pause_resume_and_lists(runtime, ops):
    t = _add(ops, frequency="daily", start_date=D(2027, 1, 1))
    ops.invoicing.pause(t.id)
    assert service.generate(runtime, D(2027, 1, 2)).invoices == 0
    assert ops.invoicing.template(t.id).state == "paused"
    ops.invoicing.resume(t.id)
    assert ops.invoicing.generate(D(2027, 1, 2)).invoices == 2
    page = ops.invoicing.invoices(tenant="acme", since=D(2027, 1, 2))
    assert [i.issue_date for i in page.items] == [D(2027, 1, 2)] and page.total == 1
    assert ops.invoicing.summary()["active"] == 1


def _pg_runtime(tmp_path, url) -> Runtime:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": url}, invoicing={"batch_size": 25}))
    set_current(rt)
    return rt


def test_two_generators_at_once_on_postgresql(tmp_path, pg_url):
    rt = _pg_runtime(tmp_path, pg_url)
    try:
        ops = _ops(rt)
        ops.add_tenant("acme")
        ops.add_tenant("globex")
        for i in range(120):
            _add(ops, tenant="acme" if i % 2 else "globex", frequency="daily", start_date=D(2027, 1, 1))
        barrier = threading.Barrier(2)
        results, errors = [], []

        def run():
            try:
                barrier.wait()
                results.append(service.generate(rt, D(2027, 1, 3)))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert sum(r.invoices for r in results) == 360
        invoices = _invoices(rt)
        assert len(invoices) == 360
        assert len({(i.recurring_invoice_id, i.period_start) for i in invoices}) == 360
        for tenant_id in {i.tenant_id for i in invoices}:
            numbers = sorted(i.number for i in invoices if i.tenant_id == tenant_id)
            assert numbers == [f"INV-2027-{n:06d}" for n in range(1, 181)]  # no duplicates, no gaps
    finally:
        set_current(None)
        rt.close()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_a_batch_on_a_server_links_lines_events_and_numbers_in_order(tmp_path, request, server):
    url = request.getfixturevalue("pg_url" if server == "postgresql" else "mariadb_url")
    rt = _pg_runtime(tmp_path, url)
    try:
        ops = _ops(rt)
        ops.add_tenant("acme")
        ops.add_tenant("globex")
        for i in range(30):  # two batches of 25
            _add(ops, tenant="acme" if i % 3 else "globex", frequency="monthly", start_date=D(2027, 1, 1))
        result = service.generate(rt, D(2027, 1, 1))
        assert (result.invoices, result.templates, result.failed) == (30, 30, {})
        invoices = _invoices(rt)
        assert [i.id for i in invoices] == result.invoice_ids
        with rt.read_session() as s:
            lines = list(s.scalars(sa.select(InvoiceLine).order_by(InvoiceLine.id)))
            outbox = list(s.scalars(sa.select(EventOutbox).order_by(EventOutbox.id)))
            templates = list(s.scalars(sa.select(RecurringInvoice).order_by(RecurringInvoice.id)))
        assert [(ln.invoice_id, ln.position) for ln in lines] == [(i.id, p) for i in invoices for p in (1, 2)]
        for inv in invoices:
            mine = [ln for ln in lines if ln.invoice_id == inv.id]
            assert sum(ln.total for ln in mine) == inv.total and all(ln.tenant_id == inv.tenant_id for ln in mine)
        assert sorted((e.payload["invoice_id"], e.payload["number"], e.tenant_id, e.status) for e in outbox) == [
            (i.id, i.number, i.tenant_id, "done") for i in invoices]
        for tenant_id in {i.tenant_id for i in invoices}:
            mine = [i for i in invoices if i.tenant_id == tenant_id]  # by id: numbers follow the template order
            assert [i.number for i in mine] == [f"INV-2027-{n:06d}" for n in range(1, len(mine) + 1)]
        assert {(t.occurrences, t.next_date) for t in templates} == {(1, D(2027, 2, 1))}
    finally:
        set_current(None)
        rt.close()
