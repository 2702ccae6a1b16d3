"""``erpq invoice``: recurring templates, invoices, and generating as of a date.

``erpq invoice generate --date DATE`` runs erp:generate-recurring-invoices as of
DATE (the core's ``erpq schedule run`` takes no date).
"""

from __future__ import annotations

import argparse

from ..cli_support import (
    CliError,
    Group,
    bounded_int,
    bounded_text,
    column_text,
    date_arg,
    decimal_text,
    flag_parents,
    id_int,
    ops_for,
    out,
    positive_int,
)
from .models import InvoiceLine, RecurringInvoice

TEMPLATE_COLUMNS = ["id", "tenant", "name", "schedule", "next_date", "total", "currency", "occurrences",
                    "last_invoice", "state", "reason"]
INVOICE_COLUMNS = ["id", "tenant", "number", "template_id", "period_start", "issue_date", "due_date", "subtotal",
                   "tax", "total", "currency", "status"]


_date = date_arg
_AMOUNT = decimal_text(-1e12, 1e12, "a number")
_RATE = decimal_text(0, 100, "a tax rate in percent")


def _line(text: str) -> dict:
    parts = [p.strip() for p in text.split(";")]
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"a line is 'description;quantity;unit price[;tax rate %]': {text[:80]!r}")
    column_text(InvoiceLine, "description")(parts[0])
    _AMOUNT(parts[1]), _AMOUNT(parts[2])
    if len(parts) == 4:
        _RATE(parts[3])
    return {"description": parts[0], "quantity": parts[1], "unit_price": parts[2],
            "tax_rate": parts[3] if len(parts) == 4 else "0"}


def _inv(args, rt):
    return ops_for(args, rt).invoicing


def cmd_recurring_add(args, rt) -> int:
    if not args.lines:
        raise CliError("invoice recurring add: at least one --line is needed")
    t = _inv(args, rt).add(args.tenant, args.name, args.lines, args.frequency, interval=args.interval,
                           start_date=args.start, anchor_day=args.anchor_day, end_date=args.end,
                           max_occurrences=args.limit_occurrences, payment_terms_days=args.terms,
                           currency=args.currency, contact_id=args.contact)
    print(f"Added recurring invoice {t.id} ({t.schedule}, {t.total} {t.currency}); first period {t.next_date}")
    return 0


def cmd_recurring_list(args, rt) -> int:
    return out(args, _inv(args, rt).templates(args.tenant), TEMPLATE_COLUMNS)


def cmd_recurring_pause(args, rt) -> int:
    t = _inv(args, rt).pause(args.id, args.reason)
    print(f"Paused recurring invoice {t.id} ({t.reason})")
    return 0


def cmd_recurring_resume(args, rt) -> int:
    t = _inv(args, rt).resume(args.id)
    print(f"Resumed recurring invoice {t.id}; next period {t.next_date}")
    return 0


def cmd_list(args, rt) -> int:
    page = _inv(args, rt).invoices(args.tenant, args.since, offset=args.offset, limit=args.limit)
    return out(args, page.items, INVOICE_COLUMNS)


def cmd_generate(args, rt) -> int:
    r = _inv(args, rt).generate(args.date, args.tenant)
    if args.json:
        return out(args, [r], [])
    print(r.summary)
    return 0


def register(groups, common: argparse.ArgumentParser) -> None:
    g = Group(groups, common, "invoice", "recurring invoices and the invoices they issue")
    json_flag, _ = flag_parents()
    rec = g.cmd("recurring", None, "recurring invoice templates: add, list, pause, resume")
    sub = rec.add_subparsers(dest="recurring_cmd", metavar="ACTION", required=True)
    c = sub.add_parser("add", help="add a template", description="add a recurring invoice template", parents=[common])
    c.set_defaults(handler=cmd_recurring_add, needs_runtime=True)
    c.add_argument("--tenant", required=True, type=bounded_text(64), help="tenant slug or id")
    c.add_argument("--name", required=True, type=column_text(RecurringInvoice, "name"), help="template name")
    c.add_argument("--line", dest="lines", action="append", type=_line, metavar="DESC;QTY;PRICE[;TAX%]",
                   help="an invoice line (repeat for several)")
    c.add_argument("--frequency", required=True, choices=("daily", "weekly", "monthly", "quarterly", "yearly"),
                   help="how often")
    c.add_argument("--interval", type=bounded_int(1, 1000), default=1, help="every N periods (default 1)")
    c.add_argument("--anchor-day", type=bounded_int(1, 31), help="day of month 1-31 (clamped to month end) or ISO weekday 1-7")
    c.add_argument("--start", type=_date, help="start date (default today)")
    c.add_argument("--end", type=_date, help="last date a period may start")
    c.add_argument("--limit-occurrences", type=positive_int, help="issue at most this many invoices")
    c.add_argument("--terms", type=bounded_int(0, 3650), help="payment due in N days (default from config)")
    c.add_argument("--currency", default="EUR", type=bounded_text(3), help="ISO currency code (default EUR)")
    c.add_argument("--contact", type=id_int, help="customer contact id")
    c = sub.add_parser("list", help="templates with next period, last invoice, state", parents=[common, json_flag],
                       description="recurring invoice templates with their next period, last invoice and state")
    c.set_defaults(handler=cmd_recurring_list, needs_runtime=True)
    c.add_argument("--tenant", type=bounded_text(64), help="only this tenant (slug or id)")
    c = sub.add_parser("pause", help="stop a template issuing", parents=[common], description="pause a template")
    c.set_defaults(handler=cmd_recurring_pause, needs_runtime=True)
    c.add_argument("id", type=id_int, help="template id")
    c.add_argument("--reason", type=column_text(RecurringInvoice, "paused_reason"), help="why (shown in lists)")
    c = sub.add_parser("resume", help="let a paused template issue again", parents=[common],
                       description="resume a paused template (its failure count starts over)")
    c.set_defaults(handler=cmd_recurring_resume, needs_runtime=True)
    c.add_argument("id", type=id_int, help="template id")
    c = g.cmd("list", cmd_list, "invoices, newest first", json=True, paged=True)
    c.add_argument("--tenant", type=bounded_text(64), help="only this tenant (slug or id)")
    c.add_argument("--since", type=_date, help="issued on or after this date (YYYY-MM-DD)")
    c = g.cmd("generate", cmd_generate, "run erp:generate-recurring-invoices as of a date", json=True)
    c.add_argument("--date", type=_date, help="as of this date (default today in the schedule's timezone)")
    c.add_argument("--tenant", type=bounded_text(64), help="only this tenant (slug or id)")
