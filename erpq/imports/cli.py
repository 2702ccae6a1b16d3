"""``erpq import FILE --type T --tenant X``, ``erpq import status ID``, ``list``, ``cancel ID``."""

from __future__ import annotations

import argparse
import sys
import time

from ..cli_support import (
    JSON_OPTION_BYTES,
    MAX_ID,
    CliError,
    bounded_text,
    flag_parents,
    ops_for,
    out,
    parse_json_arg,
)

COLUMNS = ["id", "tenant", "entity", "file", "status", "processed_rows", "total_rows", "success_count",
           "failed_count", "skipped", "updated", "rows_per_s", "eta_s", "last_error"]


class ProgressPrinter:
    """A progress bar with rows/s and ETA on a terminal; plain lines (at most one
    a second) otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        elapsed = max(now - self.t0, 1e-6)
        rate = p.processed / elapsed
        eta = (p.total - p.processed) / rate if p.total and rate else None
        tail = (f"{p.processed:,}/{p.total or '?':,} rows  {rate:,.0f} rows/s  "
                f"ETA {eta:.0f}s  ok {p.success:,}  errors {p.failed:,}" if p.total
                else f"{p.processed:,} rows  {rate:,.0f} rows/s  ok {p.success:,}  errors {p.failed:,}")
        if self.tty:
            frac = min(p.processed / p.total, 1.0) if p.total else 0.0
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac:4.0%} {tail}\x1b[K")
            self.stream.flush()
        elif now - self.last >= 1.0 or (p.total and p.processed >= p.total):
            self.last = now
            print(f"import {p.import_id}: {tail}", file=self.stream, flush=True)

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_import(args, rt) -> int:
    imports = ops_for(args, rt).imports
    target = args.target
    if target == "list":
        page = imports.imports(args.offset, args.limit, status=args.status)
        return out(args, page.items, COLUMNS)
    if target in ("status", "cancel"):
        if not args.id or not args.id.isascii() or not args.id.isdigit() or not 0 < int(args.id) <= MAX_ID:
            raise CliError(f"erpq import {target}: give the import id (a number from 1 to {MAX_ID})", code=2)
        if target == "cancel":
            info = imports.cancel(int(args.id))
            print(f"Cancelled import {info.id} after {info.processed_rows} rows")
            return 0
        info = imports.get(int(args.id))
        if args.errors_csv:
            n = imports.write_errors_csv(info.id, args.errors_csv)
            print(f"Wrote {n} error row(s) to {args.errors_csv}", file=sys.stderr)
        return out(args, [info], COLUMNS)
    if args.id:
        raise CliError(f"erpq import: unexpected argument {args.id!r}")
    if not args.type or not args.tenant:
        raise CliError("erpq import FILE: --type and --tenant are required")
    mapping = parse_json_arg(args.mapping, "--mapping", JSON_OPTION_BYTES) if args.mapping else None
    if mapping is not None and not (isinstance(mapping, dict) and all(isinstance(v, str) for v in mapping.values())):
        raise CliError('--mapping: give a JSON object {"file column": "field"}')
    printer = None if args.json or args.queue else ProgressPrinter()
    try:
        info = imports.start(args.tenant, args.type, target, dry_run=args.dry_run,
                             update_existing=args.update_existing, mapping=mapping, encoding=args.encoding,
                             queue=args.queue, progress=printer)
    finally:
        if printer:
            printer.done()
    if args.json:
        return out(args, [info], COLUMNS)
    if args.queue:
        print(f"Queued import {info.id} (ImportDataJob); follow it with 'erpq import status {info.id}'")
        return 0
    verb = "Checked (dry run)" if args.dry_run else "Imported"
    print(f"{verb} {info.processed_rows} row(s) of {info.file}: {info.success_count} ok, "
          f"{info.failed_count} with errors, {info.skipped} duplicate(s) skipped, {info.updated} updated "
          f"(import {info.id})")
    if info.failed_count:
        print(f"Error rows: erpq import status {info.id} --errors-csv errors.csv")
    return 0 if info.status == "finished" else 1


def register(groups, common: argparse.ArgumentParser) -> None:
    json_flag, paging = flag_parents()
    p = groups.add_parser(
        "import", parents=[common, json_flag, paging], help="import leads, contacts or deals from CSV or Excel",
        description="erpq import FILE --type leads|contacts|deals --tenant T [--dry-run] [--update-existing]; "
                    "erpq import status ID [--errors-csv PATH]; erpq import list; erpq import cancel ID")
    p.set_defaults(handler=cmd_import)
    p.add_argument("target", metavar="FILE|status|list|cancel", help="the file to import, or a subcommand")
    p.add_argument("id", nargs="?", help="with status / cancel: the import id")
    p.add_argument("--type", choices=("leads", "contacts", "deals"), help="what the file holds")
    p.add_argument("--tenant", type=bounded_text(64), help="the tenant (slug or id) the rows belong to")
    p.add_argument("--dry-run", action="store_true", help="validate every row, write nothing")
    p.add_argument("--update-existing", action="store_true",
                   help="update rows whose email already exists (default: skip them)")
    p.add_argument("--mapping", help='JSON object mapping file columns to fields, e.g. {"Mail": "email"}')
    p.add_argument("--encoding", type=bounded_text(64), help="the file's encoding when it is not UTF-8 (default: detect, cp1252)")
    p.add_argument("--queue", action="store_true", help="run as ImportDataJob on the workers instead of now")
    p.add_argument("--errors-csv", metavar="PATH", help="with status: write the error rows to this CSV file")
    p.add_argument("--status", type=bounded_text(16), help="with list: only imports with this status")
