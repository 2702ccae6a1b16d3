"""Reports: every kind in every format opened back and checked, formula
injection neutralised, PDF headers repeated with "page N of M", schedules
across DST, after downtime, with a bad cron isolated, ExportReportJob's email
received by aiosmtpd, the Ops section and the CLI, and PostgreSQL / MariaDB."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import email
import json
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from pypdf import PdfReader

import smtp_fixtures
from conftest import make_settings
from draining import drain
from erpq.models import AuditLog, Tenant
from erpq.ops import Actor, Conflict, Invalid, Ops, ReadOnly
from erpq.reports import kinds, schedules
from erpq.reports.cli import register
from erpq.reports.export import neutralise
from erpq.reports.models import ReportSchedule
from erpq.runtime import Runtime, set_current

smtp_server = smtp_fixtures.smtp_server

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(tzinfo=None, microsecond=0)
EVIL = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "\nLF"]


def table(rt: Runtime, name: str) -> sa.Table:
    """Another capability's table, reflected by name (its class may live anywhere)."""
    return sa.Table(name, sa.MetaData(), autoload_with=rt.engine)


def insert(rt: Runtime, name: str, rows: list[dict]) -> None:
    t = table(rt, name)
    texts = {c.name for c in t.columns if not isinstance(c.type, sa.JSON)}  # MariaDB reflects JSON as LONGTEXT
    rows = [{k: json.dumps(v) if k in texts and isinstance(v, list | dict) else v for k, v in r.items()} for r in rows]
    with rt.session() as s:
        s.execute(sa.insert(t), rows)


def seed(rt: Runtime, slug: str = "acme") -> int:
    with rt.session() as s:
        t = Tenant(slug=slug, name=slug.title())
        s.add(t)
        s.flush()
        tid = t.id
    insert(rt, "users", [{"tenant_id": tid, "name": n, "email": f"{n.lower()}@acme.test", "is_active": True,
                          "created_at": NOW} for n in ("Ann", "Bob")])
    with rt.read_session() as s:
        u = table(rt, "users")
        users = dict(s.execute(sa.select(u.c.name, u.c.id)).all())
    deal = {"tenant_id": tid, "currency": "EUR", "created_at": NOW, "updated_at": NOW}
    insert(rt, "deals", [{**deal, "title": "A", "amount": Decimal("1000.50"), "status": "open", "stage": "proposal",
                          "assigned_to": users["Ann"]},
                         {**deal, "title": "B", "amount": Decimal("250.25"), "status": "open", "stage": "proposal",
                          "assigned_to": users["Ann"]},
                         {**deal, "title": "C", "amount": Decimal("99.00"), "status": "open", "stage": "lead",
                          "assigned_to": users["Bob"]},
                         {**deal, "title": "D", "amount": Decimal("5000"), "status": "won", "stage": "closed",
                          "assigned_to": None}])
    inv = {"tenant_id": tid, "lines": [], "currency": "EUR", "created_at": NOW}
    insert(rt, "erp_invoices", [
        {**inv, "number": "1", "issue_date": dt.date(2026, 1, 5), "due_date": dt.date(2026, 1, 19),
         "total": Decimal("100.00"), "status": "paid"},
        {**inv, "number": "2", "issue_date": dt.date(2026, 1, 20), "due_date": dt.date(2026, 2, 3),
         "total": Decimal("200.00"), "status": "sent"},
        {**inv, "number": "3", "issue_date": dt.date(2026, 2, 1), "due_date": dt.date(2099, 1, 1),
         "total": Decimal("300.00"), "status": "sent"},
        {**inv, "number": "4", "issue_date": dt.date(2026, 2, 2), "due_date": None,
         "total": Decimal("1.00"), "status": "draft"}])
    insert(rt, "erp_products", [{"tenant_id": tid, "sku": "SKU-1", "name": "Widget", "stock_quantity": Decimal("3"),
                                 "unit_cost": Decimal("2.50"), "is_active": True, "updated_at": NOW},
                                {"tenant_id": tid, "sku": "SKU-2", "name": "Gadget", "stock_quantity": Decimal("50"),
                                 "unit_cost": Decimal("1.00"), "is_active": True, "updated_at": NOW}])
    with rt.read_session() as s:
        p = table(rt, "erp_products")
        pid = s.scalar(sa.select(p.c.id).where(p.c.sku == "SKU-1"))
    insert(rt, "erp_reorder_rules", [{"tenant_id": tid, "product_id": pid, "min_quantity": Decimal("5"),
                                      "reorder_quantity": Decimal("20"), "is_active": True}])
    lead = {"tenant_id": tid, "created_at": NOW}
    insert(rt, "leads", [{**lead, "name": "L1", "source": "web", "status": "new"},
                         {**lead, "name": "L2", "source": "web", "status": "new"},
                         {**lead, "name": "L3", "source": "fair", "status": "qualified"}])
    act = {"tenant_id": tid, "type": "task", "created_at": NOW}
    insert(rt, "activities", [
        {**act, "subject": "late", "status": "open", "due_at": NOW - dt.timedelta(days=2), "assigned_to": users["Ann"]},
        {**act, "subject": "later", "status": "open", "due_at": NOW + dt.timedelta(days=30), "assigned_to": users["Ann"]},
        {**act, "subject": "done", "status": "done", "due_at": NOW - dt.timedelta(days=2), "assigned_to": users["Bob"]}])
    insert(rt, "erp_webhooks", [{"tenant_id": tid, "url": "https://hooks.example/a", "events": ["*"],
                                 "secret": "whsec_x", "is_active": True, "consecutive_failures": 0,
                                 "created_at": NOW}])
    with rt.read_session() as s:
        hid = s.scalar(sa.select(table(rt, "erp_webhooks").c.id))
    insert(rt, "erp_webhook_deliveries", [
        {"tenant_id": tid, "webhook_id": hid, "delivery_id": f"d{i}", "event": "lead.created", "payload": {},
         "status": st, "attempts": 1, "created_at": NOW, "updated_at": NOW}
        for i, st in enumerate(["delivered", "delivered", "delivered", "failed", "pending"])])
    return tid


