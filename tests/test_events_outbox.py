"""Transactional events: written in the caller's transaction (the outbox),
fanned out only after commit, swept after a crash, never fanned out twice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from erpq import events
from erpq.models import EventOutbox, Tenant, WebhookDelivery
from webhook_fixtures import add_tenant, insert_webhook

TESTS = Path(__file__).parent


@pytest.fixture
def seen(monkeypatch):
    """Events reaching a handler registered for deal.created."""
    got: list[events.Event] = []
    handler = events.on("deal.created")(lambda event: got.append(event))
    yield got
    events._handlers[:] = [(n, h) for n, h in events._handlers if h is not handler]


def outbox(rt) -> list[EventOutbox]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(EventOutbox).order_by(EventOutbox.id)))


def test_an_event_in_a_rolled_back_transaction_announces_nothing(runtime, seen):
    tenant = add_tenant(runtime)
    with pytest.raises(RuntimeError), runtime.session() as s:
        events.emit("deal.created", {"id": 1}, tenant, session=s)
        s.add(Tenant(slug="never", name="never"))
        raise RuntimeError("the business change failed")
    assert seen == [] and outbox(runtime) == []
    with runtime.read_session() as s:
        assert s.scalar(sa.select(Tenant.id).where(Tenant.slug == "never")) is None


def test_an_event_is_fanned_out_once_after_commit_with_its_outbox_id(runtime, seen):
    tenant = add_tenant(runtime)
    with runtime.session() as s:
        written = events.emit("deal.created", {"id": 2}, tenant, session=s)
        assert seen == []  # not before the commit
    (row,) = outbox(runtime)
    assert [e.id for e in seen] == [str(written.id)] == [str(row.id)]
    assert row.status == "done" and row.attempts == 1 and row.dispatched_at is not None
    assert events.sweep(runtime) == 0 and len(seen) == 1


def test_a_failing_handler_leaves_the_event_for_the_sweep(runtime, monkeypatch):
    tenant = add_tenant(runtime)
    calls: list[str] = []

    def flaky(event):
        calls.append(event.id)
        if len(calls) == 1:
            raise ConnectionError("down for a moment")

    handler = events.on("deal.created")(flaky)
    try:
        with runtime.session() as s:
            events.emit("deal.created", {"id": 3}, tenant, session=s)
        (row,) = outbox(runtime)
        assert row.status == "pending" and "down for a moment" in row.error
        monkeypatch.setattr(events, "SWEEP_AFTER_S", 0.0)
        assert events.sweep(runtime) == 1
        assert outbox(runtime)[0].status == "done" and calls == [str(row.id)] * 2
    finally:
        events._handlers[:] = [(n, h) for n, h in events._handlers if h is not handler]


def test_a_crash_between_commit_and_fan_out_is_swept_exactly_once(tmp_path, runtime, monkeypatch):
    """A process emits in its transaction and is SIGKILLed right after the commit,
    before fanning out; the sweep then fans the event out to the webhook once."""
    tenant = add_tenant(runtime)
    insert_webhook(runtime, tenant, "http://127.0.0.1:9/hook", ["deal.created"])
    script = textwrap.dedent(f"""
        import os, signal
        from sqlalchemy import event as sa_event
        from erpq import events
        from erpq.runtime import Runtime, set_current
        from conftest import make_settings
        from pathlib import Path

        rt = Runtime(make_settings(Path({str(tmp_path)!r})))
        set_current(rt)
        with rt.session() as s:
            # registered before emit's own listener, so it runs first: the commit is
            # done, the fan-out never starts
            sa_event.listen(s, "after_commit", lambda _s: os.kill(os.getpid(), signal.SIGKILL))
            events.emit("deal.created", {{"id": 4}}, {tenant}, session=s)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=TESTS, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(TESTS)}, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (row,) = outbox(runtime)
    assert row.status == "pending"
    with runtime.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0

    monkeypatch.setattr(events, "SWEEP_AFTER_S", 0.0)
    assert events.sweep(runtime) == 1
    assert events.sweep(runtime) == 0
    # A fan-out repeated after a crash in its middle adds nothing: deliveries are keyed by the event.
    assert events.dispatch(runtime, row.id) is None
    with runtime.session() as s:
        s.execute(sa.update(EventOutbox).values(status="pending"))
    assert events.dispatch(runtime, row.id) is not None
    with runtime.read_session() as s:
        deliveries = list(s.scalars(sa.select(WebhookDelivery)))
    assert len(deliveries) == 1 and deliveries[0].event == "deal.created"
    assert outbox(runtime)[0].status == "done"


def test_bad_payloads_are_refused_at_the_door(runtime):
    tenant = add_tenant(runtime)
    with pytest.raises(TypeError, match="payload must be a JSON object"), runtime.session() as s:
        events.emit("deal.created", [1, 2], tenant, session=s)
    with pytest.raises(events.UnknownEvent, match="unknown event 'deal.exploded'"), runtime.session() as s:
        events.emit("deal.exploded", {}, tenant, session=s)
    assert outbox(runtime) == []


def test_a_released_savepoint_does_not_fan_out_before_the_commit(runtime, seen):
    tenant = add_tenant(runtime)
    with runtime.session() as s:
        events.emit("deal.created", {"id": 5}, tenant, session=s)
        with s.begin_nested():
            events.emit("deal.created", {"id": 6}, tenant, session=s)
        assert seen == []  # the savepoint's release is not the commit
    assert sorted(e.payload["id"] for e in seen) == [5, 6]
    assert [r.status for r in outbox(runtime)] == ["done", "done"]


def test_emit_many_writes_in_the_callers_transaction_and_fans_out_after_commit(runtime, seen):
    tenant = add_tenant(runtime)
    with runtime.session() as s:
        assert events.emit_many("deal.created", [{"id": i} for i in (7, 8, 9)], tenant, session=s) == 3
        assert seen == []  # not before the commit
    rows = outbox(runtime)
    assert [r.payload["id"] for r in rows] == [7, 8, 9] and [r.status for r in rows] == ["done"] * 3
    assert sorted(e.id for e in seen) == sorted(str(r.id) for r in rows)
    with pytest.raises(RuntimeError), runtime.session() as s:
        events.emit_many("deal.created", [{"id": 10}], tenant, session=s)
        raise RuntimeError("rolled back")
    with pytest.raises(TypeError, match="payload must be a JSON object"), runtime.session() as s:
        events.emit_many("deal.created", [{"id": 11}, [1]], tenant, session=s)
    assert len(outbox(runtime)) == 3 and len(seen) == 3
