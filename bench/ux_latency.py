"""Start latency on an idle runner: enqueue → the job's body starts, p50/p95,
for erpq's runner and bare Huey side by side, on the SQLite store and on Redis.

Rows per store:

- ``enqueue``: one job enqueued (erpq: ``Runtime.enqueue``; Huey: calling the task);
- ``trigger``: a periodic task run now (erpq: ``Ops.trigger``, what the console
  and ``erpq schedule run`` do; Huey: calling the periodic task).

Before each job the runner is left idle for a gap taken from 0.2 s to 7 s, so
some starts meet a fully backed-off poller. Both sides poll alike (one thread
worker; 0.1 s growing by 1.15x up to 1 s, erpq's setting: Huey's own default
goes up to 10 s); erpq's SQLite runner is also woken by each enqueue
(``erpq.runtime.wake``). Issue 8 asks for p95 within 100 ms on SQLite.

Last, on SQLite, ``erpq schedule run`` from a new process against the same
idle runner: from launching the command, and from its enqueue (the run-history
row) to the run's start. A new process first imports every capability.

    python bench/ux_latency.py            # 20 starts per row, side and store
    python bench/ux_latency.py --smoke    # 3 starts, short gaps (CI)
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

STARTS: dict[str, float] = {}
CURRENT = {"key": ""}  # the key a periodic task (no arguments) records its start under
GAPS = (0.2, 0.5, 1.0, 2.0, 4.0, 7.0)
SMOKE_GAPS = (0.05, 0.1, 0.2)
POLL = {"initial_delay": 0.1, "backoff": 1.15, "max_delay": 1.0}
CLI_TASK = "crm:resume-workflows"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(round((len(values) - 1) * q)), len(values) - 1)]


def measure(start, n: int, gaps: tuple[float, ...], rng: random.Random) -> list[float]:
    out = []
    for i in range(n):
        time.sleep(rng.choice(gaps))
        key = f"k{i}-{rng.random()}"
        CURRENT["key"] = key
        t0 = time.perf_counter()
        start(key)
        deadline = t0 + 15
        while key not in STARTS and time.perf_counter() < deadline:
            time.sleep(0.0005)
        out.append((STARTS.get(key, deadline) - t0) * 1000)
    return out


def bare_huey(store: str, tmp: Path, n: int, gaps, rng, redis_url: str) -> dict[str, list[float]]:
    from huey import RedisHuey, SqliteHuey, crontab

    huey = SqliteHuey("bench", filename=str(tmp / "bare.db")) if store == "sqlite" else \
        RedisHuey(f"bench-ux-latency-{os.getpid()}", url=redis_url)
    huey.flush()

    @huey.task()
    def mark(key):
        STARTS[key] = time.perf_counter()

    @huey.periodic_task(crontab(month="1", day="1", hour="0", minute="0"))
    def tick():
        STARTS[CURRENT["key"]] = time.perf_counter()

    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False, **POLL)
    consumer._set_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        return {"enqueue": measure(lambda k: mark(k), n, gaps, rng),
                "trigger": measure(lambda k: tick(), n, gaps, rng)}
    finally:
        consumer.stop(graceful=True)
        huey.flush()


def erpq_settings(store: str, tmp: Path, redis_url: str):
    from erpq.config import from_dict

    queue = {"url": "sqlite:///q.db"} if store == "sqlite" else \
        {"url": redis_url, "name": f"bench-ux-latency-erpq-{os.getpid()}"}
    return from_dict({"queue": {**queue, "workers": 1}, "database": {"url": "sqlite:///erpq.db"},
                      "log": {"path": "erpq.log"}}, source="<bench>", base_dir=str(tmp))


def erpq_runner(store: str, tmp: Path, n: int, gaps, rng, redis_url: str, cli: int = 0) -> dict[str, list[float]]:
    from erpq.ops import Ops
    from erpq.runtime import EmbeddedRunner, Runtime, job, periodic, set_current

    @job("UxLatencyMark")
    def ux_latency_mark(key):
        STARTS[key] = time.perf_counter()

    @periodic("bench:ux-latency-tick", cron="0 0 1 1 *", description="bench/ux_latency.py")
    def ux_latency_tick():
        STARTS[CURRENT["key"]] = time.perf_counter()

    rt = Runtime(erpq_settings(store, tmp, redis_url))
    set_current(rt)
    runner = EmbeddedRunner(rt, workers=1, periodic=False, **POLL)
    runner.start()
    ops = Ops(rt)
    try:
        out = {"enqueue": measure(lambda k: rt.enqueue("UxLatencyMark", k), n, gaps, rng),
               "trigger": measure(lambda k: ops.trigger("bench:ux-latency-tick"), n, gaps, rng)}
        if cli:
            out.update(cli_trigger(rt, tmp, cli, gaps, rng))
        return out
    finally:
        runner.stop()
        set_current(None)
        rt.close()


def cli_trigger(rt, tmp: Path, n: int, gaps, rng) -> dict[str, list[float]]:
    """``erpq schedule run`` in a new process against the idle runner of ``rt``."""
    import sqlalchemy as sa

    from erpq.models import JobRun

    (tmp / "config.toml").write_text('[queue]\nurl = "sqlite:///q.db"\n[database]\nurl = "sqlite:///erpq.db"\n'
                                     '[log]\npath = "erpq.log"\n')
    erpq = [sys.executable, "-m", "erpq.cli", "--config", str(tmp / "config.toml")]
    launch, queued = [], []
    for _ in range(n):
        time.sleep(rng.choice(gaps))
        t0 = time.time()
        subprocess.run([*erpq, "schedule", "run", CLI_TASK], check=True, capture_output=True)
        row = None
        deadline = time.monotonic() + 15
        while row is None and time.monotonic() < deadline:
            with rt.read_session() as s:
                row = s.execute(sa.select(JobRun.enqueued_at, JobRun.started_at)
                                .where(JobRun.task_name == CLI_TASK, JobRun.trigger == "manual",
                                       JobRun.started_at.is_not(None), JobRun.enqueued_at >= _utc(t0 - 1))
                                .order_by(JobRun.id.desc()).limit(1)).first()
            time.sleep(0.01)
        if row is None:
            launch.append(15_000.0)
            queued.append(15_000.0)
            continue
        enqueued, started = (_ts(v) for v in row)
        launch.append((started - t0) * 1000)
        queued.append((started - enqueued) * 1000)
    return {"cli: launch": launch, "cli: enqueue": queued}


def _utc(ts: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _ts(value) -> float:
    import datetime as dt

    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def redis_up(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20, help="starts per row, side and store (default 20)")
    p.add_argument("--cli", type=int, default=5, help="'erpq schedule run' processes on SQLite (default 5, 0: none)")
    p.add_argument("--redis-url", default=os.environ.get("ERPQ_TEST_REDIS", "redis://127.0.0.1:6379/15"),
                   help="Redis for the Redis store (default $ERPQ_TEST_REDIS or db 15)")
    p.add_argument("--smoke", action="store_true", help="3 starts, short idle gaps, 1 CLI run (CI)")
    args = p.parse_args(argv)
    n, gaps, cli = (3, SMOKE_GAPS, min(args.cli, 1)) if args.smoke else (args.jobs, GAPS, args.cli)
    rng = random.Random(8)
    stores = ["sqlite"] + (["redis"] if redis_up(args.redis_url) else [])
    print(f"load average {os.getloadavg()[0]:.2f}; {n} starts per row; idle gaps {gaps[0]:g}-{gaps[-1]:g} s")
    print(f"{'store':<7} {'row':<13} {'huey p50':>9} {'huey p95':>9} {'erpq p50':>9} {'erpq p95':>9} "
          f"{'p50 ratio':>9} {'p95 ratio':>9}   (ms; ratio erpq/huey)")
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            bare = bare_huey(store, Path(tmp), n, gaps, rng, args.redis_url)
        with tempfile.TemporaryDirectory() as tmp:
            ours = erpq_runner(store, Path(tmp), n, gaps, rng, args.redis_url, cli if store == "sqlite" else 0)
        for row, lat in ours.items():
            b = bare.get(row)
            if b is None:
                print(f"{store:<7} {row:<13} {'-':>9} {'-':>9} {pct(lat, .5):9.1f} {pct(lat, .95):9.1f}")
                continue
            print(f"{store:<7} {row:<13} {pct(b, .5):9.1f} {pct(b, .95):9.1f} {pct(lat, .5):9.1f} "
                  f"{pct(lat, .95):9.1f} {pct(lat, .5) / max(pct(b, .5), 1e-6):9.2f} "
                  f"{pct(lat, .95) / max(pct(b, .95), 1e-6):9.2f}")
        if store == "sqlite":
            p95 = max(pct(ours["enqueue"], .95), pct(ours["trigger"], .95))
            print(f"sqlite  erpq p95 {p95:.1f} ms: {'within' if p95 <= 100 else 'OVER'} the 100 ms target "
                  f"(mean enqueue {statistics.mean(ours['enqueue']):.1f} ms)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
