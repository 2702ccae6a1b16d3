"""Benchmark of erpq-console at scale, in both of its modes.

With 100,000 pending jobs, 100,000 failed jobs and 1,000,000 run-history rows in
the store (``--pending``, ``--failed``, ``--history``), measures (and prints),
first with ``--attach`` (only watching) and then in the default mode (an
embedded runner in the same process, which starts working through the pending
jobs: each is a ``DeliverWebhookJob`` for a delivery that does not exist, so it
is claimed, finds nothing and succeeds):

- time from start to the first full screen (target < 1.5 s): ``erpq-console``
  is started in a pseudo-terminal; the clock stops when the status line shows
  the counts read from the store and the first periodic task is on the screen;
- the longest event-loop stall while polling for 60 s (target < 100 ms): the app
  runs headless in this process (with its embedded runner in the default mode),
  every view is visited in turn (failure clusters and a text filter included)
  while a probe coroutine measures how late a 10 ms sleep wakes up;
- the CPU the console process uses while idle on the Schedule view (target < 5 %
  of a core at a 2 s poll), from its CPU times over 10 s; in the default mode
  this includes the embedded runner's work on the backlog;
- the bytes written to the terminal over 10 idle seconds (target < 4 KiB),
  ticking countdowns (and, in the default mode, changing counts) included.

Stores: SQLite (default), then Redis + PostgreSQL (``--stores sqlite,redis-pg``)
at redis://127.0.0.1:6379/15 (a dedicated queue name) and PostgreSQL on 127.0.0.1:5432
(database ``erpq_console_bench``, created when missing, because the test suite
drops every table of ``test`` while it runs); its tables are dropped and recreated.

    python bench/console.py                   # both stores, both modes
    python bench/console.py --stores sqlite --modes attach --stall-seconds 20
    python bench/console.py --smoke           # tiny store and short waits: proves it runs
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import itertools
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

import sqlalchemy as sa

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: A database of its own: the test suite resets ``test`` (drops every table) while it runs.
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/erpq_console_bench"
REDIS_URL = "redis://127.0.0.1:6379/15"
QUEUE_NAME = "erpqconsolebench"  # Huey strips punctuation from queue names

PENDING = 100_000
FAILED = 100_000
RUNS = 1_000_000
#: ``--smoke``: enough rows to fill every view, short waits.
SMOKE = {"pending": 300, "failed": 200, "history": 2_000, "stall_seconds": 1.0, "idle_seconds": 0.5}


# ====================================================================== seeding


def write_config(tmp: Path, store: str) -> Path:
    if store == "sqlite":
        queue, db = 'url = "sqlite:///queue.db"', 'url = "sqlite:///erpq.db"'
    else:
        queue, db = f'url = "{REDIS_URL}"\nname = "{QUEUE_NAME}"', f'url = "{PG_URL}"'
    cfg = tmp / "config.toml"
    cfg.write_text(f"[queue]\n{queue}\n[database]\n{db}\n[log]\npath = \"erpq.log\"\n"
                   "[console]\npoll_s = 2.0\n")
    return cfg


def reset_server_stores() -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"*{QUEUE_NAME}*"):
        r.delete(key)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(sa.text("select 1 from pg_database where datname = 'erpq_console_bench'")):
            conn.exec_driver_sql("CREATE DATABASE erpq_console_bench")
    admin.dispose()
    engine = sa.create_engine(PG_URL)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in reversed(meta.sorted_tables):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}" CASCADE')
    from erpq.db import upgrade

    upgrade(engine)
    engine.dispose()


def seed(cfg: Path, store: str, pending: int = PENDING, failed: int = FAILED, runs: int = RUNS) -> None:
    from erpq.config import load
    from erpq.models import FailedJob, JobRun
    from erpq.runtime import Runtime

    if store != "sqlite":
        reset_server_stores()
    rt = Runtime(load(cfg))
    try:
        periodic, jobs = registered(rt)
        job = "DeliverWebhookJob" if "DeliverWebhookJob" in jobs else jobs[0]
        t0 = time.perf_counter()
        # Deliveries that do not exist: the embedded runner claims each, finds no row, and is done.
        # One message per job (its own task id), as enqueueing makes them.
        def kwargs(i: int) -> dict:
            return {"delivery_pk": 10**12 + i, "job_token": "bench"} if job == "DeliverWebhookJob" else {}

        messages = (rt.huey.serialize_task(rt.tasks[job].s(**kwargs(i))) for i in range(pending))
        storage = rt.huey.storage
        if store == "sqlite":
            path = rt.settings.sqlite_path(rt.settings.queue.url)
            with sqlite3.connect(path) as conn:
                conn.executemany("insert into task (queue, data, priority) values (?, ?, 0)",
                                 ((storage.name, data) for data in messages))
        else:
            while chunk := list(itertools.islice(messages, 10_000)):
                storage.conn.lpush(storage.queue_key, *chunk)
        t1 = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        payload = rt.huey.serialize_task(rt.tasks[job].s(**kwargs(0)))
        with rt.engine.begin() as conn:
            for start in range(0, failed, 20_000):
                conn.execute(sa.insert(FailedJob), [
                    {"task_id": f"failed-{i}", "task_name": job, "args": {"args": [], "kwargs": kwargs(i)},
                     "payload": payload, "exception_type": "ConnectError" if i % 3 else "HTTPStatusError",
                     "exception": f"connection refused: 10.0.{i % 7}.{i % 250}" if i % 3 else f"status {500 + i % 4}",
                     "traceback": "Traceback (most recent call last):\n  ...\nConnectError: refused",
                     "attempts": 3, "failed_at": now - dt.timedelta(seconds=i), "reason": "error"}
                    for i in range(start, min(failed, start + 20_000))])
        t2 = time.perf_counter()
        names = periodic + jobs
        with rt.engine.begin() as conn:
            for start in range(0, runs, 50_000):
                conn.execute(sa.insert(JobRun), [
                    {"task_id": f"run-{i}", "task_name": names[i % len(names)],
                     "kind": "periodic" if names[i % len(names)] in periodic else "job",
                     "status": "failed" if i % 10 == 0 else "success", "attempt": 1,
                     "enqueued_at": now - dt.timedelta(seconds=runs - i),
                     "started_at": now - dt.timedelta(seconds=runs - i),
                     "finished_at": now - dt.timedelta(seconds=runs - i - 0.2), "duration_s": 0.2,
                     "runner": "bench:1:abc", "args_summary": f"delivery_pk={i}",
                     "error": "ConnectError: refused" if i % 10 == 0 else None}
                    for i in range(start, min(runs, start + 50_000))])
        t3 = time.perf_counter()
        print(f"  seeded {pending:,} pending in {t1 - t0:.1f}s, {failed:,} failed in {t2 - t1:.1f}s, "
              f"{runs:,} runs in {t3 - t2:.1f}s")
    finally:
        rt.close()


def registered(rt) -> tuple[list[str], list[str]]:
    """(periodic task names, job names) as the runtime registered them."""
    from erpq.ops import Ops
    from erpq.runtime import JOBS

    periodic = [e.name for e in Ops(rt).schedule()]
    jobs = sorted(name for name in rt.tasks if name not in periodic and not JOBS[name].periodic)
    return periodic, jobs


# ====================================================================== the pty run


def console_argv(attach: bool) -> list[str]:
    exe = shutil.which("erpq-console", path=str(Path(sys.executable).parent))
    argv = [exe] if exe else [sys.executable, "-m", "tui.app"]
    return [*argv, "--attach"] if attach else argv


def spawn(argv: list[str], env: dict[str, str], cols: int = 80, rows: int = 24) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # child: size the terminal, then become the console
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execve(argv[0], argv, env)
    return pid, fd


def read_for(fd: int, seconds: float, until: list[re.Pattern[bytes]] | None = None,
             buf: bytearray | None = None) -> tuple[int, float | None]:
    """Read the terminal for up to ``seconds``; returns (bytes read, time the
    ``until`` patterns were all seen, or None)."""
    buf = buf if buf is not None else bytearray()
    total = 0
    deadline = time.perf_counter() + seconds
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return total, None
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return total, None
            total += len(chunk)
            buf.extend(chunk)
            if until and all(m.search(buf) for m in until):
                return total, time.perf_counter()


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def pty_figures(cfg: Path, first_task: str, attach: bool, idle_s: float) -> dict[str, float]:
    env = {**os.environ, "ERPQ_CONFIG": str(cfg), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    # The status line reads "failed 0" until the first poll has read the store;
    # every seeded store has failed jobs, so a non-zero count means counts are on screen.
    until = [re.compile(rb"failed [1-9]"), re.compile(re.escape(first_task.encode()))]
    start = time.perf_counter()
    pid, fd = spawn(console_argv(attach), env)
    figures: dict[str, float] = {}
    try:
        buf = bytearray()
        _, seen = read_for(fd, 20, until=until, buf=buf)
        if seen is None:
            raise SystemExit(f"no first screen within 20 s; last output: {bytes(buf[-400:])!r}")
        figures["first_screen_s"] = seen - start
        read_for(fd, min(4.0, idle_s))  # let the first polls and the layout settle
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        written, _ = read_for(fd, idle_s)
        figures["idle_bytes"] = written
        figures["idle_cpu_percent"] = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0) * 100
        os.write(fd, b"q")
        quit_at = time.perf_counter()
        deadline = time.time() + 60
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                figures["exit_code"] = os.waitstatus_to_exitcode(status)
                figures["exit_s"] = time.perf_counter() - quit_at
                break
            read_for(fd, 0.1)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    return figures


# ====================================================================== stalls (in-process)


def stall_figures(cfg: Path, seconds: float, clusters: bool = True, embedded: bool = False) -> dict[str, float]:
    """The app headless in this process, built as ``erpq-console`` builds it:
    ``erpq.ops.Ops`` plus, in the default mode, an ``EmbeddedRunner``."""
    from erpq.config import load
    from erpq.ops import Actor, Ops
    from erpq.runtime import EmbeddedRunner, Runtime, set_current
    from tui.app import ErpqConsole, quiet_logging

    rt = Runtime(load(cfg))
    set_current(rt)
    quiet_logging()
    runner = EmbeddedRunner(rt) if embedded else None
    app = ErpqConsole(Ops(rt, Actor.detect("console")), rt.settings,
                      mode="embedded runner" if embedded else "attached", tune_gc=True)
    gaps: list[float] = []

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            while app.first_screen_at is None:  # stalls while starting are the first-screen figure
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            stop = asyncio.Event()

            async def probe() -> None:
                loop = asyncio.get_running_loop()
                while not stop.is_set():
                    t = loop.time()
                    await asyncio.sleep(0.01)
                    gaps.append(loop.time() - t - 0.01)

            task = asyncio.create_task(probe())
            plan = ["1", "2", "v", "v", "v", "3", *(["g", "g"] if clusters else []), "slash", *"refused",
                    "enter", "escape", "4", "5", "6", "7", "1"]
            step = seconds / len(plan)
            for key in plan:
                await pilot.press(key)
                await asyncio.sleep(step)
            stop.set()
            await task

    try:
        if runner is not None:
            runner.start()
        asyncio.run(run())
    finally:
        if runner is not None:
            runner.stop()
        set_current(None)
        rt.close()
    gaps.sort()
    return {"max_stall_ms": gaps[-1] * 1000, "p99_stall_ms": gaps[int(len(gaps) * 0.99)] * 1000,
            "polls": app.polls}


def first_periodic(cfg: Path) -> str:
    """The task on the Schedule view's first row (the view lists them by name)."""
    from erpq.config import load
    from erpq.runtime import Runtime

    rt = Runtime(load(cfg))
    try:
        return sorted(registered(rt)[0])[0]
    finally:
        rt.close()


