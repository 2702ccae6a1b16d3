"""Benchmark: imports and report exports against the bare libraries, same run.

1. Import a generated leads CSV through erpq (``ops.imports.start``: audit
   row, import row, the file's encoding check, validation, de-duplication by
   email, chunked writes, counters, one ``lead.created`` event per row written
   to the outbox and fanned out after each commit), and insert the same rows
   with raw SQLAlchemy Core ``insert()`` executemany (rows read with the csv
   module, one transaction) into the same kind of database. On each clock:
   reading the file to the committed rows. Prints rows/s of each, the ratio
   (target >= 0.5x) and the share of erpq's time spent on the events, which
   the bare side does not write.
2. Peak memory of an import of a bigger file, in a child process (VmHWM;
   target < 150 MB for 1,000,000 rows).
3. Export N rows to xlsx and csv through erpq.reports.export and with bare
   openpyxl write-only / the csv module writing the same rows, best of 3 each
   (target >= 0.7x).

    python bench/reports.py                 # 100,000 rows, SQLite; memory run on 1,000,000 rows
    python bench/reports.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench
    python bench/reports.py --smoke         # tiny, for CI
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_csv(path: Path, n: int) -> Path:
    sources = ["web", "fair", "referral", "ads"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Name", "Email", "Phone", "Company", "Source", "Status"])
        for i in range(n):
            w.writerow([f"Lead {i}", f"lead{i}@example.com", f"+49 30 {i:07d}", f"Company {i % 997}",
                        sources[i % 4], "new"])
    return path


def runtime_for(tmp: Path, db: str | None, name: str):
    # Settings and server-database reset are the tests' own helpers (tests/conftest.py).
    conftest = importlib.import_module("conftest")
    make_settings, reset_database = conftest.make_settings, conftest.reset_database
    from erpq.db import make_engine, upgrade
    from erpq.runtime import Runtime, set_current

    if db:
        reset_database(db)
        engine = make_engine(db)
        upgrade(engine)
        engine.dispose()
    d = tmp / name
    d.mkdir()
    settings = make_settings(d, **({"database": {"url": db}} if db else {}))
    rt = Runtime(settings)
    set_current(rt)
    return rt


def add_tenant(rt) -> int:
    from erpq.models import Tenant

    with rt.session() as s:
        t = Tenant(slug="bench", name="Bench")
        s.add(t)
        s.flush()
        return t.id


def bench_import(tmp: Path, n: int, db: str | None) -> tuple[float, float]:
    import sqlalchemy as sa

    from erpq.imports.service import TABLES
    from erpq.ops import Actor, Ops
    from erpq.runtime import set_current

    path = make_csv(tmp / "leads.csv", n)

    # bare: csv module + Core insert() executemany, one transaction
    rt = runtime_for(tmp, db, "bare")
    tid = add_tenant(rt)
    t0 = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{"tenant_id": tid, "name": r["Name"], "email": r["Email"], "phone": r["Phone"],
                 "company": r["Company"], "source": r["Source"], "status": r["Status"], "owner_id": None,
                 "created_at": dt.datetime.now(dt.UTC)} for r in csv.DictReader(f)]
    with rt.engine.begin() as conn:
        conn.execute(sa.insert(TABLES["leads"]), rows)
    bare = time.perf_counter() - t0
    del rows
    set_current(None)
    rt.close()

    rt = runtime_for(tmp, db, "erpq")
    add_tenant(rt)
    ops = Ops(rt, Actor("bench", None, "cli"))
    spent = _time_events()
    t0 = time.perf_counter()
    info = ops.imports.start("bench", "leads", path)
    ours = time.perf_counter() - t0
    _time_events(restore=True)
    assert info.success_count == n, info
    set_current(None)
    rt.close()
    return n / ours, n / bare, spent["events"] / ours


_saved: dict = {}


def _time_events(restore: bool = False) -> dict:
    """Time spent in the events' outbox insert (emit_many) and fan-out
    (dispatch_many) during the erpq import: reported as a share, not removed
    from the clock."""
    from erpq import events

    if restore:
        events.emit_many, events.dispatch_many = _saved["emit_many"], _saved["dispatch_many"]
        return _saved
    spent = _saved.setdefault("spent", {"events": 0.0})
    spent["events"] = 0.0
    for name in ("emit_many", "dispatch_many"):
        f = _saved.setdefault(name, getattr(events, name))

        def timed(*a, _f=f, **k):
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent["events"] += time.perf_counter() - t
        setattr(events, name, timed)
    return spent


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB: VmHWM (Linux; reset by exec), else ru_maxrss,
    which Linux carries over from the parent across fork and exec (a big parent
    would hide the child's own peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(path: str, db: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="erpq-bench-mem-"))
    rt = runtime_for(tmp, db, "mem")
    add_tenant(rt)
    from erpq.ops import Actor, Ops

    before = peak_rss_kb()
    info = Ops(rt, Actor("bench", None, "cli")).imports.start("bench", "leads", path)
    peak = peak_rss_kb()
    print(json.dumps({"rows": info.success_count, "peak_mb": peak / 1024, "before_mb": before / 1024}))


def bench_memory(tmp: Path, n: int, db: str | None) -> dict:
    path = make_csv(tmp / "big.csv", n)
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path)] + (["--db", db] if db else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_export(tmp: Path, n: int) -> dict[str, tuple[float, float]]:
    from openpyxl import Workbook

    from erpq.reports.export import write_csv, write_xlsx
    from erpq.reports.kinds import Col, ReportData

    cols = [Col("name", "Name"), Col("source", "Source"), Col("deals", "Deals", "int"),
            Col("amount", "Amount", "money"), Col("day", "Day", "date")]
    day = dt.date(2026, 1, 1)
    rows = [(f"Lead {i}", "web", i % 17, Decimal(i % 10000) / 100, day + dt.timedelta(days=i % 365))
            for i in range(n)]
    out = {}

    def ours(fmt):
        data = ReportData("Bench", cols, iter(rows), None)
        t0 = time.perf_counter()
        (write_xlsx if fmt == "xlsx" else write_csv)(data, tmp / f"ours.{fmt}")
        return time.perf_counter() - t0

    def bare_xlsx():
        t0 = time.perf_counter()
        wb = Workbook(write_only=True)
        ws = wb.create_sheet("Bench")
        ws.append([c.label for c in cols])
        for r in rows:
            ws.append(r)
        wb.save(tmp / "bare.xlsx")
        return time.perf_counter() - t0

    def bare_csv():
        t0 = time.perf_counter()
        with open(tmp / "bare.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([c.label for c in cols])
            w.writerows(rows)
        return time.perf_counter() - t0

    for fmt, bare in (("xlsx", bare_xlsx), ("csv", bare_csv)):
        # best of 3, alternating, so a busy machine does not favour one side
        b = o = float("inf")
        for _ in range(3):
            b, o = min(b, bare()), min(o, ours(fmt))
        out[fmt] = (n / o, n / b)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000, help="rows imported and exported (default 100,000)")
    p.add_argument("--memory-rows", type=int, default=1_000_000, help="rows of the memory run (0: skip)")
    p.add_argument("--db", help="database URL (default: SQLite in a temp dir)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--skip-export", action="store_true", help="run the import (and memory) parts only")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.db)
        return 0
    if args.smoke:
        args.rows, args.memory_rows = 300, 500
    with tempfile.TemporaryDirectory(prefix="erpq-bench-") as d:
        tmp = Path(d)
        ours, bare, events_share = bench_import(tmp, args.rows, args.db)
        print(f"import {args.rows:,} leads ({args.db or 'sqlite'}): erpq {ours:,.0f} rows/s, "
              f"bare Core insert {bare:,.0f} rows/s, ratio {ours / bare:.2f}x (target >= 0.5x); "
              f"{events_share:.0%} of erpq's time in lead.created events (outbox insert + fan-out)")
        for fmt, (o, b) in ({} if args.skip_export else bench_export(tmp, args.rows)).items():
            print(f"export {args.rows:,} rows to {fmt}: erpq {o:,.0f} rows/s, bare {b:,.0f} rows/s, "
                  f"ratio {o / b:.2f}x (target >= 0.7x)")
        if args.memory_rows:
            m = bench_memory(tmp, args.memory_rows, args.db)
            print(f"import {m['rows']:,} leads: peak RSS {m['peak_mb']:.0f} MB (target < 150 MB; "
                  f"{m['before_mb']:.0f} MB before the import)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
