"""Recurring invoices: money, numbering, and ``erp:generate-recurring-invoices``.

Exactly one invoice per template and period:

- the templates of a batch are locked (``FOR UPDATE SKIP LOCKED``; SQLite
  serialises writers anyway), so two generators never work on one template;
- a template's invoices, their numbers and the template's new ``next_date`` are
  written in one transaction: a crash midway leaves either all or none;
- ``uq_invoices_template_period`` refuses a second invoice for a period even if
  everything above failed;
- numbers come from ``erp_invoice_sequences`` taken with a row lock in that same
  transaction: no duplicates, and a rolled-back batch gives its numbers back
  (no gaps).

A batch that fails in the database is retried template by template, so one bad
template fails alone; a template failing ``pause_after_failures`` runs in a row
is paused with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import events
from ..db import utcnow
from ..runtime import current
from . import periods
from .capability import CAPABILITY
from .models import Invoice, InvoiceLine, InvoiceSequence, RecurringInvoice

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("erpq.invoicing")

CENT = Decimal("0.01")


# ====================================================================== money


@dataclass(frozen=True)
class LineAmounts:
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    net: Decimal
    tax: Decimal
    total: Decimal


def _dec(value: Any, what: str) -> Decimal:
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what}: not a number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"{what}: not a finite number: {value!r}")
    return d


def parse_lines(lines: Any) -> list[LineAmounts]:
    """Template lines -> amounts, each rounded to the cent (half up): net, then tax on the net."""
    if not isinstance(lines, list) or not lines:
        raise ValueError("lines: at least one line is needed")
    out = []
    for i, line in enumerate(lines, 1):
        if not isinstance(line, dict):
            raise ValueError(f"line {i}: not an object")
        desc = str(line.get("description") or "").strip()
        if not desc:
            raise ValueError(f"line {i}: description is empty")
        qty = _dec(line.get("quantity", "1"), f"line {i} quantity")
        price = _dec(line.get("unit_price"), f"line {i} unit_price")
        rate = _dec(line.get("tax_rate", "0"), f"line {i} tax_rate")
        if qty <= 0:
            raise ValueError(f"line {i}: quantity must be positive")
        if not 0 <= rate <= 100:
            raise ValueError(f"line {i}: tax_rate must be a percentage 0-100")
        net = (qty * price).quantize(CENT, ROUND_HALF_UP)
        tax = (net * rate / 100).quantize(CENT, ROUND_HALF_UP)
        out.append(LineAmounts(desc[:255], qty, price, rate, net, tax, net + tax))
    return out


def totals(lines: list[LineAmounts]) -> tuple[Decimal, Decimal, Decimal]:
    """(subtotal, tax, total) of rounded lines, each rounded to the cent."""
    sub = sum((ln.net for ln in lines), Decimal(0)).quantize(CENT, ROUND_HALF_UP)
    tax = sum((ln.tax for ln in lines), Decimal(0)).quantize(CENT, ROUND_HALF_UP)
    return sub, tax, sub + tax


def normalise_lines(lines: list[LineAmounts]) -> list[dict]:
    """What a template stores: strings, so no float ever touches money."""
    return [{"description": ln.description, "quantity": str(ln.quantity), "unit_price": str(ln.unit_price),
             "tax_rate": str(ln.tax_rate)} for ln in lines]


# ====================================================================== numbering


class Numberer:
    """Invoice numbers for one transaction: sequence rows locked once, written back at the end."""

    def __init__(self, session: Session, fmt: str):
        self.s = session
        self.fmt = fmt
        self.per_year = "{year" in fmt
        self.values: dict[tuple[int, int], int] = {}
        self.start: dict[tuple[int, int], int] = {}

    def _key(self, tenant_id: int, issue: dt.date) -> tuple[int, int]:
        return tenant_id, issue.year if self.per_year else 0

    def _lock(self, key: tuple[int, int]) -> None:
        q = (sa.select(InvoiceSequence.last_value)
             .where(InvoiceSequence.tenant_id == key[0], InvoiceSequence.year == key[1]).with_for_update())
        value = self.s.scalar(q)
        if value is None:
            try:
                with self.s.begin_nested():
                    self.s.execute(sa.insert(InvoiceSequence).values(tenant_id=key[0], year=key[1], last_value=0))
            except sa.exc.IntegrityError:  # another generator created it first
                pass
            value = self.s.scalar(q)
        self.values[key] = self.start[key] = value

    def lock_all(self, wanted: list[tuple[int, dt.date, dt.date]]) -> None:
        """Lock the sequence rows of every (tenant, first date, last date) at once, in key order.

        Taken lazily, two generators could lock (or create) the same rows in opposite
        orders and deadlock; in one sorted pass they queue behind each other instead.
        """
        keys = set()
        for tenant_id, first, last in wanted:
            years = range(first.year, last.year + 1) if self.per_year else (0,)
            keys.update((tenant_id, year) for year in years)
        for key in sorted(keys):
            if key not in self.values:
                self._lock(key)

    def next(self, tenant_id: int, issue: dt.date) -> str:
        key = self._key(tenant_id, issue)
        if key not in self.values:
            self._lock(key)
        self.values[key] += 1
        return self.fmt.format(year=issue.year, seq=self.values[key])

    def snapshot(self) -> dict:
        return dict(self.values)

    def restore(self, snap: dict) -> None:
        for key in list(self.values):
            if key in snap:
                self.values[key] = snap[key]
            else:
                self.values[key] = self.start[key]

    def flush(self) -> None:
        for key, value in self.values.items():
            if value != self.start[key]:
                self.s.execute(sa.update(InvoiceSequence)
                               .where(InvoiceSequence.tenant_id == key[0], InvoiceSequence.year == key[1])
                               .values(last_value=value))
                self.start[key] = value


# ====================================================================== generation


@dataclass
class GenerateResult:
    as_of: dt.date
    invoices: int = 0
    templates: int = 0
    invoice_ids: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # template id -> error
    paused: dict[int, str] = field(default_factory=dict)  # template id -> reason
    ended: dict[int, str] = field(default_factory=dict)
    #: Template id -> due periods not issued (over the catch-up limit): reported, not issued.
    backlog: dict[int, list[dt.date]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.invoices} invoice(s) from {self.templates} template(s) as of {self.as_of}"]
        if self.backlog:
            parts.append(f"{sum(len(v) for v in self.backlog.values())} period(s) over the catch-up limit "
                         f"not issued (templates {', '.join(map(str, sorted(self.backlog)))})")
        if self.failed:
            parts.append(f"{len(self.failed)} template(s) failed")
        if self.paused:
            parts.append(f"{len(self.paused)} paused")
        if self.ended:
            parts.append(f"{len(self.ended)} ended")
        return "; ".join(parts)


def local_today(rt: Runtime) -> dt.date:
    return dt.datetime.now(ZoneInfo(rt.settings.schedule.timezone)).date()


@CAPABILITY.periodic("erp:generate-recurring-invoices", cron="0 6 * * *",
                     description="Issue one invoice per due period of every active recurring invoice template")
def generate_recurring_invoices_task() -> None:
    rt = current()
    result = generate(rt, local_today(rt))
    log.info("erp:generate-recurring-invoices: %s", result.summary())


def generate(rt: Runtime, as_of: dt.date, tenant_id: int | None = None) -> GenerateResult:
    """Issue every due, not yet invoiced period up to ``as_of`` (idempotent, safe to run twice at once)."""
    cfg = rt.settings.section("invoicing")
    result = GenerateResult(as_of)
    last_id = 0
    while True:
        with rt.session() as s:
            q = (sa.select(RecurringInvoice.id)
                 .where(RecurringInvoice.is_active.is_(True), RecurringInvoice.paused_at.is_(None),
                        RecurringInvoice.next_date <= as_of, RecurringInvoice.id > last_id)
                 .order_by(RecurringInvoice.id).limit(cfg.batch_size))
            if tenant_id is not None:
                q = q.where(RecurringInvoice.tenant_id == tenant_id)
            ids = list(s.scalars(q))
        if not ids:
            break
        _run_batch(rt, cfg, ids, as_of, result)
        last_id = ids[-1]
    return result


#: The template columns the generator reads (a Core row: no ORM object per template).
_T = RecurringInvoice.__table__
_TEMPLATE_COLUMNS = (_T.c.id, _T.c.tenant_id, _T.c.contact_id, _T.c.frequency, _T.c.interval, _T.c.start_date,
                     _T.c.end_date, _T.c.max_occurrences, _T.c.occurrences, _T.c.next_date, _T.c.lines,
                     _T.c.currency, _T.c.is_active, _T.c.anchor_day, _T.c.payment_terms_days, _T.c.paused_at,
                     _T.c.paused_reason, _T.c.ended_reason)
#: A template moved on (one executemany per batch; every row sets the same columns).
_ADVANCE = (sa.update(_T).where(_T.c.id == sa.bindparam("b_id"))
            .values(occurrences=sa.bindparam("b_occurrences"), next_date=sa.bindparam("b_next_date"),
                    consecutive_failures=0, last_error=None, paused_at=sa.bindparam("b_paused_at"),
                    paused_reason=sa.bindparam("b_paused_reason"), is_active=sa.bindparam("b_is_active"),
                    ended_reason=sa.bindparam("b_ended_reason")))


def _run_batch(rt: Runtime, cfg, ids: list[int], as_of: dt.date, result: GenerateResult) -> None:
    local = GenerateResult(as_of)
    try:
        with rt.session() as s:
            templates = s.execute(sa.select(*_TEMPLATE_COLUMNS).where(_T.c.id.in_(ids))
                                  .order_by(_T.c.id).with_for_update(skip_locked=True)).all()
            _issue(s, cfg, templates, as_of, local)
    except sa.exc.DBAPIError as exc:
        if len(ids) > 1:  # find the culprit: one template per transaction
            for one in ids:
                _run_batch(rt, cfg, [one], as_of, result)
            return
        with rt.session() as s:
            t = s.get(RecurringInvoice, ids[0], with_for_update=True)
            if t is not None:
                _failed(cfg, t, f"database: {str(exc.orig or exc).splitlines()[0][:400]}", result)
        return
    _merge(result, local)


def _merge(into: GenerateResult, part: GenerateResult) -> None:
    into.invoices += part.invoices
    into.templates += part.templates
    into.invoice_ids += part.invoice_ids
    for name in ("failed", "paused", "ended", "backlog"):
        getattr(into, name).update(getattr(part, name))


def _due(t: Any, as_of: dt.date) -> bool:
    return bool(t.is_active) and t.paused_at is None and t.next_date is not None and t.next_date <= as_of


def _issue(s: Session, cfg, templates: list[Any], as_of: dt.date, result: GenerateResult) -> None:
    """Issue the due periods of the locked ``templates`` (Core rows) in ``s``'s transaction.

    Invoices and their lines are written with one executemany INSERT each, the
    templates moved on with one executemany UPDATE, the ``invoice.created``
    events added to the outbox with one more (``events.emit_many``).
    """
    numberer = Numberer(s, cfg.number_format)
    # Periods already invoiced (only possible if something bypassed next_date): never issue them again.
    existing: dict[int, set[dt.date]] = defaultdict(set)
    if templates:
        for tid, start in s.execute(sa.select(Invoice.recurring_invoice_id, Invoice.period_start).where(
                Invoice.recurring_invoice_id.in_([t.id for t in templates]),
                Invoice.period_start >= min(t.next_date or as_of for t in templates))):
            existing[tid].add(start)
    numberer.lock_all([(t.tenant_id, t.next_date, as_of) for t in templates if _due(t, as_of)])
    made: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    moves: list[dict[str, Any]] = []
    for t in templates:
        if not _due(t, as_of):
            continue  # another generator got here first
        snap = numberer.snapshot()
        try:
            issued, move = _issue_template(t, cfg, as_of, numberer, existing[t.id], result)
        except Exception as exc:
            numberer.restore(snap)
            _failed(cfg, s.get(RecurringInvoice, t.id), f"{type(exc).__name__}: {exc}", result)
            continue
        made += issued
        moves.append(move)
        result.templates += 1
    numberer.flush()
    if moves:
        s.execute(_ADVANCE, moves)
    if not made:
        return
    invoices = [inv for inv, _ in made]
    ids = _insert_invoices(s, invoices)
    s.execute(sa.insert(InvoiceLine.__table__),
              [{**line, "invoice_id": iid} for iid, (_, lines) in zip(ids, made, strict=True) for line in lines])
    by_tenant: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for iid, inv in zip(ids, invoices, strict=True):
        by_tenant[inv["tenant_id"]].append(_payload(iid, inv))
    for tenant_id, payloads in by_tenant.items():  # one executemany into the outbox per tenant
        events.emit_many("invoice.created", payloads, tenant_id, session=s)
    result.invoice_ids += ids
    result.invoices += len(ids)


def _insert_invoices(s: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` into erp_invoices; their ids, in the order of ``rows``."""
    table = Invoice.__table__
    if s.get_bind().dialect.insert_executemany_returning_sort_by_parameter_order:
        return list(s.execute(sa.insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars())
    return [s.execute(sa.insert(table), row).inserted_primary_key[0] for row in rows]


def _failed(cfg, t: RecurringInvoice, error: str, result: GenerateResult) -> None:
    t.consecutive_failures = (t.consecutive_failures or 0) + 1
    t.last_error = error[:2000]
    result.failed[t.id] = error
    if t.consecutive_failures >= cfg.pause_after_failures:
        t.paused_at = utcnow()
        t.paused_reason = f"paused after {t.consecutive_failures} consecutive failures: {error}"[:512]
        result.paused[t.id] = t.paused_reason
    log.warning("recurring invoice %s failed (%s in a row): %s", t.id, t.consecutive_failures, error)


def _ended(t: Any, n: int, date: dt.date) -> str | None:
    if t.max_occurrences is not None and n >= t.max_occurrences:
        return f"occurrence limit reached ({t.max_occurrences})"
    if t.end_date is not None and date > t.end_date:
        return f"end date reached ({t.end_date})"
    return None


def _issue_template(t: Any, cfg, as_of: dt.date, numberer: Numberer, existing: set[dt.date],
                    result: GenerateResult) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]],
                                                     dict[str, Any]]:
    """``t``'s due periods (at most the catch-up limit) as (invoice values, line values) pairs, and the
    template's new state (``_ADVANCE`` parameters). Writes nothing."""
    lines = parse_lines(t.lines)
    subtotal, tax_total, total = totals(lines)
    n, date = t.occurrences, t.next_date
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    due_left: list[dt.date] = []
    now = utcnow()
    while date <= as_of and _ended(t, n + len(due_left), date) is None:
        if len(out) >= cfg.catch_up_limit:
            due_left.append(date)
        else:
            following = periods.occurrence(t.frequency, t.interval, t.start_date, t.anchor_day, n + 1)
            if date not in existing:
                inv = {"tenant_id": t.tenant_id, "number": numberer.next(t.tenant_id, date),
                       "contact_id": t.contact_id, "recurring_invoice_id": t.id, "period_start": date,
                       "period_end": following - dt.timedelta(days=1), "issue_date": date,
                       "due_date": date + dt.timedelta(days=t.payment_terms_days or 0),
                       "subtotal": subtotal, "tax_total": tax_total, "total": total, "currency": t.currency,
                       "status": "issued", "created_at": now}
                out.append((inv, [{"tenant_id": t.tenant_id, "position": i, "description": ln.description,
                                   "quantity": ln.quantity, "unit_price": ln.unit_price, "tax_rate": ln.tax_rate,
                                   "net": ln.net, "tax": ln.tax, "total": ln.total}
                                  for i, ln in enumerate(lines, 1)]))
            n += 1
            date = following
            continue
        n_left = n + len(due_left)
        date = periods.occurrence(t.frequency, t.interval, t.start_date, t.anchor_day, n_left)
    move = {"b_id": t.id, "b_occurrences": n, "b_next_date": date, "b_paused_at": t.paused_at,
            "b_paused_reason": t.paused_reason, "b_is_active": t.is_active, "b_ended_reason": t.ended_reason}
    if due_left:
        result.backlog[t.id] = due_left
        reason = (f"catch-up limit: {len(due_left)} more period(s) due from {due_left[0]} to "
                  f"{due_left[-1]} not issued (limit {cfg.catch_up_limit} per run); resume to issue them")[:512]
        move.update(b_paused_at=now, b_paused_reason=reason, b_next_date=due_left[0])
        result.paused[t.id] = reason
        log.warning("recurring invoice %s: %s", t.id, reason)
        date = due_left[0]
    reason = _ended(t, n, date)
    if reason is not None and not due_left:
        move.update(b_is_active=False, b_next_date=None, b_ended_reason=reason)
        result.ended[t.id] = reason
    return out, move


def invoice_payload(inv: Invoice) -> dict[str, Any]:
    return _payload(inv.id, {c: getattr(inv, c) for c in ("number", "recurring_invoice_id", "contact_id",
                                                           "period_start", "issue_date", "due_date", "subtotal",
                                                           "tax_total", "total", "currency")})


def _payload(invoice_id: int, inv: dict[str, Any]) -> dict[str, Any]:
    """The ``invoice.created`` payload of an invoice's column values."""
    return {"invoice_id": invoice_id, "number": inv["number"], "recurring_invoice_id": inv["recurring_invoice_id"],
            "contact_id": inv["contact_id"], "period_start": inv["period_start"].isoformat(),
            "issue_date": inv["issue_date"].isoformat(),
            "due_date": inv["due_date"].isoformat() if inv["due_date"] else None,
            "subtotal": str(inv["subtotal"]), "tax": str(inv["tax_total"]), "total": str(inv["total"]),
            "currency": inv["currency"]}
