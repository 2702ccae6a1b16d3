"""Workflow throughput: events through erpq's workflow engine against a bare SQLAlchemy Core loop, same run.

    python bench/crm.py [--events 10000] [--workflows 20] [--workers 2] [--mode runner|drain]
                        [--store sqlite|redis] [--database URL] [--smoke]

The database (default: PostgreSQL ``erpq_bench_crm``, created when missing) is
emptied before each side: every table in it is dropped and erpq's schema
created again. Never point it at a database you care about.

Setup (both sides): one tenant, one user, W active workflows on
``deal.updated``, workflow i with one condition (``stage equals "s<i>"``) and
one notification action (title ``Deal {{ record.title }} reached {{ record.stage }}``
for the record's ``assigned_to``). N events, event k with ``stage "s<k mod W>"``:
every event is tested against all W conditions and matches exactly one
workflow, so each side ends with N notifications.

1. **bare loop**: SQLAlchemy Core on the same database; the workflows are read
   once; per event, evaluate the W conditions in Python and insert the matching
   workflow's notification (title formatted with ``str.format``), one
   transaction per event (an event is a unit of work: nothing is batched
   across events).
2. **erpq**: per event ``events.emit("deal.updated", payload, tenant,
   session=s)`` in its own transaction; after commit the fan-out runs
   ``WorkflowEngine.trigger`` (reads the tenant's active workflows for the
   event, evaluates the conditions, writes the run and its instance and
   enqueues ``ExecuteWorkflowJob``, through the real Huey queue) and every
   other handler (webhooks looks for subscriptions). ``ExecuteWorkflowJob``
   claims the instance, renders the title in the Jinja2 sandbox, inserts the
   notification (de-duplicated) with the step recorded, and completes the run.

   ``--mode runner`` (default): an embedded runner with ``--workers`` thread
   workers is already running when the clock starts; the main thread emits
   the events while the workers execute the jobs. ``--mode drain``: the main
   thread emits all events, then executes the queued jobs itself (no runner).

Both clocks run end to end: from before the first event to the last
notification committed (for erpq: every run ``completed``). Prints events/s
for each, erpq / bare (target: at least 0.5) and CPU ms per event of this
process (the database server's CPU is not counted on either side).
``--smoke`` runs a handful of events through both sides: it proves the
benchmark runs and measures nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

SMOKE_EVENTS = 40
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/erpq_bench_crm"
TITLE = "Deal {{ record.title }} reached {{ record.stage }}"
BARE_TITLE = "Deal {title} reached {stage}"


class Timing:
    def __enter__(self) -> Timing:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def definitions(n_workflows: int) -> list[dict]:
    return [{"name": f"stage-{i}", "trigger": "deal.updated",
             "conditions": [{"field": "stage", "op": "equals", "value": f"s{i}"}],
             "actions": [{"type": "notify", "title": TITLE}]} for i in range(n_workflows)]


def payload(k: int, n_workflows: int, user_id: int) -> dict:
    return {"id": k + 1, "title": f"Deal {k + 1}", "stage": f"s{k % n_workflows}", "amount": 100 + k,
            "assigned_to": user_id}


def fresh_database(url: str) -> None:
    """Drop every table of the database and create erpq's schema."""
    import sqlalchemy as sa

    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            admin = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                if not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                   {"n": engine.url.database}):
                    conn.exec_driver_sql(f'CREATE DATABASE "{engine.url.database}"')
            admin.dispose()
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for table in reversed(meta.sorted_tables):
                conn.execute(sa.schema.DropTable(table, if_exists=True))
        upgrade(engine)
    finally:
        engine.dispose()


def _seed(s, n_workflows: int) -> tuple[int, int]:
    """(tenant id, user id) with the workflows saved (an erpq session)."""
    from erpq.crm import workflows
    from erpq.models import Tenant, User

    tenant = Tenant(slug="bench", name="Bench")
    s.add(tenant)
    s.flush()
    user = User(tenant_id=tenant.id, name="Ann", email="ann@example.com")
    s.add(user)
    s.flush()
    for d in definitions(n_workflows):
        workflows.save(s, tenant.id, workflows.validate(d))
    return tenant.id, user.id


# ---------------------------------------------------------------- bare


BARE_OPS = {
    "equals": lambda got, want: got == want,
    "not_equals": lambda got, want: got != want,
    "gt": lambda got, want: got is not None and got > want,
    "lt": lambda got, want: got is not None and got < want,
    "in": lambda got, want: got in want,
}