@pytest.fixture
def ops(runtime) -> Ops:
    return Ops(runtime, Actor("tester", None, "cli"))


@pytest.fixture
def tenant(runtime) -> int:
    return seed(runtime)


EXPECTED = {
    "deals_pipeline": ([("lead", "Bob", 1, Decimal("99.00")), ("proposal", "Ann", 2, Decimal("1250.75"))],
                       ("Total", None, 3, Decimal("1349.75"))),
    "invoices": ([(dt.date(2026, 1, 1), 2, Decimal("300.00"), 1, Decimal("100.00"), 1, Decimal("200.00")),
                  (dt.date(2026, 2, 1), 1, Decimal("300.00"), 0, Decimal("0"), 0, Decimal("0"))],
                 ("Total", 3, Decimal("600.00"), 1, Decimal("100.00"), 1, Decimal("200.00"))),
    "stock_levels": ([("SKU-1", "Widget", Decimal("3.000"), Decimal("5.000"), Decimal("20.000"), Decimal("2.50"),
                       Decimal("7.50"), "yes"),
                      ("SKU-2", "Gadget", Decimal("50.000"), None, None, Decimal("1.00"), Decimal("50.00"), "no")],
                     ("Total", None, None, None, None, None, Decimal("57.50"), None)),
    "leads": ([("fair", "qualified", 1), ("web", "new", 2)], ("Total", None, 3)),
    "activities": ([("Ann", 0, 1)], ("Total", 0, 1)),
    "webhook_deliveries": ([(1, "https://hooks.example/a", 5, 3, 1, 1, Decimal("75.0"))],
                           ("Total", None, 5, 3, 1, 1, None)),
}


@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_each_kind_returns_typed_rows_and_totals(runtime, tenant, kind):
    with runtime.read_session() as s:
        data = kinds.build(s, kind, tenant, {"today": "2026-03-01"} if kind == "invoices" else {})
    rows = [tuple(r) for r in data.rows]
    assert (rows, data.totals) == EXPECTED[kind]
    assert data.title


def _cells(ws) -> list[list]:
    return [list(r) for r in ws.iter_rows(values_only=True)]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "pdf"])
