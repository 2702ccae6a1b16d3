"""``erpq``: the scriptable CLI, modelled on a web ERP's artisan commands.

Every command is thin over ``erpq.ops``. Read commands take ``--json`` and then
print a JSON array of objects (field names documented in README.md; times ISO
8601 UTC). Errors are one line on stderr: exit code 2 for bad config or usage,
1 for an operation that could not be done.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from . import config as config_mod
from .cli_support import (
    CliError,
    Group,
    OneLineParser,
    bounded_text,
    check_argv,
    count_int,
    finite_float,
    flag_parents,
    id_int,
    ops_for,
    out,
    parse_json_arg,
    positive_int,
    print_json,
)
from .config import ConfigError

Handler = Callable[[argparse.Namespace, object], int]


# ====================================================================== plumbing


def _runtime(args):
    from .runtime import Runtime, set_current

    settings = config_mod.load(getattr(args, "config", None))
    refuse_new_database(settings)
    rt = Runtime(settings, upgrade_sqlite=not getattr(args, "no_auto_upgrade", False))
    set_current(rt)
    return rt


def refuse_new_database(settings) -> None:
    """With no config file found (the packaged defaults in force), a command must not
    create the default SQLite database in whatever directory it was run from: only
    ``erpq db upgrade`` (and ``erpq-console``, the documented first start) create it.
    A config file that names a SQLite database lets any command create it, as before."""
    missing = config_mod.missing_default_database(settings)
    if missing is not None:
        raise CliError(f"no database: no config file found (--config, $ERPQ_CONFIG, ./config.toml), and "
                       f"the default database {missing} does not exist; create it with 'erpq db upgrade' "
                       f"(or start erpq-console), or give --config PATH", code=2)


def _ops(args, rt):
    return ops_for(args, rt)


_out = out


# ====================================================================== schedule


def cmd_schedule_list(args, rt) -> int:
    entries = _ops(args, rt).schedule()
    if args.json:
        keys = ("name", "expression", "description", "paused", "last_run_at", "last_status",
                "last_duration_s", "next_run_at", "running_since", "lock_holder")
        print_json([{k: e.to_dict()[k] for k in keys} for e in entries])
        return 0
    return _out(args, entries, ["name", "expression", "description", "paused", "last_run_at",
                                "last_status", "last_duration_s", "next_run_at"])


def cmd_schedule_explain(args, rt) -> int:
    explanation = _ops(args, rt).explain(args.name, last=args.last)
    if args.json:
        print_json(explanation.to_dict())
        return 0
    print("\n".join(explanation.lines()))
    return 0


def cmd_schedule_run(args, rt) -> int:
    task_id = _ops(args, rt).trigger(args.name)
    print(f"Running scheduled command: {args.name} (job {task_id} enqueued)")
    return 0


def cmd_schedule_pause(args, rt) -> int:
    _ops(args, rt).pause(args.name)
    print(f"Paused {args.name}")
    return 0


def cmd_schedule_resume(args, rt) -> int:
    _ops(args, rt).resume(args.name)
    print(f"Resumed {args.name}")
    return 0


# ====================================================================== queue


def cmd_queue_work(args, rt) -> int:
    if args.once and args.burst:
        raise CliError("--once or --burst, not both", code=2)
    if args.burst:
        from .runtime.runner import work_burst

        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            processed, failed = work_burst(rt, workers=args.workers or 1, stop=stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print(f"Processed {processed} job(s), {failed} failed" + (" (stopped early)" if stop.is_set() else ""))
        return 1 if failed else 0
    if args.once:
        from .runtime.runner import work_once

        result = work_once(rt)
        print(result or "No job waiting.")
        if result and _last_run_failed(rt, result):
            return 1  # the job failed (or will retry): a script must see it
        return 0
    from .runtime import EmbeddedRunner

    runner = EmbeddedRunner(rt, workers=args.workers, periodic=not args.no_periodic)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    runner.start()
    metrics = None
    if rt.settings.runner.metrics_port:
        from .metrics import serve

        metrics = serve(_ops(args, rt), rt.settings.runner.metrics_port, rt.settings.runner.metrics_host,
                        runner_id=rt.runner_id)
    print(f"erpq runner {rt.runner_id}: {runner.workers} workers, periodic "
          f"{'off' if args.no_periodic else 'on'}, queue {rt.queue_label}. Ctrl+C stops.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("Stopping: waiting for running jobs...", flush=True)
        if metrics is not None:
            metrics.shutdown()
        runner.stop()
    return 0


def _last_run_failed(rt, line: str) -> bool:
    """Whether the job ``work_once`` just processed (named in ``line``) failed."""
    import sqlalchemy as sa

    from .models import JobRun

    task_id = line.split(" (")[0].rsplit(" ", 1)[-1]
    with rt.read_session() as s:
        status = s.scalar(sa.select(JobRun.status).where(JobRun.task_id == task_id).order_by(JobRun.id.desc()))
    return status in ("failed", "retrying")


def cmd_queue_list(args, rt) -> int:
    ops = _ops(args, rt)
    if args.by_tenant:
        return _out(args, ops.queue_by_tenant(), ["tenant_id", "tenant", "pending", "running", "oldest_age_s",
                                                   "done_last_5m", "per_minute"])
    states = [s for s in ("pending", "scheduled", "running") if getattr(args, s)] or ["pending", "scheduled", "running"]
    items = []
    for state in states:
        items.extend(getattr(ops, state)(offset=args.offset, limit=args.limit, search=args.search).items)
    if not args.json:
        counts = ops.queue_counts()
        print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return _out(args, items, ["id", "task_name", "state", "args_summary", "enqueued_at", "eta", "runner", "started_at"])


def cmd_queue_failed(args, rt) -> int:
    ops = _ops(args, rt)
    if args.clusters:
        return _out(args, ops.failure_clusters(limit=args.limit, task=args.task),
                    ["task_name", "exception_type", "message", "count", "first_seen", "last_seen"])
    page = ops.failed(offset=args.offset, limit=args.limit, task=args.task, search=args.search)
    if not args.json:
        print(f"{page.total} failed job(s) awaiting action")
    return _out(args, page.items, ["id", "task_name", "exception_type", "exception", "attempts", "reason", "failed_at"])


def cmd_queue_show(args, rt) -> int:
    info = _ops(args, rt).failed_detail(args.id)
    if args.json:
        print_json(info.to_dict())
        return 0
    d = info.to_dict()
    for key in ("id", "task_id", "task_name", "reason", "attempts", "failed_at", "tenant_id", "retried_at"):
        print(f"{key:>12}: {d[key]}")
    print(f"{'arguments':>12}: {json.dumps(d['args'])}")
    print(f"{'exception':>12}: {d['exception_type']}: {d['exception']}")
    print()
    print(d["traceback"] or "(no traceback)")
    return 0


def cmd_queue_retry(args, rt) -> int:
    ops = _ops(args, rt)
    if args.ids and (args.all or args.task or args.search):
        raise CliError("give failed job ids, or --all [--task NAME] [--search TEXT], not both", code=2)
    if (args.task or args.search) and not args.all:
        raise CliError("--task and --search select with --all (erpq queue retry --all --task NAME)", code=2)
    if args.all:
        n = ops.retry_all(task=args.task, search=args.search)
        print(f"Retried {n} failed job(s)")
        return 0
    if not args.ids:
        raise CliError("give failed job ids, or --all", code=2)
    new = ops.retry(args.ids)
    print(f"Retried {len(new)} failed job(s): new job id(s) {' '.join(new)}")
    return 0


def cmd_queue_forget(args, rt) -> int:
    n = _ops(args, rt).forget(args.ids)
    print(f"Forgot {n} failed job(s) (restorable with 'erpq queue restore {' '.join(map(str, args.ids))}')")
    return 0


def cmd_queue_restore(args, rt) -> int:
    n = _ops(args, rt).restore(ids=args.ids)
    print(f"Restored {n} failed job(s)")
    return 0


def cmd_queue_flush(args, rt) -> int:
    ops = _ops(args, rt)
    count = ops.count_failed(task=args.task)
    if not args.yes and not sys.stdin.isatty():
        raise CliError("refusing to flush without a terminal to confirm on: add --yes", code=2)
    if not args.yes:
        answer = input(f"Flush {count} failed job(s)? Type 'flush' to confirm: ")
        if answer.strip() != "flush":
            print("Not flushed.")
            return 1
    n, _mark = ops.flush_failed(task=args.task)
    print(f"Flushed {n} failed job(s)")
    return 0


def cmd_queue_clear(args, rt) -> int:
    ops = _ops(args, rt)
    ops.check_writable("queue.clear")  # refused before asking anything
    what = f"pending job(s) of {args.task}" if args.task else "pending job(s)"
    if not args.yes and not sys.stdin.isatty():
        raise CliError("refusing to clear the queue without a terminal to confirm on: add --yes", code=2)
    if not args.yes:
        count = ops.count_pending(task=args.task)
        answer = input(f"Remove {count} {what} from the queue (not restorable)? Type 'clear' to confirm: ")
        if answer.strip() != "clear":
            print("Not cleared.")
            return 1
    n = ops.clear_queue(task=args.task)
    print(f"Cleared {n} {what}")
    return 0


def cmd_queue_prune(args, rt) -> int:
    n = _ops(args, rt).prune_failed(args.hours)
    print(f"Pruned {n} failed job(s) older than {args.hours:g} hour(s)")
    return 0


def cmd_queue_dispatch(args, rt) -> int:
    args_list: list = []
    kwargs: dict = {}
    if args.args:
        data = parse_json_arg(args.args, "--args", rt.settings.queue.max_args_bytes)
        if isinstance(data, list):
            args_list = data
        elif isinstance(data, dict) and set(data) <= {"args", "kwargs"} and data:
            if not isinstance(data.get("args", []), list) or not isinstance(data.get("kwargs", {}), dict):
                raise CliError('--args: "args" must be a JSON array and "kwargs" a JSON object')
            args_list, kwargs = list(data.get("args", [])), dict(data.get("kwargs", {}))
        elif isinstance(data, dict):
            kwargs = data
        else:
            raise CliError("--args: expected a JSON array (positional), an object (keyword) "
                           "or {\"args\": [...], \"kwargs\": {...}}")
    task_id = _ops(args, rt).dispatch(args.task, args_list, kwargs, key=args.key)
    print(f"Dispatched {args.task}: job {task_id}" + (f" (key {args.key})" if args.key else ""))
    return 0


def cmd_queue_cancel(args, rt) -> int:
    _ops(args, rt).cancel_job(args.job_id)
    print(f"Cancelled job {args.job_id}")
    return 0


def cmd_queue_recover(args, rt) -> int:
    n = _ops(args, rt).recover()
    print(f"Recovered {n} job(s) from dead runners")
    return 0


def cmd_event_emit(args, rt) -> int:
    payload = parse_json_arg(args.data, "--data") if args.data else {}
    if not isinstance(payload, dict):
        raise CliError("--data: must be a JSON object, e.g. '{\"id\": 7}'")
    outcome = _ops(args, rt).emit_event(args.name, payload, args.tenant)
    print(f"Emitted {args.name} for tenant {args.tenant} (event {outcome.event_id}): "
          f"{outcome.handlers} handler(s)")
    for line in outcome.effects:
        print(f"  {line}")
    return 0


# ====================================================================== history, batches, runners, locks


def cmd_runs(args, rt) -> int:
    page = _ops(args, rt).runs(offset=args.offset, limit=args.limit, task=args.task, status=args.status,
                               search=args.search)
    if args.status == "missed":  # what did not happen: the tick and the reason
        return _out(args, page.items, ["id", "task_name", "tick", "status", "error"])
    return _out(args, page.items, ["id", "task_name", "kind", "status", "args_summary", "started_at",
                                   "duration_s", "runner", "error"])


def cmd_batch_list(args, rt) -> int:
    page = _ops(args, rt).batches(limit=args.limit, active_only=not args.all)
    return _out(args, page.items, ["id", "name", "kind", "total", "done", "failed", "progress", "created_at",
                                   "finished_at", "cancelled_at"])


def cmd_batch_cancel(args, rt) -> int:
    _ops(args, rt).cancel_batch(args.id)
    print(f"Cancelled batch {args.id}: its jobs not yet started will be skipped")
    return 0


def cmd_runner_list(args, rt) -> int:
    runners = _ops(args, rt).runners(include_stopped=args.all)
    if not args.all:  # only the living: a silent runner not yet marked stopped is dead too
        runners = [r for r in runners if r.alive]
    return _out(args, runners,
                ["id", "kind", "workers", "alive", "heartbeat_age_s", "current_jobs", "started_at", "stopped_at"])


def cmd_lock_list(args, rt) -> int:
    return _out(args, _ops(args, rt).locks(), ["name", "holder", "age_s", "expires_at", "stale"])


def cmd_lock_release(args, rt) -> int:
    _ops(args, rt).release_lock(args.name, force=args.force)
    print(f"Released lock {args.name}")
    return 0


# ====================================================================== health, db, tenants, users, audit, log


def cmd_db_upgrade(args, _rt) -> int:
    from .db import current_revision, head_revision, make_engine, upgrade
    from .runtime.core import redact_url

    settings = config_mod.load(args.config)
    engine = make_engine(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    engine.dispose()
    where = redact_url(settings.database.url)
    if before == after:
        print(f"{where}: already at revision {after} (head {head_revision()})")
    else:
        print(f"{where}: upgraded from {before or 'empty'} to {after}")
    return 0


def cmd_db_current(args, _rt) -> int:
    from .db import current_revision, head_revision, make_engine

    settings = config_mod.load(args.config)
    path = settings.sqlite_path(settings.database.url)
    if path is not None and not path.exists():  # a question creates nothing
        print(f"current: none (no database at {path.absolute()}: 'erpq db upgrade' creates it); "
              f"head: {head_revision()}")
        return 0
    engine = make_engine(settings.database_url, busy_timeout_s=settings.database.busy_timeout_s)
    print(f"current: {current_revision(engine) or 'none'}; head: {head_revision()}")
    engine.dispose()
    return 0


def cmd_tenant_add(args, rt) -> int:
    t = _ops(args, rt).add_tenant(args.slug, args.name)
    print(f"Added tenant {t.slug} (id {t.id})")
    return 0


def cmd_tenant_list(args, rt) -> int:
    return _out(args, _ops(args, rt).tenants(), ["id", "slug", "name", "is_active", "created_at"])


def cmd_user_add(args, rt) -> int:
    u = _ops(args, rt).add_user(args.tenant, args.name, args.email)
    print(f"Added user {u.name} (id {u.id}) to tenant {u.tenant}")
    return 0


def cmd_user_list(args, rt) -> int:
    return _out(args, _ops(args, rt).users(args.tenant), ["id", "tenant", "name", "email", "is_active"])


def cmd_audit(args, rt) -> int:
    page = _ops(args, rt).audit_log(limit=args.limit)
    return _out(args, page.items, ["at", "actor", "client", "source", "action", "target", "command"])


def cmd_log(args, rt) -> int:
    ops = _ops(args, rt)
    path = rt.settings.path(rt.settings.log.path)
    if not path.exists():
        print(f"erpq: no log file at {path} (a runner under systemd or supervisord, or with "
              f"log.output = \"stderr\", logs to stderr: journalctl -u erpq-runner, supervisorctl tail)",
              file=sys.stderr)
        return 0
    for line in ops.log_tail(args.lines):
        print(line)
    if not args.follow:
        return 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.seek(0, os.SEEK_END)
        try:
            while True:
                line = fh.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.3)
        except KeyboardInterrupt:
            return 0


def cmd_deploy(args, _rt) -> int:
    from .deploy import render

    print(render(args.kind, config=args.config, split=args.split, workers_procs=args.worker_processes,
                 user=args.user), end="")
    return 0


def cmd_bench_queue(args, _rt) -> int:
    from .bench import run_fairness_bench, run_queue_bench

    jobs = 200 if args.smoke else args.jobs
    if args.tenants:
        return run_fairness_bench(jobs=jobs, workers=args.workers, tenants=args.tenants, stores=args.store,
                                  redis_url=args.redis_url, rounds=1 if args.smoke else 2)
    return run_queue_bench(jobs=jobs, workers=args.workers, stores=args.store, redis_url=args.redis_url)


# ====================================================================== parser


def _schedule_group(groups, common) -> None:
    g = Group(groups, common, "schedule", "periodic tasks: list, run now, pause, resume")
    g.cmd("list", cmd_schedule_list, "every periodic task with last and next run", json=True)
    for name, fn, text in (("run", cmd_schedule_run, "run a periodic task now"),
                           ("pause", cmd_schedule_pause, "stop a periodic task firing (persisted)"),
                           ("resume", cmd_schedule_resume, "let a paused periodic task fire again")):
        g.cmd(name, fn, text).add_argument("name", help="task name, e.g. erp:check-system-health")
    c = g.cmd("explain", cmd_schedule_explain, "why a periodic task did or did not fire", json=True)
    c.add_argument("name", help="task name, e.g. erp:check-system-health")
    c.add_argument("--last", type=int, default=10, help="ticks to show (default 10)")


def _queue_group(groups, common) -> None:
    g = Group(groups, common, "queue", "jobs: work, list, failed, retry, forget, flush, clear, dispatch")
    c = g.cmd("work", cmd_queue_work, "run the scheduler and workers in the foreground")
    c.add_argument("--once", action="store_true",
                   help="process one waiting job and exit (1 when it failed)")
    c.add_argument("--burst", action="store_true",
                   help="process jobs until none is waiting, then exit (1 when any failed); "
                        "periodic tasks are not fired; --workers defaults to 1")
    c.add_argument("--workers", type=positive_int, default=None, help="worker threads (default: queue.workers)")
    c.add_argument("--no-periodic", action="store_true", help="do not fire periodic tasks from this runner")
    c = g.cmd("list", cmd_queue_list, "pending, scheduled and running jobs", json=True, paged=True)
    for state in ("pending", "scheduled", "running"):
        c.add_argument(f"--{state}", action="store_true", help=f"only {state} jobs")
    c.add_argument("--search", help="only jobs whose task, arguments or id contain this text")
    c.add_argument("--by-tenant", action="store_true",
                   help="per tenant: pending, running, oldest pending age, jobs done in the last 5 minutes")
    c = g.cmd("failed", cmd_queue_failed, "failed jobs awaiting action", json=True, paged=True)
    c.add_argument("--task", help="only this task")
    c.add_argument("--search", help="only failures whose task, error or id contain this text")
    c.add_argument("--clusters", action="store_true", help="group by task, exception and normalised message")
    g.cmd("show", cmd_queue_show, "one failed job with arguments and traceback", json=True).add_argument(
        "id", type=id_int, help="failed job id (see 'erpq queue failed')")
    c = g.cmd("retry", cmd_queue_retry, "re-enqueue failed jobs as new attempts")
    c.add_argument("ids", type=id_int, nargs="*", metavar="ID", help="failed job ids")
    c.add_argument("--all", action="store_true", help="every failed job (of --task)")
    c.add_argument("--task", help="with --all: only this task")
    c.add_argument("--search", help="with --all: only failures whose task, exception or message contain TEXT")
    g.cmd("forget", cmd_queue_forget, "drop failed jobs (restorable for retention.undo_minutes)").add_argument(
        "ids", type=id_int, nargs="+", metavar="ID", help="failed job ids")
    g.cmd("restore", cmd_queue_restore, "bring back forgotten or flushed failed jobs").add_argument(
        "ids", type=id_int, nargs="+", metavar="ID", help="failed job ids")
    c = g.cmd("flush", cmd_queue_flush, "drop every failed job (restorable for retention.undo_minutes)")
    c.add_argument("--task", help="only this task")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c = g.cmd("clear", cmd_queue_clear, "remove every pending job (not scheduled or running ones); "
              "asks first; not restorable")
    c.add_argument("--task", help="only jobs of this task")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    g.cmd("prune-failed", cmd_queue_prune, "delete failed jobs older than N hours").add_argument(
        "--hours", type=finite_float(0, 876_000), required=True, help="age in hours (0 to 876000)")
    c = g.cmd("dispatch", cmd_queue_dispatch, "enqueue any registered job by name")
    c.add_argument("task", type=bounded_text(128), help="job name (see 'erpq schedule list' for periodic tasks)")
    c.add_argument("--args", help='JSON: [positional], {"keyword": ...} or {"args": [...], "kwargs": {...}}')
    c.add_argument("--key", help="idempotency key: while its job is pending, running or finished less than "
                                 "queue.key_ttl_s ago, the same key dispatches nothing (prints that job's id)")
    g.cmd("cancel", cmd_queue_cancel, "remove a pending or scheduled job").add_argument("job_id", help="job id")
    g.cmd("recover", cmd_queue_recover, "re-enqueue the work of dead runners now")


def _fleet_groups(groups, common) -> None:
    json_flag, paging = flag_parents()
    c = groups.add_parser("runs", help="run history, newest first", parents=[common, json_flag, paging])
    c.set_defaults(handler=cmd_runs)
    c.add_argument("--task", help="only this task")
    c.add_argument("--status", help="success, failed, retrying, skipped, missed (ticks not run, with the "
                                    "reason), running, enqueued, ...")
    c.add_argument("--search", help="only runs whose task, arguments, id or error contain this text")

    g = Group(groups, common, "batch", "groups of jobs with progress")
    c = g.cmd("list", cmd_batch_list, "batches in progress (--all: every batch)", json=True)
    c.add_argument("--all", action="store_true", help="finished and cancelled batches too")
    c.add_argument("--limit", type=count_int, default=50, help="rows to show (default 50)")
    g.cmd("cancel", cmd_batch_cancel, "cancel a batch: jobs not yet started are skipped").add_argument(
        "id", help="batch id")

    g = Group(groups, common, "runner", "runners and their heartbeats")
    g.cmd("list", cmd_runner_list, "living runners (--all: stopped and silent ones too)", json=True).add_argument(
        "--all", action="store_true", help="stopped and silent (dead) runners too")

    g = Group(groups, common, "lock", "periodic-task locks")
    g.cmd("list", cmd_lock_list, "locks held", json=True)
    c = g.cmd("release", cmd_lock_release, "release a stale lock")
    c.add_argument("name", help="lock name (see 'erpq lock list')")
    c.add_argument("--force", action="store_true", help="release even if the holder is alive")

    c = groups.add_parser("log", help="the log tail ('Running scheduled command', 'Processing job')",
                          parents=[common])
    c.set_defaults(handler=cmd_log)
    c.add_argument("-n", "--lines", type=count_int, default=50, help="lines to show (default 50)")
    c.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def _admin_groups(groups, common) -> None:
    json_flag, _ = flag_parents()
    g = Group(groups, common, "db", "database schema")
    g.cmd("upgrade", cmd_db_upgrade, "create or upgrade the schema", runtime=False)
    g.cmd("current", cmd_db_current, "show the schema revision", runtime=False)

    g = Group(groups, common, "tenant", "tenants")
    c = g.cmd("add", cmd_tenant_add, "add a tenant")
    c.add_argument("slug", help="lowercase letters, digits and '-'")
    c.add_argument("--name", type=bounded_text(255), help="display name (default: the slug)")
    g.cmd("list", cmd_tenant_list, "list tenants", json=True)

    g = Group(groups, common, "user", "users")
    c = g.cmd("add", cmd_user_add, "add a user to a tenant")
    c.add_argument("name", type=bounded_text(255), help="the user's name")
    c.add_argument("--tenant", required=True, help="slug or id")
    c.add_argument("--email", type=bounded_text(255), help="the user's address (reminders and notifications are mailed to it)")
    g.cmd("list", cmd_user_list, "list users", json=True).add_argument("--tenant", help="slug or id")

    g = Group(groups, common, "event", "emit business events (as the application would)")
    c = g.cmd("emit", cmd_event_emit, "emit an event to its handlers (webhooks, workflows, ...)")
    c.add_argument("name", help="event name, e.g. deal.created")
    c.add_argument("--tenant", required=True, help="slug or id")
    c.add_argument("--data", help="the payload, a JSON object")

    c = groups.add_parser("audit", help="operator audit log", parents=[common, json_flag])
    c.set_defaults(handler=cmd_audit)
    c.add_argument("--limit", type=count_int, default=50, help="rows to show (default 50)")

    c = groups.add_parser("deploy", help="print a systemd unit or Supervisor program for this install",
                          parents=[common])
    c.set_defaults(handler=cmd_deploy, needs_runtime=False)
    c.add_argument("kind", choices=["systemd", "supervisor"], help="which file to print")
    c.add_argument("--split", action="store_true",
                   help="one scheduler runner plus worker runners with periodic tasks off")
    c.add_argument("--worker-processes", type=int, default=2, help="with --split: worker processes (default 2)")
    c.add_argument("--user", help="run as this (existing) user (default: the user running this command)")

    g = Group(groups, common, "bench", "benchmarks against the bare libraries")
    c = g.cmd("queue", cmd_bench_queue, "no-op jobs through bare Huey and through erpq, jobs/s and ratio",
              runtime=False)
    c.add_argument("--jobs", type=positive_int, default=20_000, help="jobs per side (default 20000)")
    c.add_argument("--workers", type=positive_int, default=4, help="worker threads (default 4)")
    c.add_argument("--store", action="append", choices=["sqlite", "redis"], help="default: both")
    c.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="Redis for the redis store")
    c.add_argument("--tenants", type=int, default=0,
                   help="compare erpq with queue.fair off and on, jobs spread over this many tenants")
    c.add_argument("--smoke", action="store_true", help="200 jobs: only check that it runs")


def _capability_groups(groups, common) -> None:
    """Mount each capability's CLI group; a capability that fails to load is a loud error."""
    from . import capability

    for cap in capability.load_all():
        if cap.cli:
            cap.resolve(cap.cli)(groups, common)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default: $ERPQ_CONFIG, ./config.toml, built-in defaults)")
    common.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                        help="refuse every action (look without touching)")
    p = OneLineParser(prog="erpq", parents=[common],
                                description="Operate erpq: schedule, queue, failed jobs, health, tenants.")
    p.add_argument("--version", action="version", version=f"erpq {_version()}")
    groups = p.add_subparsers(dest="group", metavar="COMMAND", required=True)
    from .observe_cli import register as _observe_groups

    for add in (_schedule_group, _queue_group, _fleet_groups, _admin_groups, _observe_groups, _capability_groups):
        add(groups, common)
    return p


