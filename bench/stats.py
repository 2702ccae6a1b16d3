"""Throughput/latency stats over a large run history: erpq's ``ops.throughput``
(aggregated by the database) against the plain way (read the window's runs and
compute percentiles in Python, as ``erpq stats`` did before).

    python bench/stats.py                      # 500,000 runs over the last day, SQLite
    python bench/stats.py --postgres URL       # ... and on PostgreSQL (a database it may empty)
    python bench/stats.py --smoke              # 2,000 runs: proves it runs

For each window (last hour by minute, last day by hour) it prints the time of
the first read, of a second read by the same Ops (what each console poll costs:
ended buckets are kept) and of the plain read, with the ratio plain / erpq.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from pathlib import Path


def seed(rt, runs: int) -> None:
    import sqlalchemy as sa

    from erpq.models import JobRun

    now = dt.datetime.now(dt.UTC)
    rnd = random.Random(7)
    with rt.engine.begin() as conn:
        conn.execute(sa.delete(JobRun))
        for start in range(0, runs, 50_000):
            rows = []
            for i in range(start, min(runs, start + 50_000)):
                finished = now - dt.timedelta(seconds=86_400 * i / runs)
                took, wait = rnd.expovariate(5.0), rnd.expovariate(1.0)
                started = finished - dt.timedelta(seconds=took)
                rows.append({"task_id": f"b{i}", "task_name": f"BenchTask{i % 10}", "kind": "job",
                             "status": "failed" if i % 10 == 0 else "success", "attempt": 1,
                             "enqueued_at": started - dt.timedelta(seconds=wait), "started_at": started,
                             "finished_at": finished, "duration_s": took})
            conn.execute(sa.insert(JobRun), rows)


def plain(rt, seconds: int) -> int:
    """The window's runs read into Python, percentiles per task computed there."""
    import sqlalchemy as sa

    from erpq.models import JobRun

    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    with rt.read_session() as s:
        rows = s.execute(sa.select(JobRun.task_name, JobRun.status, JobRun.enqueued_at, JobRun.started_at,
                                   JobRun.duration_s).where(JobRun.finished_at >= since)).all()
    per: dict[str, tuple[list[float], list[float]]] = {}
    for name, _status, enq, started, took in rows:
        wait, run = per.setdefault(name, ([], []))
        if enq and started:
            wait.append((started - enq).total_seconds())
        if took is not None:
            run.append(took)
    for wait, run in per.values():
        for values in (wait, run):
            values.sort()
            _ = values[len(values) // 2] if values else None, values[int(len(values) * .95)] if values else None
    return len(rows)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(url: str, runs: int, tmp: Path) -> None:
    from erpq.config import from_dict
    from erpq.db import make_engine, upgrade
    from erpq.ops import Ops
    from erpq.ops.stats import WINDOWS
    from erpq.runtime import Runtime

    if not url.startswith("sqlite"):
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
    settings = from_dict({"queue": {"url": f"sqlite:///{tmp}/q.db"}, "database": {"url": url},
                          "log": {"path": str(tmp / "erpq.log")}}, source="<bench>")
    rt = Runtime(settings)
    try:
        t0 = time.perf_counter()
        seed(rt, runs)
        print(f"{rt.engine.dialect.name}: {runs:,} runs over the last day, seeded in {time.perf_counter() - t0:.1f}s")
        for name, (bucket_s, buckets) in WINDOWS.items():
            ops = Ops(rt)
            first = timed(lambda: ops.throughput(bucket_s, buckets))  # noqa: B023
            again = timed(lambda: ops.throughput(bucket_s, buckets))  # noqa: B023
            n = plain(rt, bucket_s * buckets)
            bare = timed(lambda: plain(rt, bucket_s * buckets))  # noqa: B023
            print(f"  {name:<5} ({n:,} runs): erpq first {first:.3f}s, next poll {again:.3f}s; "
                  f"plain {bare:.3f}s; plain/erpq first {bare / first:.1f}x, next poll {bare / max(again, 1e-6):.1f}x")
    finally:
        rt.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500_000, help="runs in the history (default 500,000)")
    p.add_argument("--postgres", help="also on this PostgreSQL URL (its job_runs are replaced)")
    p.add_argument("--smoke", action="store_true", help="2,000 runs: proves it runs")
    args = p.parse_args(argv)
    runs = 2_000 if args.smoke else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/db.sqlite", runs, Path(tmp))
        if args.postgres:
            bench(args.postgres, runs, Path(tmp))


if __name__ == "__main__":
    main()