@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_each_kind_in_each_format_opens_back(runtime, ops, tenant, tmp_path, kind, fmt):
    filters = {"today": "2026-03-01"} if kind == "invoices" else {}
    rep = ops.reports.create("acme", f"My {kind}", kind, filters)
    path = Path(ops.reports.run(rep.id, fmt, str(tmp_path / f"out.{fmt}")))
    rows, totals = EXPECTED[kind]
    with runtime.read_session() as s:
        cols = kinds.build(s, kind, tenant, filters).columns
    if fmt == "csv":
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # BOM for Excel (default on), CRLF
        parsed = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
        assert parsed[0] == [c.label for c in cols]
        assert len(parsed) == 1 + len(rows) + 1 and parsed[-1][0] == "Total"
        first = [str(v) if not isinstance(v, dt.date) else v.isoformat() for v in rows[0]]
        assert [c if c else "None" for c in parsed[1]] == [("None" if v is None else
                                                           (f"{Decimal(v):.2f}" if c.type == "money" else v))
                                                          for v, c in zip(first, cols, strict=True)]
    elif fmt == "xlsx":
        wb = openpyxl.load_workbook(path)
        ws = wb.active
        cells = _cells(ws)
        assert cells[0] == [c.label for c in cols]
        assert ws.freeze_panes == "A2" and ws.auto_filter.ref == f"A1:{ws.cell(1, len(cols)).column_letter}{len(rows) + 1}"
        assert ws.cell(1, 1).font.b and ws.cell(len(rows) + 2, 1).value == "Total"
        for i, c in enumerate(cols, 1):
            v = ws.cell(2, i)
            expected = rows[0][i - 1]
            if c.type == "money" and expected is not None:
                assert v.number_format == "#,##0.00" and Decimal(str(v.value)) == expected
            elif c.type == "date":
                assert v.is_date and v.value.date() == expected
            elif c.type == "int":
                assert v.value == expected and isinstance(v.value, int)
        assert ws.column_dimensions["A"].width >= len(cols[0].label)
    else:
        reader = PdfReader(path)
        assert len(reader.pages) == 1
        text = reader.pages[0].extract_text()
        for needle in ("Tenant: acme", "Generated: ", "Filters: ", "page 1 of 1", cols[0].label, "Total"):
            assert needle in text, (needle, text)
        if kind == "invoices":
            assert "Filters: today=2026-03-01" in text and "600.00" in text
        if kind == "deals_pipeline":
            assert "Amount by stage" in text and "1,349.75" not in text and "1349.75" in text


def test_formula_injection_is_neutralised_in_csv_and_excel(runtime, ops, tenant, tmp_path):
    insert(runtime, "leads", [{"tenant_id": tenant, "name": "x", "source": evil, "status": "new", "created_at": NOW}
                              for evil in EVIL])
    rep = ops.reports.create("acme", "Evil", "leads")
    csv_path = Path(ops.reports.run(rep.id, "csv", str(tmp_path / "e.csv")))
    raw = csv_path.read_bytes()
    assert b'"\'\rCR"' in raw and b'"\'\nLF"' in raw  # quoted, the CR kept (RFC 4180)
    # Python's csv reader turns a line break inside quotes into "\n"; compare modulo that.
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        sources = [r[0].replace("\n", "\r") for r in csv.reader(f)][1:-1]
    xlsx_path = Path(ops.reports.run(rep.id, "xlsx", str(tmp_path / "e.xlsx")))
    ws = openpyxl.load_workbook(xlsx_path).active
    cells = [ws.cell(r, 1) for r in range(2, ws.max_row)]
    for evil in EVIL:
        assert "'" + evil.replace("\n", "\r") in sources
        assert evil not in sources
    values = [c.value for c in cells]
    for evil in EVIL:  # XML parsing turns a bare CR into LF
        assert "'" + evil.replace("\r", "\n") in values
    assert all(c.data_type != "f" for c in cells)
    assert neutralise("fine") == "fine" and neutralise(-2) == -2


