"""The built-in report kinds: each turns (session, tenant, filters) into typed rows.

Rows carry Python types (``date`` / ``datetime`` for dates, ``Decimal`` for
money, ``int`` for counts) so every export writes them as what they are.
The tables read here belong to other capabilities; they are named through
Core ``Table`` objects on a private ``MetaData`` with just the columns used,
so this module does not depend on where their classes live.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..db import UTCDateTime, utcnow

_meta = sa.MetaData()
_money = sa.Numeric(14, 2)
_qty = sa.Numeric(14, 3)


def _t(name: str, *cols: sa.Column) -> sa.Table:
    return sa.Table(name, _meta, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("tenant_id", sa.Integer), *cols)


USERS = _t("users", sa.Column("name", sa.String))
DEALS = _t("deals", sa.Column("title", sa.String), sa.Column("amount", _money), sa.Column("currency", sa.String),
           sa.Column("status", sa.String), sa.Column("stage", sa.String), sa.Column("assigned_to", sa.Integer),
           sa.Column("created_at", UTCDateTime()))
LEADS = _t("leads", sa.Column("source", sa.String), sa.Column("status", sa.String),
           sa.Column("created_at", UTCDateTime()))
INVOICES = _t("erp_invoices", sa.Column("number", sa.String), sa.Column("issue_date", sa.Date),
              sa.Column("due_date", sa.Date), sa.Column("total", _money), sa.Column("currency", sa.String),
              sa.Column("status", sa.String))
PRODUCTS = _t("erp_products", sa.Column("sku", sa.String), sa.Column("name", sa.String),
              sa.Column("stock_quantity", _qty), sa.Column("unit_cost", _money), sa.Column("is_active", sa.Boolean))
RULES = _t("erp_reorder_rules", sa.Column("product_id", sa.Integer), sa.Column("min_quantity", _qty),
           sa.Column("reorder_quantity", _qty), sa.Column("is_active", sa.Boolean))
ACTIVITIES = _t("activities", sa.Column("status", sa.String), sa.Column("due_at", UTCDateTime()),
                sa.Column("assigned_to", sa.Integer))
WEBHOOKS = _t("erp_webhooks", sa.Column("url", sa.String), sa.Column("is_active", sa.Boolean))
DELIVERIES = _t("erp_webhook_deliveries", sa.Column("webhook_id", sa.Integer), sa.Column("status", sa.String),
                sa.Column("created_at", UTCDateTime()))

ZERO = Decimal("0.00")

#: Column types an export knows how to write.
TYPES = ("text", "int", "money", "decimal", "percent", "date", "datetime")


class ReportError(ValueError):
    """A report cannot be built (unknown kind, bad filter): one line."""


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    type: str = "text"


@dataclass
class ReportData:
    title: str
    columns: list[Col]
    rows: Any  # iterable of tuples, one value per column
    #: A totals row (same width as columns; None where nothing is summed), or None.
    totals: tuple | None = None
    #: (label column key, value column key) of the one obvious bar-chart series, or None.
    chart: tuple[str, str] | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""
    generated_at: dt.datetime = field(default_factory=utcnow)

    def select(self, keys: list[str] | None) -> ReportData:
        """The same report with only (and in the order of) ``keys``."""
        if not keys:
            return self
        known = {c.key: i for i, c in enumerate(self.columns)}
        bad = [k for k in keys if k not in known]
        if bad:
            raise ReportError(f"unknown column(s) {', '.join(bad)} (known: {', '.join(known)})")
        idx = [known[k] for k in keys]
        rows = self.rows
        chart = self.chart if self.chart and all(k in keys for k in self.chart) else None
        return ReportData(self.title, [self.columns[i] for i in idx], (tuple(r[i] for i in idx) for r in rows),
                          tuple(self.totals[i] for i in idx) if self.totals else None, chart, self.filters,
                          self.tenant, self.generated_at)


def _date(v: Any, name: str) -> dt.date | None:
    if v in (None, ""):
        return None
    try:
        return v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))
    except ValueError:
        raise ReportError(f"filter {name}: not a date (YYYY-MM-DD): {v!r}") from None


def _range(q, col, filters: dict, aware: bool):
    lo, hi = _date(filters.get("date_from"), "date_from"), _date(filters.get("date_to"), "date_to")
    if lo:
        q = q.where(col >= (dt.datetime(lo.year, lo.month, lo.day, tzinfo=dt.UTC) if aware else lo))
    if hi:
        end = hi + dt.timedelta(days=1)
        q = q.where(col < (dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC) if aware else end))
    return q


def _users(s, tenant_id: int) -> dict[int | None, str]:
    out: dict[int | None, str] = {None: "(unassigned)"}
    out.update(s.execute(sa.select(USERS.c.id, USERS.c.name).where(USERS.c.tenant_id == tenant_id)).all())
    return out


def _sum(rows: list[tuple], columns: list[Col], label: str = "Total") -> tuple:
    out: list[Any] = []
    for i, c in enumerate(columns):
        if i == 0:
            out.append(label)
        elif c.type in ("int", "money", "decimal"):
            out.append(sum((r[i] or 0 for r in rows), ZERO if c.type == "money" else Decimal(0) if c.type != "int" else 0))
        else:
            out.append(None)
    return tuple(out)


# ---------------------------------------------------------------- the kinds


def deals_pipeline(s, tenant_id: int, f: dict) -> ReportData:
    users = _users(s, tenant_id)
    status = f.get("status", "open")
    q = sa.select(DEALS.c.stage, DEALS.c.assigned_to, sa.func.count(), sa.func.sum(DEALS.c.amount)) \
        .where(DEALS.c.tenant_id == tenant_id)
    if status and status != "all":
        q = q.where(DEALS.c.status == status)
    q = _range(q, DEALS.c.created_at, f, aware=True).group_by(DEALS.c.stage, DEALS.c.assigned_to)
    rows = sorted(((stage or "(no stage)", users.get(owner, f"user {owner}"), n, Decimal(amount or ZERO))
                   for stage, owner, n, amount in s.execute(q)), key=lambda r: (r[0], r[1]))
    cols = [Col("stage", "Stage"), Col("owner", "Owner"), Col("deals", "Deals", "int"),
            Col("amount", "Amount", "money")]
    return ReportData(f"Deals pipeline ({status or 'all'})", cols, rows, _sum(rows, cols), ("stage", "amount"))


def invoices(s, tenant_id: int, f: dict) -> ReportData:
    today = _date(f.get("today"), "today") or dt.date.today()
    q = sa.select(INVOICES.c.issue_date, INVOICES.c.due_date, INVOICES.c.total, INVOICES.c.status) \
        .where(INVOICES.c.tenant_id == tenant_id, INVOICES.c.status != "cancelled")
    q = _range(q, INVOICES.c.issue_date, f, aware=False)
    per: dict[dt.date, list] = defaultdict(lambda: [0, ZERO, 0, ZERO, 0, ZERO])
    for issued, due, total, status in s.execute(q):
        if status == "draft":
            continue
        p = per[issued.replace(day=1)]
        total = Decimal(total or ZERO)
        p[0] += 1
        p[1] += total
        if status == "paid":
            p[2] += 1
            p[3] += total
        elif due and due < today:
            p[4] += 1
            p[5] += total
    rows = [(period, *vals) for period, vals in sorted(per.items())]
    cols = [Col("period", "Month", "date"), Col("issued", "Issued", "int"), Col("issued_amount", "Issued amount", "money"),
            Col("paid", "Paid", "int"), Col("paid_amount", "Paid amount", "money"), Col("overdue", "Overdue", "int"),
            Col("overdue_amount", "Overdue amount", "money")]
    return ReportData("Invoices per month", cols, rows, _sum(rows, cols), ("period", "issued_amount"))


def stock_levels(s, tenant_id: int, f: dict) -> ReportData:
    q = sa.select(PRODUCTS.c.sku, PRODUCTS.c.name, PRODUCTS.c.stock_quantity, RULES.c.min_quantity,
                  RULES.c.reorder_quantity, PRODUCTS.c.unit_cost) \
        .outerjoin(RULES, sa.and_(RULES.c.product_id == PRODUCTS.c.id, RULES.c.is_active.is_(True))) \
        .where(PRODUCTS.c.tenant_id == tenant_id, PRODUCTS.c.is_active.is_(True)).order_by(PRODUCTS.c.sku)
    below_only = bool(f.get("below_only"))
    rows = []
    for sku, name, stock, minimum, reorder, cost in s.execute(q):
        stock = Decimal(stock or 0)
        below = minimum is not None and stock <= minimum
        if below_only and not below:
            continue
        value = (stock * Decimal(cost)).quantize(Decimal("0.01")) if cost is not None else None
        rows.append((sku, name, stock, minimum, reorder, cost, value, "yes" if below else "no"))
    cols = [Col("sku", "SKU"), Col("name", "Product"), Col("stock", "Stock", "decimal"),
            Col("reorder_point", "Reorder point", "decimal"), Col("reorder_quantity", "Reorder qty", "decimal"),
            Col("unit_cost", "Unit cost", "money"), Col("stock_value", "Stock value", "money"),
            Col("at_or_below", "At/below reorder point")]
    tot = _sum(rows, cols)
    tot = tuple(v if c.key == "stock_value" or i == 0 else None for i, (c, v) in enumerate(zip(cols, tot, strict=True)))
    title = "Products at or below reorder point" if below_only else "Stock levels"
    return ReportData(title, cols, rows, tot, None)


def leads_by_source(s, tenant_id: int, f: dict) -> ReportData:
    q = sa.select(LEADS.c.source, LEADS.c.status, sa.func.count()).where(LEADS.c.tenant_id == tenant_id)
    q = _range(q, LEADS.c.created_at, f, aware=True).group_by(LEADS.c.source, LEADS.c.status)
    rows = sorted(((src or "(none)", st or "(none)", n) for src, st, n in s.execute(q)))
    cols = [Col("source", "Source"), Col("status", "Status"), Col("leads", "Leads", "int")]
    return ReportData("Leads by source and status", cols, rows, _sum(rows, cols), ("source", "leads"))


def activities_due(s, tenant_id: int, f: dict) -> ReportData:
    now = utcnow()
    day_end = now.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    users = _users(s, tenant_id)
    q = sa.select(ACTIVITIES.c.assigned_to, ACTIVITIES.c.due_at).where(
        ACTIVITIES.c.tenant_id == tenant_id, ACTIVITIES.c.status == "open", ACTIVITIES.c.due_at.is_not(None),
        ACTIVITIES.c.due_at < day_end)
    per: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for owner, due in s.execute(q):
        per[owner][0 if due >= now else 1] += 1
    rows = sorted(((users.get(o, f"user {o}"), a, b) for o, (a, b) in per.items()))
    cols = [Col("user", "User"), Col("due_today", "Due today", "int"), Col("overdue", "Overdue", "int")]
    return ReportData("Activities due and overdue", cols, rows, _sum(rows, cols), ("user", "overdue"))


def webhook_deliveries(s, tenant_id: int, f: dict) -> ReportData:
    q = sa.select(WEBHOOKS.c.id, WEBHOOKS.c.url, DELIVERIES.c.status, sa.func.count()) \
        .join(DELIVERIES, DELIVERIES.c.webhook_id == WEBHOOKS.c.id).where(WEBHOOKS.c.tenant_id == tenant_id)
    q = _range(q, DELIVERIES.c.created_at, f, aware=True).group_by(WEBHOOKS.c.id, WEBHOOKS.c.url, DELIVERIES.c.status)
    per: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for hid, url, status, n in s.execute(q):
        per[(hid, url)][status] += n
    rows = []
    for (hid, url), c in sorted(per.items()):
        total = sum(c.values())
        ok, bad = c.get("delivered", 0), c.get("failed", 0) + c.get("dead", 0)
        finished = ok + bad
        rate = (Decimal(ok * 100) / finished).quantize(Decimal("0.1")) if finished else None
        rows.append((hid, url, total, ok, bad, total - finished, rate))
    cols = [Col("webhook", "Webhook", "int"), Col("url", "URL"), Col("deliveries", "Deliveries", "int"),
            Col("delivered", "Delivered", "int"), Col("failed", "Failed", "int"), Col("pending", "Pending", "int"),
            Col("success_rate", "Success %", "percent")]
    tot = list(_sum(rows, cols))
    tot[0] = "Total"
    return ReportData("Webhook deliveries per subscription", cols, rows, tuple(tot), ("url", "success_rate"))


KINDS: dict[str, tuple[str, Callable[[Any, int, dict], ReportData]]] = {
    "deals_pipeline": ("Deals pipeline by stage and owner", deals_pipeline),
    "invoices": ("Invoices issued, paid, overdue per month", invoices),
    "stock_levels": ("Stock levels and products at/below reorder point", stock_levels),
    "leads": ("Leads by source and status", leads_by_source),
    "activities": ("Activities due and overdue per user", activities_due),
    "webhook_deliveries": ("Webhook deliveries: success rate per subscription", webhook_deliveries),
}


def build(s, kind: str, tenant_id: int, filters: dict | None = None, columns: list[str] | None = None,
          tenant: str = "") -> ReportData:
    if kind not in KINDS:
        raise ReportError(f"unknown report kind {kind!r} (known: {', '.join(KINDS)})")
    filters = dict(filters or {})
    data = KINDS[kind][1](s, tenant_id, filters)
    data.filters, data.tenant = filters, tenant
    return data.select(columns)