def store_counts(cfg: Path) -> dict[str, int]:
    from erpq.config import load
    from erpq.ops import Ops
    from erpq.runtime import Runtime

    rt = Runtime(load(cfg))
    try:
        return Ops(rt).queue_counts()
    finally:
        rt.close()


# ====================================================================== main


MODES = {"attach": "--attach (watching only)", "embedded": "default (embedded runner in the process)"}


def bench(store: str, args: argparse.Namespace) -> None:
    label = "SQLite" if store == "sqlite" else "Redis + PostgreSQL"
    print(f"== {label}", flush=True)
    with tempfile.TemporaryDirectory(prefix="erpq-bench-") as tmp:
        base = Path(args.keep) / store if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        seeded = (base / "seeded").exists()
        cfg = write_config(base, store)
        if not seeded:
            seed(cfg, store, args.pending, args.failed, args.history)
            if args.keep:
                (base / "seeded").touch()
        first = first_periodic(cfg)
        for mode in args.modes.split(","):
            mode = mode.strip()
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r} (attach, embedded)")
            embedded = mode == "embedded"
            c = store_counts(cfg)
            print(f"-- {MODES[mode]}; store at start: pending {c['pending']:,}, failed {c['failed']:,}",
                  flush=True)
            f = pty_figures(cfg, first, attach=not embedded, idle_s=args.idle_seconds)
            s = stall_figures(cfg, args.stall_seconds, not args.no_clusters, embedded=embedded)
            idle = f"{args.idle_seconds:g} s"
            cpu_what = "console + embedded runner" if embedded else "console"
            print(f"  first full screen:          {f['first_screen_s']:.2f} s   (target < 1.5 s)")
            print(f"  longest event-loop stall:   {s['max_stall_ms']:.0f} ms  (p99 {s['p99_stall_ms']:.0f} ms, "
                  f"{s['polls']} polls in {args.stall_seconds:g} s; target < 100 ms)")
            print(f"  CPU, {idle} on Schedule:   {f['idle_cpu_percent']:.1f} % of a core ({cpu_what}; "
                  f"target < 5 %)")
            print(f"  bytes written, {idle} idle: {f['idle_bytes']:,.0f} B  (target < 4,096 B per 10 s)")
            print(f"  exit code after q:          {f.get('exit_code', 'did not exit')} "
                  f"(after {f.get('exit_s', float('nan')):.1f} s)", flush=True)
        if store != "sqlite" and not args.keep:
            reset_server_stores()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", default="sqlite,redis-pg", help="comma-separated: sqlite, redis-pg")
    p.add_argument("--modes", default="attach,embedded", help="comma-separated: attach, embedded")
    p.add_argument("--pending", type=int, default=PENDING)
    p.add_argument("--failed", type=int, default=FAILED)
    p.add_argument("--history", type=int, default=RUNS, help="run-history rows")
    p.add_argument("--stall-seconds", type=float, default=60.0)
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU and bytes are measured over this")
    p.add_argument("--smoke", action="store_true",
                   help="tiny store and short waits: proves the benchmark runs, measures nothing")
    p.add_argument("--keep", metavar="DIR", help="seed into DIR once and reuse it (for iterating)")
    p.add_argument("--no-clusters", action="store_true", help="do not open the failure clusters while polling")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.failed < 1:
        p.error("--failed must be at least 1 (the first screen is recognised by a non-zero failed count)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for store in args.stores.split(","):
        bench(store.strip(), args)


if __name__ == "__main__":
    main()