def test_pdf_header_repeats_on_every_page_with_page_numbers(runtime, ops, tenant, tmp_path):
    insert(runtime, "erp_products", [{"tenant_id": tenant, "sku": f"P{i:04d}", "name": f"Product {i}",
                                      "stock_quantity": Decimal(i), "unit_cost": Decimal("1.25"), "is_active": True,
                                      "updated_at": NOW} for i in range(150)])
    rep = ops.reports.create("acme", "Stock", "stock_levels")
    reader = PdfReader(ops.reports.run(rep.id, "pdf", str(tmp_path / "s.pdf")))
    n = len(reader.pages)
    assert n >= 3
    for i, page in enumerate(reader.pages, 1):
        text = page.extract_text()
        assert "SKU" in text and "Reorder point" in text and f"page {i} of {n}" in text
    assert "Total" in reader.pages[-1].extract_text()


def test_bad_definitions_are_refused(runtime, ops, tenant):
    with pytest.raises(Invalid, match="unknown report kind 'nope'"):
        ops.reports.create("acme", "x", "nope")
    with pytest.raises(Invalid, match="unknown column"):
        ops.reports.create("acme", "x", "leads", columns=["source", "colour"])
    with pytest.raises(Invalid, match="filter date_from: not a date"):
        ops.reports.create("acme", "x", "leads", {"date_from": "yesterday"})
    rep = ops.reports.create("acme", "x", "leads", columns=["leads", "source"])
    with runtime.read_session() as s:
        assert [c.key for c in kinds.build(s, "leads", tenant, {}, rep.columns).columns] == ["leads", "source"]


# ---------------------------------------------------------------- schedules


def _schedule(rt, report_id: int, cron: str, tz: str = "UTC", fmt: str = "csv", recipients=None,
              next_run_at=None) -> int:
    with rt.session() as s:
        tenant_id = s.scalar(sa.select(Tenant.id))
        row = ReportSchedule(tenant_id=tenant_id, report_id=report_id, cron_expression=cron, timezone=tz,
                             format=fmt, recipients=recipients or [], is_active=True, next_run_at=next_run_at)
        s.add(row)
        s.flush()
        return row.id


def test_next_run_is_dst_correct():
    z = "Europe/Berlin"
    at = dt.datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    first = schedules.next_run("30 2 * * *", z, at)       # 02:30 does not exist on 2027-03-28
    assert first == dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    assert schedules.next_run("30 2 * * *", z, first) == dt.datetime(2027, 3, 29, 0, 30, tzinfo=UTC)
    assert schedules.next_run("0 7 * * *", z, dt.datetime(2027, 3, 27, 12, tzinfo=UTC)) == \
        dt.datetime(2027, 3, 28, 5, 0, tzinfo=UTC)  # 07:00 CEST
    assert schedules.next_run("0 7 * * *", z, dt.datetime(2027, 10, 30, 12, tzinfo=UTC)) == \
        dt.datetime(2027, 10, 31, 6, 0, tzinfo=UTC)  # 07:00 CET


def test_claiming_across_a_dst_change_and_after_downtime(runtime, ops, tenant):
    rep = ops.reports.create("acme", "Leads", "leads")
    with runtime.session() as s:
        sid = schedules.add_schedule(s, rep.id, "0 7 * * *", "Europe/Berlin", "csv",
                                     now=dt.datetime(2027, 3, 27, 12, tzinfo=UTC)).id
    sched = ops.reports.schedule(sid)
    assert sched.next_run_at == dt.datetime(2027, 3, 28, 5, 0, tzinfo=UTC)
    # the runner was down for three days: one run, then the next 07:00 Berlin after now
    now = dt.datetime(2027, 3, 31, 9, 0, tzinfo=UTC)
    assert [c[0] for c in schedules.claim_due(runtime, now)] == [sid]
    assert schedules.claim_due(runtime, now) == []
    sched = ops.reports.schedule(sid)
    assert sched.next_run_at == dt.datetime(2027, 4, 1, 5, 0, tzinfo=UTC)
    assert sched.last_run_at == now and sched.last_status == "running"


