"""Start latency on an idle runner: enqueue → the job's body starts, p50/p95,
for erpq's runner and bare Huey side by side, on the SQLite store (and Redis
when it answers on 127.0.0.1:6379).

Between jobs the runner is left idle for a random 0.2–1.5 s, so the polling
backoff of an idle consumer is what is measured (issue 8 asks for p95 within
100 ms on SQLite through a wake-up; bare Huey's backoff gives ~1 s).

    python bench/ux_latency.py            # 30 jobs per side and store
    python bench/ux_latency.py --smoke    # 3 jobs, for CI
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

STARTS: dict[str, float] = {}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(round((len(values) - 1) * q)), len(values) - 1)]


def measure(enqueue, n: int, idle: tuple[float, float]) -> list[float]:
    out = []
    for i in range(n):
        time.sleep(random.uniform(*idle))
        key = f"k{i}-{random.random()}"
        t0 = time.perf_counter()
        enqueue(key)
        deadline = t0 + 10
        while key not in STARTS and time.perf_counter() < deadline:
            time.sleep(0.0005)
        out.append((STARTS.get(key, deadline) - t0) * 1000)
    return out


def bare_huey(store: str, tmp: Path, n: int, idle) -> list[float]:
    from huey import RedisHuey, SqliteHuey

    huey = SqliteHuey("bench", filename=str(tmp / "bare.db")) if store == "sqlite" else \
        RedisHuey("bench-ux-latency", url="redis://127.0.0.1:6379/15")
    huey.flush()

    @huey.task()
    def mark(key):
        STARTS[key] = time.perf_counter()

    consumer = huey.create_consumer(workers=1, worker_type="thread")
    thread = threading.Thread(target=consumer.run, daemon=True)
    consumer._set_signal_handlers = lambda: None  # not the main thread
    thread.start()
    try:
        return measure(lambda k: mark(k), n, idle)
    finally:
        consumer.stop(graceful=True)


def erpq_runner(store: str, tmp: Path, n: int, idle) -> list[float]:
    from erpq.config import from_dict
    from erpq.runtime import EmbeddedRunner, Runtime, job, set_current

    @job("UxLatencyMark")
    def ux_latency_mark(key):
        STARTS[key] = time.perf_counter()

    queue = {"url": "sqlite:///q.db"} if store == "sqlite" else \
        {"url": "redis://127.0.0.1:6379/15", "name": "bench-ux-latency-erpq"}
    settings = from_dict({"queue": {**queue, "workers": 1}, "database": {"url": "sqlite:///erpq.db"},
                          "log": {"path": "erpq.log"}}, source="<bench>", base_dir=str(tmp))
    rt = Runtime(settings)
    set_current(rt)
    runner = EmbeddedRunner(rt, workers=1, periodic=False)
    runner.start()
    try:
        return measure(lambda k: rt.enqueue("UxLatencyMark", k), n, idle)
    finally:
        runner.stop()
        set_current(None)
        rt.close()


def redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=30, help="jobs per side and store (default 30)")
    p.add_argument("--smoke", action="store_true", help="3 jobs, short idle gaps (CI)")
    args = p.parse_args(argv)
    n, idle = (3, (0.05, 0.2)) if args.smoke else (args.jobs, (0.2, 1.5))
    stores = ["sqlite"] + (["redis"] if redis_up() else [])
    print(f"{'store':<7} {'side':<10} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}")
    for store in stores:
        results = {}
        for side, fn in (("bare huey", bare_huey), ("erpq", erpq_runner)):
            with tempfile.TemporaryDirectory() as tmp:
                lat = fn(store, Path(tmp), n, idle)
            results[side] = lat
            print(f"{store:<7} {side:<10} {pct(lat, .5):9.1f} {pct(lat, .95):9.1f} {statistics.mean(lat):9.1f}")
        ratio = pct(results["erpq"], .95) / max(pct(results["bare huey"], .95), 1e-6)
        print(f"{store:<7} erpq/huey p95 ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
