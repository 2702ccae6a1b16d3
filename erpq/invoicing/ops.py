"""Ops section ``invoicing``: recurring templates, invoices, pause/resume, generate as of a date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import Tenant
from ..ops import Conflict, Invalid, NotFound, OpsSection, Page, audited
from ..ops.base import _Record, text_search
from . import periods, service
from .models import Invoice, RecurringInvoice

FAILURE_PREFIX = "paused after"


@dataclass
class TemplateInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    name: str
    schedule: str  # "every 2 weeks on day 3"
    frequency: str
    interval: int
    anchor_day: int | None
    start_date: dt.date
    end_date: dt.date | None
    max_occurrences: int | None
    occurrences: int
    next_date: dt.date | None
    total: str  # per invoice, with tax
    currency: str
    payment_terms_days: int
    state: str  # active | paused | failing | ended
    reason: str | None
    consecutive_failures: int
    last_error: str | None
    last_invoice: str | None
    last_invoice_date: dt.date | None


@dataclass
class InvoiceInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    number: str
    template_id: int | None
    period_start: dt.date | None
    period_end: dt.date | None
    issue_date: dt.date
    due_date: dt.date | None
    subtotal: str
    tax: str
    total: str
    currency: str
    status: str
    created_at: dt.datetime


@dataclass
class GenerateInfo(_Record):
    as_of: dt.date
    invoices: int
    templates: int
    failed: dict
    paused: dict
    ended: dict
    backlog: dict  # template id -> [dates not issued]
    summary: str


def schedule_text(t: RecurringInvoice) -> str:
    unit = {"daily": "day", "weekly": "week", "monthly": "month", "quarterly": "quarter", "yearly": "year"}[t.frequency]
    text = f"every {unit}" if t.interval == 1 else f"every {t.interval} {unit}s"
    if t.anchor_day:
        text += f" on {'weekday' if t.frequency == 'weekly' else 'day'} {t.anchor_day}"
    return text


def _state(t: RecurringInvoice) -> tuple[str, str | None]:
    if not t.is_active:
        return "ended", t.ended_reason
    if t.paused_at is not None:
        reason = t.paused_reason or ""
        return ("failing" if reason.startswith(FAILURE_PREFIX) else "paused"), reason
    if t.consecutive_failures:
        return "active", f"{t.consecutive_failures} failure(s): {t.last_error}"
    return "active", None


def _money(value: Any) -> str:
    return f"{Decimal(value):.2f}" if value is not None else "0.00"


class InvoicingOps(OpsSection):
    """``ops.invoicing``: recurring invoice templates and the invoices they issued."""

    # ------------------------------------------------------------ reads
    def _template_query(self, tenant: str | int | None = None, search: str | None = None):
        last = (sa.select(Invoice.recurring_invoice_id.label("tid"), sa.func.max(Invoice.id).label("iid"))
                .where(Invoice.recurring_invoice_id.is_not(None)).group_by(Invoice.recurring_invoice_id).subquery())
        q = (sa.select(RecurringInvoice, Tenant.slug, Invoice.number, Invoice.issue_date)
             .join(Tenant, Tenant.id == RecurringInvoice.tenant_id)
             .outerjoin(last, last.c.tid == RecurringInvoice.id)
             .outerjoin(Invoice, Invoice.id == last.c.iid))
        if tenant is not None:
            q = q.where(RecurringInvoice.tenant_id == self.ops.tenant_id(tenant))
        if search:
            q = q.where(text_search((RecurringInvoice.name, Tenant.slug, RecurringInvoice.paused_reason), search))
        return q

    def templates(self, tenant: str | int | None = None) -> list[TemplateInfo]:
        """Every template (of one tenant), with its next period, last invoice and state."""
        with self.rt.read_session() as s:
            return [_template_info(*row) for row in s.execute(self._template_query(tenant)
                                                              .order_by(RecurringInvoice.id))]

    def templates_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Templates for the console: failing (paused after failures) first, then paused, active, ended."""
        q = self._template_query(search=search)
        order = sa.case((sa.and_(RecurringInvoice.paused_at.is_not(None),
                                 RecurringInvoice.paused_reason.like(f"{FAILURE_PREFIX}%")), 0),
                        (RecurringInvoice.paused_at.is_not(None), 1),
                        (RecurringInvoice.is_active.is_(True), 2), else_=3)
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            rows = s.execute(q.order_by(order, RecurringInvoice.id).offset(offset).limit(limit)).all()
            return Page([_template_info(*r) for r in rows], total or 0, offset, limit)

    def template(self, template_id: int) -> TemplateInfo:
        with self._read() as s:
            row = s.execute(self._template_query().where(RecurringInvoice.id == template_id)).first()
            if row is None:
                raise NotFound(f"no recurring invoice {template_id}")
            return _template_info(*row)

    def summary(self) -> dict[str, Any]:
        """Counts for the panel's summary line."""
        with self.rt.read_session() as s:
            rows = s.execute(sa.select(RecurringInvoice.is_active, RecurringInvoice.paused_at.is_not(None),
                                       RecurringInvoice.paused_reason.like(f"{FAILURE_PREFIX}%"), sa.func.count())
                             .group_by(RecurringInvoice.is_active, RecurringInvoice.paused_at.is_not(None),
                                       RecurringInvoice.paused_reason.like(f"{FAILURE_PREFIX}%"))).all()
            today = service.local_today(self.rt)
            issued = s.scalar(sa.select(sa.func.count()).select_from(Invoice).where(Invoice.issue_date == today))
        counts = {"active": 0, "paused": 0, "failing": 0, "ended": 0}
        for active, paused, failing, n in rows:
            key = "ended" if not active else ("failing" if paused and failing else "paused" if paused else "active")
            counts[key] += n
        counts["invoices_today"] = issued or 0
        counts["summary"] = (f"{counts['active']} active, {counts['paused']} paused, {counts['failing']} paused "
                             f"after failures, {counts['ended']} ended; {counts['invoices_today']} invoice(s) today")
        return counts

    def invoices(self, tenant: str | int | None = None, since: dt.date | None = None, offset: int = 0,
                 limit: int = 50, search: str | None = None) -> Page:
        """Invoices, newest first; ``since``: issued on or after that date."""
        q = sa.select(Invoice, Tenant.slug).join(Tenant, Tenant.id == Invoice.tenant_id)
        if tenant is not None:
            q = q.where(Invoice.tenant_id == self.ops.tenant_id(tenant))
        if since is not None:
            q = q.where(Invoice.issue_date >= since)
        if search:
            q = q.where(text_search((Invoice.number, Tenant.slug), search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            rows = s.execute(q.order_by(Invoice.issue_date.desc(), Invoice.id.desc()).offset(offset).limit(limit))
            return Page([_invoice_info(i, slug) for i, slug in rows], total or 0, offset, limit)

    def invoices_today(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Invoices issued today (the configured timezone's date)."""
        return self.invoices(since=service.local_today(self.rt), offset=offset, limit=limit, search=search)

    # ------------------------------------------------------------ actions
    @audited
    def add(self, tenant: str | int, name: str, lines: list[dict], frequency: str, *, interval: int = 1,
            start_date: dt.date | None = None, anchor_day: int | None = None, end_date: dt.date | None = None,
            max_occurrences: int | None = None, payment_terms_days: int | None = None, currency: str = "EUR",
            contact_id: int | None = None) -> TemplateInfo:
        """Create a recurring invoice template (validated; nothing written when invalid)."""
        tenant_id = self.ops.tenant_id(tenant)
        why = periods.validate(frequency, interval, anchor_day)
        if why:
            raise Invalid(why)
        if not name or not name.strip():
            raise Invalid("name is empty")
        try:
            parsed = service.parse_lines(lines)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if len(currency) != 3 or not currency.isalpha():
            raise Invalid(f"currency must be a 3-letter code (got {currency!r})")
        start = start_date or service.local_today(self.rt)
        if end_date is not None and end_date < start:
            raise Invalid(f"end date {end_date} is before the start date {start}")
        if max_occurrences is not None and max_occurrences < 1:
            raise Invalid("occurrence limit must be at least 1")
        terms = self.settings.default_payment_terms_days if payment_terms_days is None else payment_terms_days
        if terms < 0:
            raise Invalid("payment terms must be >= 0 days")
        self._act("invoicing.recurring.add", f"tenant:{tenant_id}",
                  f"erpq invoice recurring add --tenant {tenant} --frequency {frequency} ...")
        with self._tx() as s:
            t = RecurringInvoice(tenant_id=tenant_id, contact_id=contact_id, name=name.strip()[:255],
                                 frequency=frequency, interval=interval, start_date=start, end_date=end_date,
                                 max_occurrences=max_occurrences, occurrences=0, anchor_day=anchor_day,
                                 next_date=periods.occurrence(frequency, interval, start, anchor_day, 0),
                                 lines=service.normalise_lines(parsed), currency=currency.upper(),
                                 payment_terms_days=terms, is_active=True, consecutive_failures=0)
            s.add(t)
            s.flush()
            template_id = t.id
        return self.template(template_id)

    @audited
    def pause(self, template_id: int, reason: str | None = None) -> TemplateInfo:
        self._act("invoicing.recurring.pause", f"recurring:{template_id}", f"erpq invoice recurring pause {template_id}")
        with self._tx() as s:
            t = self._get(s, template_id)
            if not t.is_active:
                raise Conflict(f"recurring invoice {template_id} has ended ({t.ended_reason})")
            if t.paused_at is not None:
                raise Conflict(f"recurring invoice {template_id} is already paused ({t.paused_reason})")
            t.paused_at, t.paused_reason = utcnow(), (reason or "paused by an operator")[:512]
        return self.template(template_id)

    @audited
    def resume(self, template_id: int) -> TemplateInfo:
        """Let a paused template issue again (its failure count starts over)."""
        self._act("invoicing.recurring.resume", f"recurring:{template_id}",
                  f"erpq invoice recurring resume {template_id}")
        with self._tx() as s:
            t = self._get(s, template_id)
            if not t.is_active:
                raise Conflict(f"recurring invoice {template_id} has ended ({t.ended_reason})")
            if t.paused_at is None:
                raise Conflict(f"recurring invoice {template_id} is not paused")
            t.paused_at = t.paused_reason = t.last_error = None
            t.consecutive_failures = 0
        return self.template(template_id)

    @audited
    def generate(self, as_of: dt.date | None = None, tenant: str | int | None = None) -> GenerateInfo:
        """What erp:generate-recurring-invoices does, as of a date (default today)."""
        date = as_of or service.local_today(self.rt)
        tenant_id = self.ops.tenant_id(tenant) if tenant is not None else None
        self._act("invoicing.generate", f"date:{date}",
                  f"erpq invoice generate --date {date}" + (f" --tenant {tenant}" if tenant is not None else ""))
        # The generator commits a batch of templates at a time (and records each
        # failure on its template), so it runs once the audit row committed.
        done: list = []
        self._after_commit(lambda: done.append(service.generate(self.rt, date, tenant_id=tenant_id)),
                           keep_audit=True)

        def info() -> GenerateInfo:
            r = done[0]
            return GenerateInfo(r.as_of, r.invoices, r.templates, r.failed, r.paused, r.ended,
                                {k: [d.isoformat() for d in v] for k, v in r.backlog.items()}, r.summary())

        return self._then(info)

    @staticmethod
    def _get(s, template_id: int) -> RecurringInvoice:
        t = s.get(RecurringInvoice, template_id, with_for_update=True)
        if t is None:
            raise NotFound(f"no recurring invoice {template_id}")
        return t


def _template_info(t: RecurringInvoice, slug: str, last_number: str | None, last_date: dt.date | None) -> TemplateInfo:
    state, reason = _state(t)
    try:
        total = _money(service.totals(service.parse_lines(t.lines))[2])
    except ValueError:
        total = "invalid"
    return TemplateInfo(t.id, t.tenant_id, slug, t.name, schedule_text(t), t.frequency, t.interval, t.anchor_day,
                        t.start_date, t.end_date, t.max_occurrences, t.occurrences, t.next_date, total, t.currency,
                        t.payment_terms_days, state, reason, t.consecutive_failures or 0, t.last_error,
                        last_number, last_date)


def _invoice_info(i: Invoice, slug: str) -> InvoiceInfo:
    return InvoiceInfo(i.id, i.tenant_id, slug, i.number, i.recurring_invoice_id, i.period_start, i.period_end,
                       i.issue_date, i.due_date, _money(i.subtotal), _money(i.tax_total), _money(i.total),
                       i.currency, i.status, i.created_at)