def test_a_bad_cron_or_zone_marks_only_that_schedule(runtime, ops, tenant):
    rep = ops.reports.create("acme", "Leads", "leads")
    past = dt.datetime(2026, 1, 1, tzinfo=UTC)
    bad_cron = _schedule(runtime, rep.id, "61 * * * *", next_run_at=past)
    bad_zone = _schedule(runtime, rep.id, "* * * * *", "Mars/Olympus", next_run_at=past)
    good = _schedule(runtime, rep.id, "*/5 * * * *", next_run_at=past)
    now = dt.datetime(2026, 6, 1, 10, 2, tzinfo=UTC)
    assert [c[0] for c in schedules.claim_due(runtime, now)] == [good]
    a, b, c = (ops.reports.schedule(i) for i in (bad_cron, bad_zone, good))
    assert (a.last_status, a.last_error, a.next_run_at) == ("error", "invalid cron expression '61 * * * *'", None)
    assert (b.last_status, b.last_error) == ("error", "unknown time zone 'Mars/Olympus'")
    assert c.next_run_at == dt.datetime(2026, 6, 1, 10, 5, tzinfo=UTC)
    with pytest.raises(Invalid, match="invalid cron expression"):
        ops.reports.add_schedule(rep.id, "every day", "UTC")
    assert "1 errored" not in ops.reports.summary() and "2 errored" in ops.reports.summary()


