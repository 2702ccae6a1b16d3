"""Pilot tests of the console on a real (SQLite) runtime: every view, every action,
read-only refusals, confirmations, undo and the audit rows.

The app runs without an embedded runner here (like ``--attach``) and polls only
when asked, so what it shows is exactly what the test put in the store.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_settings
from console_fixtures import press, seed_failed, settle
from erpq.models import JobRun, Lock, Runner
from erpq.ops import Actor
from erpq.ops import Ops as ConsoleOps
from erpq.runtime import Runtime, job, set_current
from erpq.runtime.registry import JOBS, load_capabilities, periodic_specs
from polling import wait_until
from tui.app import ErpqConsole, binding_ids, main, quiet_logging
from tui.views.activity import STATUSES as ACTIVITY_STATUSES
from tui.widgets.dialogs import ConfirmScreen, TextScreen, TypedConfirmScreen
from tui.widgets.keyed_table import KeyedTable

load_capabilities()

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


if "ConsoleTestJob" not in JOBS:  # tests/test_console_bulk.py registers the same job
    @job("ConsoleTestJob")
    def console_test_job(x=None):
        raise RuntimeError(f"boom {x}")


ACTOR = Actor(user="tester", client="10.1.2.3", source="console")


@pytest.fixture
def make_app(runtime: Runtime):
    def make(read_only: bool = False, rt: Runtime | None = None) -> ErpqConsole:
        rt = rt or runtime
        ops = ConsoleOps(rt, ACTOR, read_only=read_only)
        return ErpqConsole(ops, rt.settings, poll=False)

    return make


def table(app: ErpqConsole, view: str, which: str = "#table") -> KeyedTable:
    return app.view(view).query_one(which, KeyedTable)


def audit(runtime: Runtime):
    return ConsoleOps(runtime, ACTOR).audit_log(limit=20).items


def head(app: ErpqConsole, view: str) -> str:
    return app.view(view).query_one("#head").text


async def head_when(app: ErpqConsole, pilot, view: str, text: str, timeout: float = 10.0) -> str:
    """The view's head line once it holds ``text`` (a view shown for the first time
    fills on its first poll, which may land after the key press settled)."""
    deadline = time.monotonic() + timeout
    while text not in (line := head(app, view)) and time.monotonic() < deadline:
        app.poll_now()
        await settle(app, pilot)
    return line


# ------------------------------------------------------------------ schedule


async def test_schedule_lists_every_periodic_task(make_app, runtime):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        names = sorted(s.name for s in periodic_specs())
        assert names and table(app, "schedule").keys == names
        row = table(app, "schedule").cells(names[0])
        assert row[1].startswith("in ")  # next run as a countdown
        assert "periodic tasks" in head(app, "schedule")


async def test_trigger_enqueues_shows_command_and_audits(make_app, runtime):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        name = table(app, "schedule").selected_key
        await press(app, pilot, "t")
        assert runtime.huey.pending_count() == 1
        assert f"$ erpq schedule run {name}" in app.messages[-1]
        row = audit(runtime)[0]
        assert (row.action, row.target, row.actor, row.client, row.source) == (
            "schedule.run", name, "tester", "10.1.2.3", "console")
        assert app.counts["pending"] == 1  # the poll after the action


async def test_pause_and_resume(make_app, runtime):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        name = table(app, "schedule").selected_key
        await press(app, pilot, "p")
        assert next(e for e in app.ops.schedule() if e.name == name).paused
        assert str(table(app, "schedule").cells(name)[5]) == "paused"
        assert "erpq schedule pause" in app.messages[-1]
        await press(app, pilot, "p")
        assert not next(e for e in app.ops.schedule() if e.name == name).paused
        assert [a.action for a in audit(runtime)[:2]] == ["schedule.resume", "schedule.pause"]


async def test_schedule_detail_and_escape(make_app, runtime):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TextScreen)
        assert "Schedule:" in str(app.screen.body) and "Next run:" in str(app.screen.body)
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, TextScreen)


# ------------------------------------------------------------------ read-only


async def test_read_only_refuses_every_action(make_app, runtime):
    seed_failed(runtime, 2)
    runtime.enqueue("ConsoleTestJob", 1)
    bid = runtime.dispatch_batch("fan-out", "ConsoleTestJob", [((1,), {})])
    app = make_app(read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert "READ-ONLY" in app.query_one("#status").text
        keys = {"1": ["t", "p"], "2": ["c"], "3": ["r", "R", "d", "X", "u"], "4": ["c"], "5": ["c"]}
        for view_key, actions in keys.items():
            await press(app, pilot, view_key)
            for key in actions:
                before = len(app.messages)
                await press(app, pilot, key)
                assert not isinstance(app.screen, ConfirmScreen | TypedConfirmScreen), key
                if key == "u":
                    assert app.messages[-1] == "nothing to undo"
                    continue
                assert len(app.messages) == before + 1, key
                assert "read-only mode" in app.messages[-1], (key, app.messages[-1])
        assert audit(runtime) == []
        assert runtime.huey.pending_count() == 2  # the job and the batch's job, untouched
        assert app.ops.count_failed() == 2
        assert app.ops.batch(bid).cancelled_at is None


# ------------------------------------------------------------------ queue


async def test_queue_sections_paging_and_cancel(make_app, runtime):
    for i in range(130):
        runtime.enqueue("ConsoleTestJob", i)
    runtime.enqueue("ConsoleTestJob", "later", delay=3600)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "2")
        assert len(table(app, "queue").keys) == 50  # a page, never the whole queue
        assert "1–50 of 130" in head(app, "queue")
        await press(app, pilot, "right_square_bracket", "right_square_bracket")
        assert "101–130 of 130" in head(app, "queue") and len(table(app, "queue").keys) == 30
        await press(app, pilot, "right_square_bracket")  # no page past the end
        assert "101–130 of 130" in head(app, "queue")
        await press(app, pilot, "left_square_bracket", "left_square_bracket", "left_square_bracket", "v")
        assert head(app, "queue").startswith("pending 130 · [scheduled 1]")
        (key,) = table(app, "queue").keys
        assert table(app, "queue").cells(key)[2].startswith("in 59m")  # an hour ahead, less the seconds passed
        await press(app, pilot, "v")
        assert table(app, "queue").keys == []
        await press(app, pilot, "v")  # back to pending
        job_id = table(app, "queue").selected_record.id
        await press(app, pilot, "c")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "n")
        assert runtime.huey.pending_count() == 130 and "not confirmed" in app.messages[-1]
        await press(app, pilot, "c", "y")
        assert runtime.huey.pending_count() == 129
        assert f"$ erpq queue cancel {job_id}" in app.messages[-1]
        assert audit(runtime)[0].action == "queue.cancel"
        assert job_id not in [k.split(":", 1)[1] for k in table(app, "queue").keys]


async def test_filter_by_text_and_escape_clears(make_app, runtime):
    runtime.enqueue("ConsoleTestJob", "apple")
    runtime.enqueue("ConsoleTestJob", "banana")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "2", "slash")
        await pilot.press(*"banana")
        await press(app, pilot, "enter")
        assert [table(app, "queue").record(k).args_summary for k in table(app, "queue").keys] == ["'banana'"]
        assert "filter: 'banana'" in head(app, "queue")
        await press(app, pilot, "escape")
        assert len(table(app, "queue").keys) == 2


# ------------------------------------------------------------------ failed


async def test_failed_detail_shows_arguments_and_traceback(make_app, runtime):
    seed_failed(runtime, 3)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3")
        assert len(table(app, "failed").keys) == 3
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TextScreen)
        body = str(app.screen.body)
        assert "Arguments:" in body and "Traceback" in body and "RuntimeError: boom 2" in body
        await press(app, pilot, "escape")
        assert app.active_view.KEY == "failed"


async def test_retry_one(make_app, runtime):
    ids = seed_failed(runtime, 2)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "r")
        assert runtime.huey.pending_count() == 1
        assert app.ops.count_failed() == 1
        assert f"$ erpq queue retry {ids[-1]}" in app.messages[-1]
        assert audit(runtime)[0].action == "failed.retry"
        assert len(table(app, "failed").keys) == 1


async def test_retry_all_matching_filter_confirms_with_count(make_app, runtime):
    seed_failed(runtime, 3, message="boom {i}")
    seed_failed(runtime, 2, message="timeout after {i}s")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "slash")
        await pilot.press(*"timeout")
        await press(app, pilot, "enter", "R")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Retry 2 failed jobs matching 'timeout'" in app.screen.question
        await press(app, pilot, "y")
        assert runtime.huey.pending_count() == 2
        assert app.ops.count_failed() == 3
        assert "2 failed jobs re-enqueued" in app.messages[-1]


async def test_forget_confirms_and_undo_restores(make_app, runtime):
    seed_failed(runtime, 2)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "y")
        assert app.ops.count_failed() == 1
        assert "press u to undo" in app.messages[-1] and "$ erpq queue forget" in app.messages[-1]
        await press(app, pilot, "u")
        assert app.ops.count_failed() == 2
        assert "1 failed jobs restored" in app.messages[-1]
        assert [a.action for a in audit(runtime)[:2]] == ["failed.restore", "failed.forget"]
        assert len(table(app, "failed").keys) == 2


async def test_undo_is_refused_after_the_undo_window(make_app, runtime):
    seed_failed(runtime, 1)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "d", "y")
        app.undo_stack[-1].at -= app.undo_minutes * 60 + 1
        await press(app, pilot, "u")
        assert "too late to undo" in app.messages[-1]
        assert app.ops.count_failed() == 0


async def test_flush_needs_the_word_typed_and_can_be_undone(make_app, runtime):
    seed_failed(runtime, 4)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "X")
        assert isinstance(app.screen, TypedConfirmScreen)
        await pilot.press(*"yes")
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TypedConfirmScreen) and app.ops.count_failed() == 4
        await pilot.press(*"flush")
        await press(app, pilot, "enter")
        assert app.ops.count_failed() == 0
        assert "4 failed jobs flushed" in app.messages[-1] and "$ erpq queue flush" in app.messages[-1]
        assert table(app, "failed").keys == []
        await press(app, pilot, "u")
        assert app.ops.count_failed() == 4
        assert [a.action for a in audit(runtime)[:2]] == ["failed.restore", "failed.flush"]


async def test_flush_escape_cancels(make_app, runtime):
    seed_failed(runtime, 1)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "X", "escape")
        assert not isinstance(app.screen, TypedConfirmScreen)
        assert app.ops.count_failed() == 1 and audit(runtime) == []


async def test_clusters_group_and_retry_or_forget_a_cluster(make_app, runtime):
    seed_failed(runtime, 3, message="boom {i}")
    seed_failed(runtime, 2, message="timeout after {i}s")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "c")
        clusters = table(app, "failed", "#clusters")
        assert len(clusters.keys) == 2
        top = clusters.selected_record
        assert (top.count, top.task_name) == (3, "ConsoleTestJob")
        assert "2 failure clusters of 5 failed jobs" in head(app, "failed")
        await press(app, pilot, "r")
        assert isinstance(app.screen, ConfirmScreen) and "3 failed jobs of this cluster" in app.screen.question
        await press(app, pilot, "y")
        assert runtime.huey.pending_count() == 3 and app.ops.count_failed() == 2
        await press(app, pilot, "d", "y")
        assert app.ops.count_failed() == 0
        await press(app, pilot, "u")
        assert app.ops.count_failed() == 2
        await press(app, pilot, "c")
        assert len(table(app, "failed").keys) == 2


# ------------------------------------------------------------------ health, batches, activity


async def test_health_shows_no_readings_then_gauges_and_tenants(make_app, runtime):
    app = make_app()
    app.ops.add_tenant("acme")
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "4")
        assert "no readings yet" in await head_when(app, pilot, "health", "no readings yet")
        await press(app, pilot, "c")
        line = await head_when(app, pilot, "health", "host")
        assert "host" in line and "1 tenants" in line
        gauge = str(app.view("health").query_one("#gauge-queue").render())
        assert "Queue size" in gauge and "warn 1000" in gauge
        assert [table(app, "health").record(k).tenant for k in table(app, "health").keys] == ["acme"]


async def test_batches_progress_and_cancel(make_app, runtime):
    bid = runtime.dispatch_batch("deal.created fan-out", "ConsoleTestJob", [((i,), {}) for i in range(3)],
                                 kind="webhooks")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "5")
        (key,) = table(app, "batches").keys
        cells = table(app, "batches").cells(key)
        assert cells[0] == "deal.created fan-out" and cells[3] == "0/3" and "0%" in cells[2]
        await press(app, pilot, "c")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "y")
        assert app.ops.batch(bid).cancelled_at is not None
        assert f"$ erpq batch cancel {bid}" in app.messages[-1]
        assert table(app, "batches").keys == []  # only batches in progress
        await press(app, pilot, "a")
        assert str(table(app, "batches").cells(key)[5]) == "cancelled"


def add_runs(rt: Runtime, rows: list[tuple[str, str]]) -> None:
    now = dt.datetime.now(dt.UTC)
    with rt.session() as s:
        s.execute(sa.insert(JobRun), [
            {"task_id": f"t{i}", "task_name": name, "kind": "job", "status": status, "attempt": 1,
             "enqueued_at": now, "started_at": now, "finished_at": now, "duration_s": 0.5,
             "error": "RuntimeError: boom" if status == "failed" else None, "args_summary": f"{i}"}
            for i, (name, status) in enumerate(rows)])


async def test_activity_newest_first_filters_and_log(make_app, runtime):
    add_runs(runtime, [("SendDealNotificationJob", "success"), ("DeliverWebhookJob", "failed"),
                       ("ExportReportJob", "success")])
    logging.getLogger("erpq.test").warning("Processing job: console-log-line")
    # The runtime may hand log records to a writer thread: wait for the line to land.
    wait_until(lambda: any("console-log-line" in x for x in ConsoleOps(runtime).log_tail(20)), timeout=10)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "6")
        names = [table(app, "activity").record(k).task_name for k in table(app, "activity").keys]
        assert names == ["ExportReportJob", "DeliverWebhookJob", "SendDealNotificationJob"]
        assert any("console-log-line" in line for line in app.view("activity")._log_lines)
        await press(app, pilot, "f")  # status: failed
        assert [table(app, "activity").record(k).task_name for k in table(app, "activity").keys] == [
            "DeliverWebhookJob"]
        await press(app, pilot, *["f"] * (len(ACTIVITY_STATUSES) - 1), "slash")  # every status, then back to all
        await pilot.press(*"Export")
        await press(app, pilot, "enter")
        assert [table(app, "activity").record(k).task_name for k in table(app, "activity").keys] == [
            "ExportReportJob"]
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TextScreen) and "ExportReportJob" in str(app.screen.body)


async def test_runners_and_release_a_stale_lock(make_app, tmp_path):
    # Times in the schedule's timezone, as in the other views (Tokyo: UTC+9, no DST).
    rt = Runtime(make_settings(tmp_path, schedule={"timezone": "Asia/Tokyo"}))
    old = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with rt.session() as s:
        s.add(Runner(id="gone:1:abc", host="gone", pid=1, workers=2, periodic=True, kind="consumer",
                     queue="q", started_at=old, heartbeat_at=old, stopped_at=None))
        s.add(Lock(name="periodic:erp:check-system-health", holder="gone:1:abc", task_id="x",
                   acquired_at=old, expires_at=old + dt.timedelta(minutes=2)))
    try:
        app = make_app(rt=rt)
        async with app.run_test(size=(80, 24)) as pilot:
            await press(app, pilot, "7")
            assert table(app, "runners").keys == ["gone:1:abc"]
            assert str(table(app, "runners").cells("gone:1:abc")[6]) == "dead"
            assert "started 01-02 12:04" in app.view("runners").query_one("#info").text
            locks = table(app, "runners", "#locks")
            assert str(locks.cells("periodic:erp:check-system-health")[3]) == "stale"
            await press(app, pilot, "l")  # first l moves to the locks table
            assert locks.has_focus
            assert "lease until 01-02 12:06" in app.view("runners").query_one("#info").text
            await press(app, pilot, "l")
            assert isinstance(app.screen, ConfirmScreen) and "stale lock" in app.screen.question
            await press(app, pilot, "y")
            assert app.ops.locks() == []
            assert audit(rt)[0].action == "lock.release"
            assert app.messages[-1].endswith("$ erpq lock release periodic:erp:check-system-health")
    finally:
        rt.close()


async def test_release_a_live_lock_asks_and_forces(make_app, runtime):
    now = dt.datetime.now(dt.UTC)
    with runtime.session() as s:
        s.add(Runner(id="here:2:def", host="here", pid=2, workers=2, periodic=True, kind="consumer",
                     queue="q", started_at=now, heartbeat_at=now + dt.timedelta(hours=1), stopped_at=None))
        s.add(Lock(name="periodic:erp:check-system-health", holder="here:2:def", task_id="x",
                   acquired_at=now, expires_at=now + dt.timedelta(hours=1)))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "7")
        locks = table(app, "runners", "#locks")
        assert str(locks.cells("periodic:erp:check-system-health")[3]) == "held"
        await press(app, pilot, "l", "l")
        assert isinstance(app.screen, ConfirmScreen)
        assert "LIVE runner here:2:def" in app.screen.question and "twice" in app.screen.question
        await press(app, pilot, "n")
        assert len(app.ops.locks()) == 1
        await press(app, pilot, "l")
        await press(app, pilot, "y")
        assert app.ops.locks() == []
        assert audit(runtime)[0].command == "erpq lock release periodic:erp:check-system-health --force"
        assert "released" in app.messages[-1]


# ------------------------------------------------------------------ keys, help, palette, config


async def test_help_screen_lists_the_keys(make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, TextScreen)
        body = str(app.screen.body)
        for text in ("Run now", "Retry all", "Flush", "Release lock", "Cancel batch", "Undo", "[console.keys]"):
            assert text in body
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, TextScreen)


async def test_command_palette_runs_actions(make_app, runtime):
    from textual.command import CommandPalette

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        name = table(app, "schedule").selected_key
        await press(app, pilot, "ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*f"Run now: {name}")
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert runtime.huey.pending_count() == 1
        assert audit(runtime)[0].action == "schedule.run"


async def test_keys_can_be_changed_in_config(tmp_path: Path):
    rt = Runtime(make_settings(tmp_path, console={"keys": {"schedule.trigger": "T", "app.view.failed": "F"}}))
    set_current(rt)
    try:
        app = ErpqConsole(ConsoleOps(rt, ACTOR), rt.settings, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await press(app, pilot, "t")
            assert rt.huey.pending_count() == 0
            await press(app, pilot, "T")
            assert rt.huey.pending_count() == 1
            await press(app, pilot, "F")
            assert app.active_view.KEY == "failed"
    finally:
        set_current(None)
        rt.close()


def test_every_action_has_a_binding_id():
    ids = binding_ids()
    for name in ("schedule.trigger", "schedule.pause", "queue.cancel", "failed.retry", "failed.retry_all",
                 "failed.forget", "failed.flush", "batches.cancel", "runners.release", "app.undo", "view.filter"):
        assert name in ids


def test_bad_config_exits_2_with_one_line(tmp_path: Path, capsys):
    bad = tmp_path / "config.toml"
    bad.write_text("[queue]\nworkers = 'many'\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("erpq-console:") and "queue.workers" in err and len(err.splitlines()) == 1


def test_unknown_console_key_action_exits_2(tmp_path: Path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[console.keys]\n"nope.nothing" = "z"\n')
    assert main(["--config", str(cfg)]) == 2
    assert "unknown action(s) nope.nothing" in capsys.readouterr().err


def test_quiet_logging_keeps_the_terminal_clean(capfd):
    quiet_logging()
    logging.getLogger("huey.consumer").warning("would scribble over the console")
    logging.getLogger("some.library").error("so would this")
    import warnings

    warnings.warn("and this", UserWarning, stacklevel=1)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
