"""Webhook delivery throughput: erpq against a bare pooled httpx loop, same run.

    python bench/webhooks.py [--deliveries 5000] [--workers 4] [--store sqlite|redis]
                             [--database URL] [--production]

``--production`` runs the default setup (SQLite queue + SQLite database) and
then Redis queue + PostgreSQL database (``--redis-url``, ``--postgres-url``),
one row each. A server database is emptied first: every table in it is
dropped and the schema created again. The default PostgreSQL database is
``erpq_bench`` (created when missing), not the tests' ``test`` database, so the
benchmark and a test run cannot drop each other's tables.

A fast HTTP/1.1 keep-alive receiver runs in a subprocess on 127.0.0.1 (asyncio,
answers every POST with 200). Then, against it:

1. bare: one pooled ``httpx.Client``, N threads, each POSTing its share of the
   same signed bodies (what a hand-written sender would do);
2. erpq: N deliveries queued with ``WebhookService.queue_delivery`` (rows,
   then jobs), then an embedded runner with N workers delivers them all
   (SSRF check, claim, sign, POST, record), timed until the last row is
   ``delivered``.

Also, as a reference: the same POSTs as plain Huey tasks (bare Huey + bare
httpx on the same store, nothing recorded): the ceiling of any queued sender.

Prints the rates, erpq/bare (target >= 0.7) and the CPU time of this process
per POST / per delivery (the receiver runs in its own process, so it is not
counted on either side). Nothing leaves 127.0.0.1.
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


def bare_loop(url: str, n: int, workers: int) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) for n signed POSTs from one pooled
    httpx.Client shared by ``workers`` threads."""
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
    started, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    client.close()
    return elapsed, cpu


def huey_httpx_run(url: str, n: int, workers: int, store: str, redis_url: str, tmp: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) for n signed POSTs as plain Huey tasks (no erpq) on
    the same store, with ``workers`` thread workers sharing one pooled client:
    what the bare libraries composed can do, the ceiling for any queued sender."""
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

    for i in range(n):
        bare_post(i)

    class Quiet(Consumer):
        def _set_signal_handlers(self):
            pass

    consumer = Quiet(huey, workers=workers, worker_type="thread", periodic=False, max_delay=1.0,
                     check_worker_health=False)
    started, cpu = time.perf_counter(), time.process_time()
    consumer.start()
    for _ in range(n):
        done.acquire()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    consumer.stop(graceful=True)
    huey.flush()
    client.close()
    return elapsed, cpu


def erpq_run(url: str, n: int, workers: int, store: str, redis_url: str, tmp: Path,
             database_url: str | None = None) -> tuple[float, float, float]:
    """(seconds to queue n deliveries, seconds for the runner to deliver them,
    CPU seconds of this process while delivering)."""
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
    try:
        with rt.session() as s:
            s.add(Tenant(slug="bench", name="Bench"))
        with rt.session() as s:
            tenant = s.scalar(sa.select(Tenant.id))
            service.create_webhook(s, tenant, url, ["deal.created"], allow=settings.webhooks.allow_hosts)
        svc = service.WebhookService(rt)
        started = time.perf_counter()
        for i in range(n):
            svc.queue_delivery("deal.created", {"id": i, "name": f"Deal {i}"}, tenant)
        queued = time.perf_counter() - started

        def delivered() -> int:
            with rt.read_session() as s:
                return s.scalar(sa.select(sa.func.count()).where(WebhookDelivery.status == "delivered"))

        runner = EmbeddedRunner(rt, workers=workers, periodic=False)
        started, cpu = time.perf_counter(), time.process_time()
        runner.start()
        while delivered() < n:
            time.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        runner.stop()
        with rt.read_session() as s:
            other = s.scalar(sa.select(sa.func.count()).where(WebhookDelivery.status != "delivered"))
        assert other == 0, f"{other} deliveries not delivered"
        if store == "redis":
            rt.huey.storage.flush_all()
        return queued, elapsed, cpu
    finally:
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deliveries", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    p.add_argument("--database", metavar="URL", help="database URL (default: SQLite in a temp dir)")
    p.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/erpq_bench")
    p.add_argument("--production", action="store_true",
                   help="also run Redis queue + PostgreSQL database after the default setup")
    args = p.parse_args()
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
            bare, bare_cpu = bare_loop(url, n, workers)
            with tempfile.TemporaryDirectory(prefix="erpq-bench-") as tmp:
                composed, composed_cpu = huey_httpx_run(url, n, workers, store, args.redis_url, Path(tmp))
                queued, took, cpu = erpq_run(url, n, workers, store, args.redis_url, Path(tmp), database)
            rows.append((store, database, bare, bare_cpu, composed, composed_cpu, queued, took, cpu))
    finally:
        proc.terminate()
        proc.wait()

    print(f"{n} webhooks, {workers} workers/threads, receiver 127.0.0.1:{port}, {os.cpu_count()} CPUs")
    for store, database, bare, bare_cpu, composed, composed_cpu, queued, took, cpu in rows:
        db = (database or "sqlite").split(":", 1)[0].split("+", 1)[0]
        bare_rate, erpq_rate, composed_rate = n / bare, n / took, n / composed
        print(f"queue {store}, database {db}:")
        print(f"  bare httpx.Client loop : {bare_rate:8.0f} POST/s  ({bare:.2f} s, "
              f"CPU {bare_cpu / n * 1000:.3f} ms/POST)")
        print(f"  bare Huey task + httpx : {composed_rate:8.0f} POST/s  ({composed:.2f} s, "
              f"CPU {composed_cpu / n * 1000:.3f} ms/POST; no records, no retries, no guard)  "
              f"= {composed_rate / bare_rate:.2f}x the loop")
        print(f"  erpq delivery          : {erpq_rate:8.0f} deliveries/s  ({took:.2f} s, "
              f"CPU {cpu / n * 1000:.3f} ms/delivery)")
        print(f"  erpq queueing          : {n / queued:8.0f} deliveries/s  ({queued:.2f} s; "
              f"end to end {n / (queued + took):.0f}/s)")
        print(f"  ratio erpq/bare        : {erpq_rate / bare_rate:.2f}x (target >= 0.70x); "
              f"erpq / bare Huey+httpx: {erpq_rate / composed_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