def test_scheduled_export_is_emailed_with_its_attachment(tmp_path, smtp_server):
    settings = make_settings(tmp_path, mail={"smtp_host": smtp_server.host, "smtp_port": smtp_server.port,
                                             "from_address": "reports@acme.test"})
    rt = Runtime(settings)
    set_current(rt)
    try:
        seed(rt)
        ops = Ops(rt, Actor("tester", None, "cli"))
        rep = ops.reports.create("acme", "Pipeline", "deals_pipeline")
        sid = _schedule(rt, rep.id, "0 * * * *", fmt="xlsx", recipients=["ann@acme.test", "bob@acme.test"],
                        next_run_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
        ops.trigger("erp:generate-scheduled-reports")
        assert drain(rt) >= 2  # the periodic task, then ExportReportJob
        (msg,) = smtp_server.messages
        assert sorted(msg.rcpt_tos) == ["ann@acme.test", "bob@acme.test"]
        parsed = email.message_from_bytes(msg.raw)
        assert parsed["Subject"] == "Report: Pipeline"
        (att,) = [p for p in parsed.walk() if p.get_filename()]
        assert att.get_filename().endswith(".xlsx")
        out = tmp_path / "got.xlsx"
        out.write_bytes(att.get_payload(decode=True))
        assert _cells(openpyxl.load_workbook(out).active)[0] == ["Stage", "Owner", "Deals", "Amount"]
        sched = ops.reports.schedule(sid)
        assert (sched.last_status, sched.last_error) == ("ok", None) and sched.next_run_at > sched.last_run_at
        assert list(rt.settings.path(rt.settings.reports.output_dir).glob("report-*.xlsx"))
    finally:
        set_current(None)
        rt.close()


def test_a_refused_email_is_recorded_on_the_schedule(tmp_path, smtp_server):
    smtp_server.reply_for["nobody@acme.test"] = "550 5.1.1 no such user"
    settings = make_settings(tmp_path, mail={"smtp_host": smtp_server.host, "smtp_port": smtp_server.port})
    rt = Runtime(settings)
    set_current(rt)
    try:
        seed(rt)
        ops = Ops(rt, Actor("tester", None, "cli"))
        rep = ops.reports.create("acme", "Leads", "leads")
        sid = ops.reports.add_schedule(rep.id, "0 7 * * *", "UTC", "pdf", ["nobody@acme.test"]).id
        ops.reports.run_schedule_now(sid)
        drain(rt)
        sched = ops.reports.schedule(sid)
        assert sched.last_status == "error" and "MailError" in sched.last_error
    finally:
        set_current(None)
        rt.close()


def test_schedule_actions_are_audited_and_refused_read_only(runtime, ops, tenant):
    rep = ops.reports.create("acme", "Leads", "leads")
    sched = ops.reports.add_schedule(rep.id, "0 7 * * 1-5", "Europe/Berlin", "csv", ["ann@acme.test"])
    assert ops.reports.pause_schedule(sched.id).is_active is False
    with pytest.raises(Conflict):
        ops.reports.pause_schedule(sched.id)
    assert ops.reports.resume_schedule(sched.id).next_run_at is not None
    job = ops.reports.run_schedule_now(sched.id)
    assert job and ops.reports.schedules().total == 1
    with pytest.raises(ReadOnly):
        Ops(runtime, Actor("viewer", None, "console"), read_only=True).reports.pause_schedule(sched.id)
    ops.reports.remove_schedule(sched.id)
    assert ops.reports.schedules().total == 0
    with runtime.read_session() as s:
        actions = [a.action for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]
    assert actions == ["report.create", "report.schedule.add", "report.schedule.pause", "report.schedule.resume",
                       "report.schedule.run", "report.schedule.remove"]


def cli(rt: Runtime, *argv: str) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    parser = argparse.ArgumentParser(prog="erpq")
    register(parser.add_subparsers(dest="group", required=True), common)
    args = parser.parse_args(argv)
    return args.handler(args, rt)


def test_cli(runtime, tenant, tmp_path, capsys):
    assert cli(runtime, "report", "create", "Open deals", "--kind", "deals_pipeline", "--tenant", "acme",
               "--filters", '{"status": "open"}') == 0
    assert "Created report 1 (deals_pipeline) for acme" in capsys.readouterr().out
    assert cli(runtime, "report", "run", "1", "--format", "csv", "--out", str(tmp_path / "x.csv")) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.csv")
    assert cli(runtime, "report", "run", "1", "--format", "xlsx") == 0
    assert "/reports/report-1-open-deals-" in capsys.readouterr().out
    assert cli(runtime, "report", "schedule", "add", "1", "--cron", "0 7 * * *", "--timezone", "Europe/Berlin",
               "--format", "pdf", "--to", "ann@acme.test") == 0
    assert "Added schedule 1" in capsys.readouterr().out
    assert cli(runtime, "report", "schedule", "list") == 0
    assert "Europe/Berlin" in capsys.readouterr().out
    assert cli(runtime, "report", "schedule", "pause", "1") == 0
    assert "Schedule 1: paused" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the argument type refuses it before anything is read
        cli(runtime, "report", "schedule", "add", "1", "--cron", "0 7 * * *", "--timezone", "Nowhere/Land")
    assert "unknown time zone 'Nowhere/Land'" in capsys.readouterr().err
    with pytest.raises(Invalid, match="unknown time zone"):  # and Ops for every other caller
        Ops(runtime).reports.add_schedule(1, "0 7 * * *", "Nowhere/Land")


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_reports_and_schedules_on_server_databases(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url" if backend == "postgres" else "mariadb_url")
    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": url}))
    set_current(rt)
    try:
        tid = seed(rt)
        ops = Ops(rt, Actor("tester", None, "cli"))
        for kind in kinds.KINDS:
            with rt.read_session() as s:
                data = kinds.build(s, kind, tid, {"today": "2026-03-01"} if kind == "invoices" else {})
                assert ([tuple(r) for r in data.rows], data.totals) == EXPECTED[kind], kind
        rep = ops.reports.create("acme", "Leads", "leads")
        sid = _schedule(rt, rep.id, "*/15 * * * *", next_run_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
        now = dt.datetime(2026, 6, 1, 10, 7, 30, tzinfo=UTC)
        assert [c[0] for c in schedules.claim_due(rt, now)] == [sid]
        assert schedules.claim_due(rt, now) == []
        assert ops.reports.schedule(sid).next_run_at == dt.datetime(2026, 6, 1, 10, 15, tzinfo=UTC)
        assert Path(ops.reports.run(rep.id, "xlsx", str(tmp_path / "l.xlsx"))).exists()
    finally:
        set_current(None)
        rt.close()


def test_console_panel_reads_and_actions(runtime, ops, tenant):
    from erpq.reports.capability import CAPABILITY

    rep = ops.reports.create("acme", "Leads", "leads")
    sid = ops.reports.add_schedule(rep.id, "0 7 * * *", "UTC", "csv").id
    (panel,) = CAPABILITY.panels
    section = ops.section("reports")
    page = getattr(section, panel.read)(0, 10, None)
    row = page.items[0].to_dict()
    assert all(field in row for field, _, _ in panel.columns) and row["next_run_at"]
    methods = {a.label: getattr(section, a.method) for a in panel.actions}
    assert methods["Pause"](sid).is_active is False
    assert methods["Resume"](sid).is_active is True
    assert methods["Run now"](sid)
    assert drain(runtime) == 1 and ops.reports.schedule(sid).last_status == "ok"
    assert section.summary() == "1 active, 0 paused, 0 errored"
