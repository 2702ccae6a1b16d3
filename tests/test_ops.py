"""The operator API: errors that change nothing, read-only mode, the audit log,
tenants and users."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import testjobs
from draining import drain
from erpq.models import AuditLog, FailedJob, JobBatch, JobRun, ScheduleState, Tenant, User
from erpq.ops import Actor, Conflict, Invalid, NotFound, Ops, OpsError, ReadOnly
from erpq.runtime import Runtime, locks

PERIODIC = "erp:check-system-health"
ALICE = Actor("alice", "203.0.113.7", "cli")


@pytest.fixture(autouse=True)
def _reset_jobs():
    testjobs.reset()
    yield
    testjobs.reset()


@pytest.fixture
def ops(runtime: Runtime) -> Ops:
    return Ops(runtime, actor=ALICE)


@pytest.fixture
def ro(runtime: Runtime) -> Ops:
    return Ops(runtime, actor=ALICE, read_only=True)


def count(rt: Runtime, model) -> int:
    with rt.read_session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def audit(rt: Runtime) -> list[AuditLog]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(AuditLog).order_by(AuditLog.id)))


def snapshot(rt: Runtime) -> dict:
    """Everything an operator error must leave as it was."""
    with rt.read_session() as s:
        rows = {m.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(m))
                for m in (AuditLog, FailedJob, JobBatch, JobRun, ScheduleState, Tenant, User)}
        rows["users"] = sorted((u.tenant_id, u.name, u.email) for u in s.scalars(sa.select(User)))
        rows["tenants"] = sorted((t.slug, t.name) for t in s.scalars(sa.select(Tenant)))
    rows["pending"] = rt.huey.pending_count()
    rows["scheduled"] = rt.huey.scheduled_count()
    return rows


work = drain

def make_failure(rt: Runtime) -> int:
    rt.enqueue("TestFailNow", 1)
    work(rt)
    with rt.read_session() as s:
        return s.scalars(sa.select(FailedJob.id).order_by(FailedJob.id.desc())).first()


# ---------------------------------------------------------------- unknown names


@pytest.mark.parametrize("action", ["dispatch", "trigger", "pause", "resume"])
def test_unknown_task_is_not_found_and_changes_nothing(runtime, ops, action):
    before = snapshot(runtime)
    with pytest.raises(NotFound) as info:
        getattr(ops, action)("NoSuchJob")
    msg = str(info.value)
    assert "'NoSuchJob'" in msg and "\n" not in msg
    assert snapshot(runtime) == before


def test_dispatching_a_periodic_name_is_not_a_job_trigger_by_mistake(runtime, ops):
    """A job name given to trigger/pause (which take periodic tasks) is refused."""
    before = snapshot(runtime)
    for action in ("trigger", "pause"):
        with pytest.raises(NotFound, match="TestEcho"):
            getattr(ops, action)("TestEcho")
    assert snapshot(runtime) == before


def test_reserved_argument_names_are_refused(runtime, ops):
    before = snapshot(runtime)
    with pytest.raises(OpsError, match="timeout"):
        ops.dispatch("TestEcho", kwargs={"timeout": 3})
    assert snapshot(runtime) == before


def test_missing_records_are_not_found(runtime, ops):
    before = snapshot(runtime)
    with pytest.raises(NotFound, match="nope"):
        ops.batch("nope")
    with pytest.raises(NotFound):
        ops.failed_detail(12345)
    with pytest.raises(NotFound, match="12345"):
        ops.retry([12345])
    with pytest.raises(NotFound, match="no-lock"):
        ops.release_lock("no-lock")
    with pytest.raises(NotFound, match="12345"):
        ops.forget([12345])
    with pytest.raises(NotFound, match="12345"):
        ops.restore([12345])
    # a refused action writes no audit row either
    assert snapshot(runtime) == before


def test_restore_without_ids_is_refused_unless_asked(runtime, ops):
    fids = [make_failure(runtime) for _ in range(2)]
    ops.forget(fids)
    before = snapshot(runtime)
    for call in (lambda: ops.restore(), lambda: ops.restore([]), lambda: ops.restore(None, None)):
        with pytest.raises(Invalid, match="restore what"):
            call()
    assert snapshot(runtime) == before and ops.count_failed() == 0
    with pytest.raises(NotFound):  # not hidden: nothing to bring back
        ops.restore([make_failure(runtime)])
    assert ops.restore(everything=True) == 2
    assert ops.count_failed() == 3


def test_dispatching_a_periodic_task_with_arguments_is_refused(runtime, ops):
    before = snapshot(runtime)
    with pytest.raises(Invalid, match=f"{PERIODIC}.*no arguments") as info:
        ops.dispatch(PERIODIC, [1])
    assert "\n" not in str(info.value)
    with pytest.raises(Invalid, match="no arguments"):
        ops.dispatch(PERIODIC, kwargs={"tenant": "acme"})
    assert snapshot(runtime) == before
    ops.dispatch(PERIODIC)  # without arguments it is queued
    assert runtime.huey.pending_count() == before["pending"] + 1


# ---------------------------------------------------------------- read-only


def test_read_only_refuses_every_action_and_audits_nothing(runtime, ops, ro):
    fid = make_failure(runtime)
    batch_id = runtime.dispatch_batch("b", "TestEcho", [((1,), {})])
    task_id = runtime.enqueue("TestEcho", 2)
    ops.add_tenant("acme")
    locks.acquire(runtime.Session, "periodic:x", "dead:1:x", -1)
    before = snapshot(runtime)

    actions = [
        lambda: ro.dispatch("TestEcho", [1]),
        lambda: ro.trigger(PERIODIC),
        lambda: ro.pause(PERIODIC),
        lambda: ro.resume(PERIODIC),
        lambda: ro.cancel_job(task_id),
        lambda: ro.retry([fid]),
        lambda: ro.forget(fid),
        lambda: ro.flush_failed(),
        lambda: ro.restore([fid]),
        lambda: ro.prune_failed(0),
        lambda: ro.cancel_batch(batch_id),
        lambda: ro.release_lock("periodic:x"),
        lambda: ro.health.check(),
        lambda: ro.add_tenant("globex"),
        lambda: ro.add_user("acme", "Bob", "bob@example.com"),
    ]
    for i, action in enumerate(actions):
        with pytest.raises(ReadOnly) as info:
            action()
        assert "read-only" in str(info.value), i
    assert snapshot(runtime) == before
    # reads still work
    assert ro.pending().total == before["pending"]
    assert ro.failed().total == 1


# ---------------------------------------------------------------- audit


def test_every_action_writes_an_audit_row(runtime, ops):
    def last() -> AuditLog:
        return audit(runtime)[-1]

    def check(action: str, command_start: str) -> None:
        row = last()
        assert (row.actor, row.client, row.source) == ("alice", "203.0.113.7", "cli")
        assert row.action == action
        assert row.command.startswith(command_start), row.command
        assert row.at is not None

    n = len(audit(runtime))
    task_id = ops.dispatch("TestEcho", [1], {"tenant_id": 3})
    check("queue.dispatch", "erpq queue dispatch TestEcho --args")
    assert last().target == "TestEcho"
    ops.cancel_job(task_id)
    check("queue.cancel", f"erpq queue cancel {task_id}")
    ops.pause(PERIODIC)
    check("schedule.pause", f"erpq schedule pause {PERIODIC}")
    ops.resume(PERIODIC)
    check("schedule.resume", f"erpq schedule resume {PERIODIC}")
    ops.trigger(PERIODIC)
    check("schedule.run", f"erpq schedule run {PERIODIC}")
    runtime.huey.storage.flush_queue()

    fid = make_failure(runtime)
    ops.retry([fid])
    check("failed.retry", f"erpq queue retry {fid}")
    runtime.huey.storage.flush_queue()
    fid = make_failure(runtime)
    ops.forget(fid)
    check("failed.forget", f"erpq queue forget {fid}")
    ops.restore([fid])
    check("failed.restore", f"erpq queue restore {fid}")
    ops.flush_failed()
    check("failed.flush", "erpq queue flush")
    ops.prune_failed(24)
    check("failed.prune", "erpq queue prune-failed --hours 24")

    batch_id = runtime.dispatch_batch("b", "TestEcho", [((1,), {})])
    ops.cancel_batch(batch_id)
    check("batch.cancel", f"erpq batch cancel {batch_id}")
    locks.acquire(runtime.Session, "periodic:x", "dead:1:x", -1)
    ops.release_lock("periodic:x")
    check("lock.release", "erpq lock release periodic:x")
    ops.add_tenant("acme", "Acme Ltd")
    check("tenant.add", "erpq tenant add acme")
    ops.add_user("acme", "Bob Smith", "bob@example.com")
    check("user.add", "erpq user add --tenant acme 'Bob Smith' --email bob@example.com")
    assert len(audit(runtime)) == n + 14

    page = ops.audit_log(limit=5)
    assert page.total == n + 14 and len(page.items) == 5
    assert page.items[0].action == "user.add"  # newest first


# ---------------------------------------------------------------- tenants and users


def test_tenants_and_users(runtime, ops):
    acme = ops.add_tenant("acme", "Acme Ltd")
    ops.add_tenant("globex")
    assert [(t.slug, t.name, t.is_active) for t in ops.tenants()] == [
        ("acme", "Acme Ltd", True), ("globex", "globex", True)]
    assert ops.tenant_id("acme") == acme.id == ops.tenant_id(str(acme.id))

    bob = ops.add_user("acme", "  Bob  ", "bob@example.com")
    assert (bob.tenant_id, bob.tenant, bob.name, bob.email) == (acme.id, "acme", "Bob", "bob@example.com")
    ops.add_user("globex", "Carol")
    ops.add_user("globex", "Bob", "bob@example.com")  # the same address in another tenant is fine
    assert [(u.tenant, u.name) for u in ops.users()] == [("acme", "Bob"), ("globex", "Bob"), ("globex", "Carol")]
    assert [u.name for u in ops.users(tenant="acme")] == ["Bob"]


@pytest.mark.parametrize("slug", ["Acme", "-acme", "ac me", "", "a" * 65, "acmé", "acme_1"])
def test_bad_tenant_slug_changes_nothing(runtime, ops, slug):
    ops.add_tenant("acme")
    before = snapshot(runtime)
    with pytest.raises(OpsError) as info:
        ops.add_tenant(slug)
    assert "\n" not in str(info.value) and "slug" in str(info.value)
    assert snapshot(runtime) == before


def test_duplicate_tenant_keeps_the_tenants(runtime, ops):
    ops.add_tenant("acme", "Acme")
    before = snapshot(runtime)
    with pytest.raises(Conflict, match="acme"):
        ops.add_tenant("acme", "Other")
    after = snapshot(runtime)
    assert after["tenants"] == before["tenants"] == [("acme", "Acme")]


@pytest.mark.parametrize(("args", "error", "match"), [
    (("nope", "Bob"), NotFound, "nope"),
    (("999", "Bob"), NotFound, "999"),
    (("acme", "   "), OpsError, "name"),
    (("acme", "Bob", "not-an-address"), OpsError, "not-an-address"),
])
def test_bad_user_changes_nothing(runtime, ops, args, error, match):
    ops.add_tenant("acme")
    ops.add_user("acme", "Ann", "ann@example.com")
    before = snapshot(runtime)
    with pytest.raises(error, match=match):
        ops.add_user(*args)
    assert snapshot(runtime) == before


def test_duplicate_user_email_keeps_the_users(runtime, ops):
    ops.add_tenant("acme")
    ops.add_user("acme", "Ann", "ann@example.com")
    before = snapshot(runtime)
    with pytest.raises(Conflict, match="ann@example.com"):
        ops.add_user("acme", "Annie", "ann@example.com")
    assert snapshot(runtime)["users"] == before["users"]


@pytest.mark.parametrize("dup", ["tenant", "user"])
def test_refused_duplicate_writes_no_audit_row(runtime, ops, dup):
    ops.add_tenant("acme")
    ops.add_user("acme", "Ann", "ann@example.com")
    before = snapshot(runtime)
    with pytest.raises(Conflict):
        if dup == "tenant":
            ops.add_tenant("acme")
        else:
            ops.add_user("acme", "Annie", "ann@example.com")
    assert snapshot(runtime) == before
