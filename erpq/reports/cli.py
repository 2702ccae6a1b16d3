"""``erpq report create|list|kinds|run`` and ``erpq report schedule add|list|pause|resume|remove|run``."""

from __future__ import annotations

import argparse

from ..cli_support import (
    JSON_OPTION_BYTES,
    CliError,
    Group,
    bounded_text,
    column_text,
    cron_arg,
    id_int,
    ops_for,
    out,
    parse_json_arg,
    timezone_arg,
)
from .export import FORMATS
from .models import Report

REPORT_COLUMNS = ["id", "tenant", "name", "kind", "filters", "columns"]
SCHEDULE_COLUMNS = ["id", "tenant", "report_id", "report", "cron_expression", "timezone", "format", "recipients",
                    "is_active", "next_run_at", "last_run_at", "last_status", "last_error"]


def _reports(args, rt):
    return ops_for(args, rt).reports


def _list(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def cmd_create(args, rt) -> int:
    filters = parse_json_arg(args.filters, "--filters", JSON_OPTION_BYTES) if args.filters else None
    if filters is not None and not isinstance(filters, dict):
        raise CliError("--filters: give a JSON object")
    info = _reports(args, rt).create(args.tenant, args.name, args.kind, filters, _list(args.columns))
    if args.json:
        return out(args, [info], REPORT_COLUMNS)
    print(f"Created report {info.id} ({info.kind}) for {info.tenant}")
    return 0


def cmd_list(args, rt) -> int:
    return out(args, _reports(args, rt).reports(args.offset, args.limit, tenant=args.tenant).items, REPORT_COLUMNS)


def cmd_kinds(args, rt) -> int:
    return out(args, _reports(args, rt).kinds(), ["kind", "description"])


def cmd_run(args, rt) -> int:
    reports = _reports(args, rt)
    if args.email:
        job = reports.email(args.id, args.format, _list(args.email) or [])
        print(f"Queued ExportReportJob {job}: report {args.id} as {args.format} to {args.email}")
        return 0
    path = reports.run(args.id, args.format, args.out)
    print(path)
    return 0


def cmd_schedule(args, rt) -> int:
    reports = _reports(args, rt)
    action = args.action
    if action == "list":
        return out(args, reports.schedules(args.offset, args.limit).items, SCHEDULE_COLUMNS)
    if args.id is None:
        raise CliError(f"erpq report schedule {action}: give the "
                       f"{'report' if action == 'add' else 'schedule'} id")
    if action == "add":
        if not args.cron:
            raise CliError("erpq report schedule add: --cron is required")
        info = reports.add_schedule(args.id, args.cron, args.timezone, args.format, _list(args.to))
        if args.json:
            return out(args, [info], SCHEDULE_COLUMNS)
        print(f"Added schedule {info.id}: report {info.report_id} '{info.cron_expression}' ({info.timezone}), "
              f"next run {info.next_run_at:%Y-%m-%d %H:%M} UTC")
        return 0
    if action == "remove":
        reports.remove_schedule(args.id)
        print(f"Removed schedule {args.id}")
        return 0
    if action == "run":
        job = reports.run_schedule_now(args.id)
        print(f"Queued ExportReportJob {job} for schedule {args.id}")
        return 0
    info = reports.pause_schedule(args.id) if action == "pause" else reports.resume_schedule(args.id)
    state = "paused" if not info.is_active else f"active, next run {info.next_run_at:%Y-%m-%d %H:%M} UTC"
    print(f"Schedule {info.id}: {state}")
    return 0


def register(groups, common: argparse.ArgumentParser) -> None:
    g = Group(groups, common, "report", "reports: definitions, exports (pdf, xlsx, csv) and schedules")
    c = g.cmd("create", cmd_create, "create a report definition", json=True)
    c.add_argument("name", type=column_text(Report, "name"), help="the report's name")
    c.add_argument("--kind", required=True, type=bounded_text(64), help="the report kind (see 'erpq report kinds')")
    c.add_argument("--tenant", required=True, type=bounded_text(64), help="the tenant (slug or id)")
    c.add_argument("--filters", help='JSON object, e.g. {"date_from": "2026-01-01", "status": "open"}')
    c.add_argument("--columns", type=bounded_text(4000), help="comma-separated columns to include, in order (default: all)")
    c = g.cmd("list", cmd_list, "list report definitions", json=True, paged=True)
    c.add_argument("--tenant", type=bounded_text(64), help="only this tenant's reports")
    g.cmd("kinds", cmd_kinds, "list the built-in report kinds", json=True)
    c = g.cmd("run", cmd_run, "export a report now and print the file's path")
    c.add_argument("id", type=id_int, help="the report id")
    c.add_argument("--format", choices=FORMATS, default="pdf", help="pdf, xlsx or csv (default pdf)")
    c.add_argument("--out", help="write to this path (default: the configured reports folder)")
    c.add_argument("--email", metavar="ADDRESSES", type=bounded_text(4000), help="queue ExportReportJob emailing it to these (comma-separated)")
    c = g.cmd("schedule", cmd_schedule, "report schedules: add, list, pause, resume, remove, run", json=True,
              paged=True)
    c.add_argument("action", choices=("add", "list", "pause", "resume", "remove", "run"), help="what to do")
    c.add_argument("id", type=id_int, nargs="?", help="add: the report id; others: the schedule id")
    c.add_argument("--cron", type=cron_arg, help="add: cron expression, e.g. '0 7 * * 1-5'")
    c.add_argument("--timezone", default="UTC", type=timezone_arg, help="add: the zone the cron expression is read in (default UTC)")
    c.add_argument("--format", choices=FORMATS, default="pdf", help="add: pdf, xlsx or csv (default pdf)")
    c.add_argument("--to", type=bounded_text(4000), help="add: recipients, comma-separated email addresses")
