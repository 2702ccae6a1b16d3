"""Activity reminders: claimed once across concurrent checks (SQLite and PostgreSQL),
the unassigned case, the window's edges, a dead job's claim released after the
lease, SMTP down then back; real SMTP (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

import crm_fixtures
import smtp_fixtures
from crm_fixtures import add_tenant, add_user, in_minutes, rows
from draining import drain
from erpq.crm import service
from erpq.crm.models import Activity, Notification, SentMail
from erpq.crm.reminders import check_activity_reminders
from erpq.db import utcnow
from erpq.models import FailedJob, JobRun
from polling import wait_until

smtp_server = smtp_fixtures.smtp_server
db_runtime = crm_fixtures.db_runtime
smtp_down_port = smtp_fixtures.smtp_down_port


def use_smtp(rt, port: int) -> None:
    rt.settings.mail.smtp_host, rt.settings.mail.smtp_port = "127.0.0.1", port


def run_due_retries(rt, seconds: float) -> int:
    """Move retries due within ``seconds`` to the queue (as the scheduler will) and run them."""
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=seconds)
    rt.huey.read_schedule(later)
    with pytest.MonkeyPatch.context() as mp:  # Huey's clock: as if the delay had passed
        mp.setattr(rt.huey, "_get_timestamp", lambda: later)
        return drain(rt)


def add_activity(rt, tenant_id: int, due: dt.datetime | None, **values) -> int:
    with rt.session() as s:
        a = service.create(s, "activity", tenant_id, {"subject": values.pop("subject", "Call Ann"),
                                                     "due_at": due, **values})
        return a.id


def insert_activity(rt, tenant_id: int, due: dt.datetime, **values) -> int:
    """An activity written without its event (as if created before the window came near)."""
    with rt.session() as s:
        a = Activity(tenant_id=tenant_id, subject=values.pop("subject", "Call"), due_at=due, **values)
        s.add(a)
        s.flush()
        return a.id


def test_reminder_exactly_once_across_two_concurrent_checks(db_runtime, smtp_server):
    rt = db_runtime
    use_smtp(rt, smtp_server.port)
    t = add_tenant(rt)
    ann = add_user(rt, t, "Ann", "ann@example.com")
    ids = [insert_activity(rt, t, in_minutes(5 + i % 5), assigned_to=ann, subject=f"A{i}") for i in range(20)]
    claimed: list[int] = []
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        claimed.append(check_activity_reminders(rt))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(claimed) == 20
    assert check_activity_reminders(rt) == 0  # claimed, within the lease: nobody claims again
    assert drain(rt) == 20
    notes = rows(rt, Notification)
    assert sorted(n.data["activity_id"] for n in notes) == ids
    assert len(smtp_server.wait_for(20)) == 20
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == 20
    assert all(a.reminder_sent_at for a in rows(rt, Activity))
    assert check_activity_reminders(rt) == 0 and drain(rt) == 0
    assert len(rows(rt, Notification)) == 20 and len(smtp_server.messages) == 20


def test_unassigned_activity_reminds_its_creator(runtime, smtp_server):
    use_smtp(runtime, smtp_server.port)
    t = add_tenant(runtime)
    bob = add_user(runtime, t, "Bob", "bob@example.com")
    insert_activity(runtime, t, in_minutes(10), created_by=bob)
    assert check_activity_reminders(runtime) == 1 and drain(runtime) == 1
    (n,) = rows(runtime, Notification)
    assert n.user_id == bob and n.kind == "activity.reminder"
    (m,) = smtp_server.wait_for(1)
    assert m.rcpt_tos == ["bob@example.com"]


def test_user_without_address_gets_the_notification_only(runtime, smtp_server):
    use_smtp(runtime, smtp_server.port)
    t = add_tenant(runtime)
    cy = add_user(runtime, t, "Cy")
    insert_activity(runtime, t, in_minutes(1), assigned_to=cy)
    check_activity_reminders(runtime)
    drain(runtime)
    assert len(rows(runtime, Notification)) == 1 and smtp_server.messages == []


def test_window_edges(runtime, smtp_server):
    use_smtp(runtime, smtp_server.port)
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann", "ann@example.com")
    now = utcnow()
    inside = insert_activity(runtime, t, now + dt.timedelta(minutes=14, seconds=59), assigned_to=ann)
    outside = insert_activity(runtime, t, now + dt.timedelta(minutes=15, seconds=1), assigned_to=ann)
    overdue = insert_activity(runtime, t, now - dt.timedelta(hours=2), assigned_to=ann)
    done = insert_activity(runtime, t, now, assigned_to=ann, status="done")
    assert check_activity_reminders(runtime, now=now) == 2
    drain(runtime)
    reminded = {n.data["activity_id"] for n in rows(runtime, Notification)}
    assert reminded == {inside, overdue}
    assert outside not in reminded and done not in reminded
    # two minutes later the 15:01 one is inside too
    assert check_activity_reminders(runtime, now=now + dt.timedelta(minutes=2)) == 1


def test_created_inside_the_window_is_reminded_at_once(runtime, smtp_server):
    use_smtp(runtime, smtp_server.port)
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann", "ann@example.com")
    with runtime.session() as s:
        service.set_user_timezone(s, ann, "Europe/Berlin")
    aid = add_activity(runtime, t, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), assigned_to=ann)  # far: not yet
    assert runtime.huey.pending_count() == 0
    soon = add_activity(runtime, t, in_minutes(3), assigned_to=ann)
    assert runtime.huey.pending_count() == 1  # enqueued by the activity.created handler, no tick needed
    drain(runtime)
    (n,) = rows(runtime, Notification)
    assert n.data["activity_id"] == soon
    assert "CET" in n.title or "CEST" in n.title  # shown in the user's timezone
    # moving the far one into the window reminds it at once too
    with runtime.session() as s:
        service.update(s, "activity", aid, {"due_at": in_minutes(2)})
    drain(runtime)
    assert len(rows(runtime, Notification)) == 2 and len(smtp_server.wait_for(2)) == 2


def test_a_job_killed_after_the_claim_is_reminded_after_the_lease(runtime, smtp_server):
    use_smtp(runtime, smtp_server.port)
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann", "ann@example.com")
    aid = insert_activity(runtime, t, in_minutes(10), assigned_to=ann)
    now = utcnow()
    assert check_activity_reminders(runtime, now=now) == 1
    runtime.huey.flush()  # the job dies with its worker: never runs
    lease = runtime.settings.crm.reminder_lease_s
    assert check_activity_reminders(runtime, now=now + dt.timedelta(seconds=lease - 1)) == 0
    assert check_activity_reminders(runtime, now=now + dt.timedelta(seconds=lease + 1)) == 1
    assert drain(runtime) == 1
    assert [n.data["activity_id"] for n in rows(runtime, Notification)] == [aid]
    assert len(smtp_server.wait_for(1)) == 1


def test_smtp_down_retries_and_loses_nothing(runtime, smtp_server, smtp_down_port):
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann", "ann@example.com")
    aid = insert_activity(runtime, t, in_minutes(5), assigned_to=ann)
    use_smtp(runtime, smtp_down_port)
    check_activity_reminders(runtime)
    drain(runtime)
    # the notification is in; the mail failed and waits for its retry
    assert len(rows(runtime, Notification)) == 1
    assert rows(runtime, Activity)[0].reminder_sent_at is None
    (run,) = wait_until(lambda: rows(runtime, JobRun, JobRun.task_name == "SendActivityReminderJob"),
                        message="the run history")
    assert run.status == "retrying" and "Connection refused" in run.error
    assert runtime.huey.scheduled_count() == 1
    # the server is back; the retry comes due
    use_smtp(runtime, smtp_server.port)
    run_due_retries(runtime, seconds=60)
    assert len(smtp_server.wait_for(1)) == 1
    assert len(rows(runtime, Notification)) == 1  # not twice
    assert rows(runtime, Activity)[0].reminder_sent_at is not None
    with runtime.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SentMail)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(FailedJob)) == 0
    assert aid