def _unreachable(exc: Exception, args) -> str | None:
    """A one-line message when the database or the queue store cannot be reached
    (the URL shown without its password), else None."""
    import sqlite3

    import sqlalchemy.exc

    from .runtime.core import redact_url

    try:
        import redis
    except ImportError:  # not installed (erpq[redis]): no Redis error to recognise
        redis = None

    try:
        settings = config_mod.load(getattr(args, "config", None))
    except ConfigError:
        return None
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return f"cannot use the database {redact_url(settings.database.url)}: {first}"
    if redis is not None and isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach the queue store {redact_url(settings.queue.url)}: {first}"
    if isinstance(exc, sqlite3.OperationalError):  # a SQLite queue file: locked, full, unreadable
        return f"cannot use the queue store {settings.queue.url}: {first}"
    return None


def _version() -> str:
    from . import __version__

    return __version__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    from .capability import CapabilityError

    try:
        parser = build_parser()
    except CapabilityError as exc:
        print(f"erpq: error: {exc}", file=sys.stderr)
        return 2
    try:  # shell completion: eval "$(register-python-argcomplete erpq)"
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:
        pass
    try:
        check_argv(sys.argv[1:] if argv is None else argv)
    except CliError as exc:
        print(f"erpq: error: {exc}", file=sys.stderr)
        return exc.code
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    rt = None
    try:
        if getattr(args, "needs_runtime", True):
            rt = _runtime(args)
        return args.handler(args, rt) or 0
    except BrokenPipeError:
        # Piped into head: the reader left. End quietly, as cat does (128 + SIGPIPE).
        _silence_stdout()
        return 141
    except ConfigError as exc:
        print(f"erpq: config error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"erpq: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import sqlalchemy.exc

        from .db import DatabaseUnusable
        from .ops import OpsError
        from .runtime import SchemaOutOfDate, UnknownTask

        if isinstance(exc, OpsError | UnknownTask | SchemaOutOfDate):
            print(f"erpq: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, SchemaOutOfDate) else 1
        if isinstance(exc, DatabaseUnusable):
            print(f"erpq: error: {exc}", file=sys.stderr)
            return 2
        unreachable = _unreachable(exc, args)
        if unreachable:
            print(f"erpq: error: {unreachable}", file=sys.stderr)
            return 1
        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            # A value the validation layer missed: the transaction was rolled back.
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            print(f"erpq: error: the database refused it (nothing was changed): {first}", file=sys.stderr)
            return 1
        raise
    finally:
        if rt is not None:
            rt.close()


if __name__ == "__main__":
    sys.exit(main())
