"""Webhook delivery throughput: erpq against a bare pooled httpx loop, same run.

    python bench/webhooks.py [--deliveries 5000] [--workers 4] [--store sqlite|redis]
                             [--database URL] [--production] [--smoke]

``--production`` runs the default setup (SQLite queue + SQLite database) and
then Redis queue + PostgreSQL database (``--redis-url``, ``--postgres-url``),
one row each. A server database is emptied first: every table in it is
dropped and the schema created again. The default PostgreSQL database is
``erpq_bench`` (created when missing), not the tests' ``test`` database, so the
benchmark and a test run cannot drop each other's tables. ``--smoke`` sends a
handful of webhooks through both setups: it proves the benchmark runs and
measures nothing.

A fast HTTP/1.1 keep-alive receiver runs in a subprocess on 127.0.0.1 (asyncio,
answers every POST with 200). Then, against it, N signed POSTs each way:

1. bare loop: one pooled ``httpx.Client``, W threads, each POSTing its share of
   the same signed bodies (what a hand-written sender would do); its time is
   all of its work;
2. bare Huey + httpx: the same POSTs as plain Huey tasks on the same store
   (nothing recorded, no retries, no guard): the ceiling of any queued sender;
3. erpq: ``WebhookService.queue_delivery`` (a committed delivery row per
   subscriber, then the job) and ``DeliverWebhookJob`` in an embedded runner
   with W workers (SSRF check, claim, sign, POST, record).

Two figures for each queued sender (2 and 3):

- **end to end** (the headline): the workers are already running, as in
  production; the clock starts before the first delivery is queued and stops
  when the last is delivered (for erpq: its row is ``delivered``). Queueing,
  with its database writes and commits, is inside the time, as all of the bare
  loop's work is inside its time;
- **processing only**: all N are queued first, outside the clock; the clock
  runs from starting the workers to the last delivery. It leaves work out, so
  it is not comparable with the loop; it shows where the time goes.

Prints the rates, the ratios and the CPU time of this process per POST /
delivery (the receiver runs in its own process, so it is not counted on either
side). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SMOKE_DELIVERIES = 40

RECEIVER = r'''
import asyncio, sys

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


class Timing:
    """Wall-clock and CPU seconds of this process over a ``with`` block."""

    seconds = cpu = 0.0

    def __enter__(self) -> Timing:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def start_receiver() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def signed_post(client, url: str, secret: str, created, i: int) -> None:
    """One signed POST as a hand-written sender would make it (both baselines)."""
    from erpq.webhooks.delivery import body_of, sign

    body = body_of("deal.created", {"id": i, "name": f"Deal {i}"}, created)
    ts = int(time.time())
    r = client.post(url, content=body, headers={
        "Content-Type": "application/json", "webhook-id": f"msg_{i}",
        "webhook-timestamp": str(ts), "webhook-signature": sign(secret, f"msg_{i}", ts, body)})
    assert r.status_code == 200


def bare_loop(url: str, n: int, workers: int) -> Timing:
    """n signed POSTs from one pooled httpx.Client shared by ``workers`` threads."""
    import httpx

    from erpq.db import utcnow
    from erpq.webhooks.delivery import new_secret

    secret = new_secret()
    client = httpx.Client(limits=httpx.Limits(max_connections=workers * 2), trust_env=False)
    counter = iter(range(n))
    lock = threading.Lock()
    created = utcnow()

    def work() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            signed_post(client, url, secret, created, i)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    with Timing() as timing:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    client.close()
    return timing


def huey_httpx_run(url: str, n: int, workers: int, store: str, redis_url: str,
                   tmp: Path) -> tuple[Timing, Timing]:
    """(end to end, processing only) for n signed POSTs as plain Huey tasks (no
    erpq) on the same store, with ``workers`` thread workers sharing one pooled
    client: what the bare libraries composed can do, the ceiling for any queued sender."""
    import httpx
    from huey import RedisHuey, SqliteHuey
    from huey.consumer import Consumer

    from erpq.db import utcnow
    from erpq.webhooks.delivery import new_secret

    if store == "redis":
        huey = RedisHuey(name=f"benchhttpx{os.getpid()}", url=redis_url, results=False)
    else:
        huey = SqliteHuey(name="bench", filename=str(tmp / "bare-queue.db"), results=False)
    secret, created = new_secret(), utcnow()
    client = httpx.Client(limits=httpx.Limits(max_connections=workers * 2), trust_env=False)
    done = threading.Semaphore(0)

    @huey.task(name="BarePost")
    def bare_post(i):
        signed_post(client, url, secret, created, i)
        done.release()

    class Quiet(Consumer):
        def _set_signal_handlers(self):
            pass

    consumer = Quiet(huey, workers=workers, worker_type="thread", periodic=False, max_delay=1.0,
                     check_worker_health=False)
    # Processing only: everything queued first; the clock runs from starting the workers.
    for i in range(n):
        bare_post(i)
    with Timing() as processing:
        consumer.start()
        for _ in range(n):
            done.acquire()
    # End to end: the workers are running; queueing is inside the clock.
    with Timing() as end_to_end:
        for i in range(n, 2 * n):
            bare_post(i)
        for _ in range(n):
            done.acquire()
    consumer.stop(graceful=True)
    huey.flush()
    client.close()
    return end_to_end, processing


def erpq_run(url: str, n: int, workers: int, store: str, redis_url: str, tmp: Path,
             database_url: str | None = None) -> tuple[Timing, Timing]:
    """(end to end, processing only) for n deliveries through erpq."""
    import sqlalchemy as sa

    from erpq.config import from_dict
    from erpq.models import Tenant, WebhookDelivery
    from erpq.runtime import EmbeddedRunner, Runtime, set_current
    from erpq.webhooks import service

    queue = {"url": "sqlite:///queue.db", "workers": workers}
    if store == "redis":
        queue = {"url": redis_url, "name": f"bench{os.getpid()}", "workers": workers}
    if database_url:
        fresh_database(database_url)
    settings = from_dict({
        "queue": queue, "database": {"url": database_url or "sqlite:///erpq.db"}, "log": {"path": "erpq.log"},
        "webhooks": {"allow_hosts": ["127.0.0.1"]},
    }, source=str(tmp / "config.toml"), base_dir=str(tmp))
    rt = Runtime(settings)
    set_current(rt)
    runner = EmbeddedRunner(rt, workers=workers, periodic=False)
    try:
        with rt.session() as s:
            s.add(Tenant(slug="bench", name="Bench"))
        with rt.session() as s:
            tenant = s.scalar(sa.select(Tenant.id))
            service.create_webhook(s, tenant, url, ["deal.created"], allow=settings.webhooks.allow_hosts)
        svc = service.WebhookService(rt)

        def queue_deliveries(first: int) -> None:
            for i in range(first, first + n):
                svc.queue_delivery("deal.created", {"id": i, "name": f"Deal {i}"}, tenant)

        def wait_delivered(total: int) -> None:
            count = sa.select(sa.func.count()).where(WebhookDelivery.status == "delivered")
            while True:
                with rt.read_session() as s:
                    if s.scalar(count) >= total:
                        return
                time.sleep(0.02)

        # Processing only: all n queued first (rows committed, jobs enqueued), then the runner starts.
        queue_deliveries(0)
        with Timing() as processing:
            runner.start()
            wait_delivered(n)
        # End to end: the runner is running, as in production; queueing is inside the clock.
        with Timing() as end_to_end:
            queue_deliveries(n)
            wait_delivered(2 * n)
        runner.stop()
        with rt.read_session() as s:
            other = s.scalar(sa.select(sa.func.count()).where(WebhookDelivery.status != "delivered"))
        assert other == 0, f"{other} deliveries not delivered"
        if store == "redis":
            rt.huey.storage.flush_all()
        return end_to_end, processing
    finally:
        if runner.running:
            runner.stop()
        set_current(None)
        rt.close()


def fresh_database(url: str) -> None:
    """Drop every table of a server database and create erpq's schema."""
    import sqlalchemy as sa

    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        _create_pg_database(engine.url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for table in reversed(meta.sorted_tables):
                conn.execute(sa.schema.DropTable(table, if_exists=True))
        upgrade(engine)
    finally:
        engine.dispose()


def _create_pg_database(url) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}):
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    finally:
        admin.dispose()



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deliveries", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    p.add_argument("--database", metavar="URL", help="database URL (default: SQLite in a temp dir)")
    p.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/erpq_bench")
    p.add_argument("--production", action="store_true",
                   help="also run Redis queue + PostgreSQL database after the default setup")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_DELIVERIES} webhooks through both setups: proves it runs, measures nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.deliveries, args.production = SMOKE_DELIVERIES, True
    n, workers = args.deliveries, args.workers
    setups = [(args.store, args.database)]
    if args.production:
        setups.append(("redis", args.postgres_url))

    proc, port = start_receiver()
    url = f"http://127.0.0.1:{port}/hook"
    rows = []
    try:
        bare_loop(url, min(500, n), workers)  # warm up the receiver and imports
        for store, database in setups:
            bare = bare_loop(url, n, workers)
            with tempfile.TemporaryDirectory(prefix="erpq-bench-") as tmp:
                composed = huey_httpx_run(url, n, workers, store, args.redis_url, Path(tmp))
                erpq = erpq_run(url, n, workers, store, args.redis_url, Path(tmp), database)
            rows.append((store, database, bare, composed, erpq))
    finally:
        proc.terminate()
        proc.wait()

    print(f"{n} webhooks, {workers} workers/threads, receiver 127.0.0.1:{port}, {os.cpu_count()} CPUs")
    print("end to end = queueing + delivering, workers already running (the headline figure);")
    print("processing only = queued beforehand, outside the clock (leaves work out: not comparable with the loop)")

    def rate(t: Timing) -> str:
        return f"{n / t.seconds:6.0f}/s ({t.seconds:.2f} s, CPU {t.cpu / n * 1000:.2f} ms each)"

    for store, database, bare, (huey_e2e, huey_proc), (erpq_e2e, erpq_proc) in rows:
        db = (database or "sqlite").split(":", 1)[0].split("+", 1)[0]
        print(f"queue {store}, database {db}:")
        print(f"  {'':24} {'END TO END':38} processing only")
        print(f"  {'bare httpx.Client loop':24} {rate(bare):38} (no queue: same as end to end)")
        print(f"  {'bare Huey task + httpx':24} {rate(huey_e2e):38} {rate(huey_proc)}")
        print(f"  {'erpq DeliverWebhookJob':24} {rate(erpq_e2e):38} {rate(erpq_proc)}")
        for label, num, den_e2e, den_proc in [
            ("erpq / bare loop", bare, erpq_e2e, erpq_proc),
            ("erpq / bare Huey+httpx", None, erpq_e2e, erpq_proc),
            ("bare Huey+httpx / loop", bare, huey_e2e, huey_proc),
        ]:
            e2e = (num or huey_e2e).seconds / den_e2e.seconds
            only = (num or huey_proc).seconds / den_proc.seconds
            print(f"  {label:24} {e2e:<38.2f} {only:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