def bare_run(url: str, n: int, n_workflows: int) -> Timing:
    """The hand-written loop: evaluate the conditions, insert the notifications, Core only."""
    import sqlalchemy as sa

    from erpq.crm.models import Notification, Workflow
    from erpq.db import make_engine, make_sessionmaker

    fresh_database(url)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            tenant_id, user_id = _seed(s, n_workflows)
        notifications = Notification.__table__
        wf = Workflow.__table__
        events = [payload(k, n_workflows, user_id) for k in range(n)]
        with Timing() as t:
            with engine.connect() as conn:
                flows = conn.execute(sa.select(wf.c.id, wf.c.conditions, wf.c.actions)
                                     .where(wf.c.tenant_id == tenant_id, wf.c.trigger_event == "deal.updated",
                                            wf.c.is_active.is_(True)).order_by(wf.c.id)).all()
                for k, record in enumerate(events):
                    rows = []
                    for wf_id, conditions, _actions in flows:
                        if all(BARE_OPS[c["op"]](record.get(c["field"]), c["value"]) for c in conditions):
                            rows.append({"tenant_id": tenant_id, "user_id": record["assigned_to"],
                                         "kind": "workflow",
                                         "title": BARE_TITLE.format(**record), "body": None,
                                         "data": {"workflow_id": wf_id, "record_id": record["id"]},
                                         "dedupe_key": f"bare:{k}:{wf_id}"})
                    if rows:
                        conn.execute(notifications.insert(), rows)
                    conn.commit()
        with engine.connect() as conn:
            got = conn.scalar(sa.select(sa.func.count()).select_from(notifications))
        assert got == n, f"bare loop: {got} notifications, expected {n}"
        return t
    finally:
        engine.dispose()


# ---------------------------------------------------------------- erpq


def erpq_run(url: str, n: int, n_workflows: int, workers: int, mode: str, store: str, redis_url: str,
             tmp: Path) -> Timing:
    import sqlalchemy as sa

    from erpq import events
    from erpq.config import from_dict
    from erpq.crm.models import Notification, WorkflowRun
    from erpq.runtime import EmbeddedRunner, Runtime, set_current

    fresh_database(url)
    queue = {"url": "sqlite:///queue.db", "workers": workers}
    if store == "redis":
        queue = {"url": redis_url, "name": f"benchcrm{os.getpid()}", "workers": workers}
    settings = from_dict({"queue": queue, "database": {"url": url}, "log": {"path": "erpq.log"}},
                         source=str(tmp / "config.toml"), base_dir=str(tmp))
    rt = Runtime(settings)
    set_current(rt)
    runner = EmbeddedRunner(rt, workers=workers, periodic=False)
    try:
        with rt.session() as s:
            tenant_id, user_id = _seed(s, n_workflows)
        records = [payload(k, n_workflows, user_id) for k in range(n)]
        done_q = sa.select(sa.func.count()).where(WorkflowRun.status == "completed")

        def wait_completed() -> None:
            while True:
                with rt.read_session() as s:
                    if s.scalar(done_q) >= n:
                        return
                time.sleep(0.02)

        if mode == "runner":
            runner.start()
        with Timing() as t:
            for record in records:
                with rt.session() as s:
                    events.emit("deal.updated", record, tenant_id, session=s)
            if mode == "drain":
                while rt.huey.pending_count():
                    task = rt.huey.dequeue()
                    if task is None:
                        break
                    rt.huey.execute(task)
                rt.huey.storage.release_pending()
            wait_completed()
        if runner.running:
            runner.stop()
        with rt.read_session() as s:
            got = s.scalar(sa.select(sa.func.count()).select_from(Notification))
            runs = s.scalar(sa.select(sa.func.count()).select_from(WorkflowRun))
        assert got == n and runs == n, f"erpq: {got} notifications and {runs} runs, expected {n}"
        if store == "redis":
            rt.huey.storage.flush_all()
        return t
    finally:
        if runner.running:
            runner.stop()
        set_current(None)
        rt.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000, help="events to trigger (default 10000)")
    p.add_argument("--workflows", type=int, default=20, help="active workflows on the event (default 20)")
    p.add_argument("--workers", type=int, default=2, help="runner thread workers in --mode runner (default 2)")
    p.add_argument("--mode", choices=["runner", "drain"], default="runner",
                   help="runner: an embedded runner executes jobs while events are emitted; "
                        "drain: emit all, then execute the queue in this thread")
    p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite", help="the queue's store")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="Redis for --store redis")
    p.add_argument("--database", metavar="URL", default=DEFAULT_DB,
                   help=f"database emptied and used by both sides (default {DEFAULT_DB})")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_EVENTS} events through both sides: proves it runs, measures nothing")
    args = p.parse_args(argv)
    n = SMOKE_EVENTS if args.smoke else args.events
    w = args.workflows
    with tempfile.TemporaryDirectory(prefix="erpq-bench-crm-") as tmp:
        bare = bare_run(args.database, n, w)
        erpq = erpq_run(args.database, n, w, args.workers, args.mode, args.store, args.redis_url, Path(tmp))
    db = args.database.split(":", 1)[0].split("+", 1)[0]
    how = (f"embedded runner, {args.workers} thread workers" if args.mode == "runner"
           else "queue drained in the emitting thread")
    print(f"{n} events x {w} active workflows (one condition, one notification each; one match per event), "
          f"database {db}, queue {args.store}, {how}, {os.cpu_count()} CPUs")
    print("end to end: first event emitted -> last notification committed")

    def rate(t: Timing) -> str:
        return f"{n / t.seconds:7.0f} events/s ({t.seconds:.2f} s, CPU {t.cpu / n * 1000:.2f} ms/event)"

    print(f"  bare Core loop        {rate(bare)}")
    print(f"  erpq workflow engine  {rate(erpq)}")
    ratio = bare.seconds / erpq.seconds
    print(f"  erpq / bare           {ratio:.2f}x (target >= 0.5x){'' if ratio >= 0.5 else '  BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
