"""Pilot tests (real SQLite runtime) of the console's detail-screen actions, drill-downs,
marked rows, database sort and bulk actions with progress (issue #8 item 3).

Waiting is by events and ``settle`` (never by time): a bulk action is held after its
first chunk by a gate in its ``progress`` callback while the test presses keys.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from console_fixtures import press, seed_failed, settle
from erpq.models import FailedJob, JobBatch, JobRun
from erpq.ops import Actor, Ops
from erpq.ops.base import BULK_CHUNK
from erpq.runtime import Runtime, job
from erpq.runtime.registry import JOBS, load_capabilities
from tui.app import ErpqConsole
from tui.widgets.dialogs import ConfirmScreen, DetailScreen
from tui.widgets.keyed_table import KeyedTable

load_capabilities()

pytestmark = pytest.mark.anyio

ACTOR = Actor(user="tester", client="10.1.2.3", source="console")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


if "ConsoleTestJob" not in JOBS:  # tests/test_console_app.py registers the same job
    @job("ConsoleTestJob")
    def console_test_job(x=None):
        raise RuntimeError(f"boom {x}")


class GatedOps(Ops):
    """Real Ops whose bulk actions stop after their first chunk until ``gate`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.reached = threading.Event()

    def _gated(self, progress):
        def gated(done: int, total: int):
            go_on = progress(done, total)  # shows the progress line
            if done == BULK_CHUNK:
                self.reached.set()
                assert self.gate.wait(120), "the test never opened the gate"
                go_on = progress(done, total)  # and says whether to go on, once the test acted
            return go_on
        return gated

    def retry_all(self, task=None, search=None, ids=None, progress=None):
        return super().retry_all(task, search, ids, self._gated(progress) if progress else None)


def make(rt: Runtime, ops_class=Ops) -> ErpqConsole:
    return ErpqConsole(ops_class(rt, ACTOR), rt.settings, poll=False)


def rows(app: ErpqConsole, view: str, which: str = "#table") -> KeyedTable:
    return app.view(view).query_one(which, KeyedTable)


def head(app: ErpqConsole, view: str) -> str:
    return app.view(view).query_one("#head").text


def audit(rt: Runtime) -> list:
    return Ops(rt, ACTOR).audit_log(limit=50).items


def live_ids(rt: Runtime) -> list[int]:
    with rt.session() as s:
        return list(s.scalars(sa.select(FailedJob.id).where(FailedJob.deleted_at.is_(None),
                                                            FailedJob.retried_at.is_(None)).order_by(FailedJob.id)))


async def until(pilot, condition) -> None:
    """Let the event loop run until ``condition()`` holds (no time limit asserted)."""
    for _ in range(100_000):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError("never happened")


async def wait_for(pilot, event: threading.Event) -> None:
    await until(pilot, event.is_set)


# ------------------------------------------------------------------ detail screens


async def test_retry_and_forget_from_a_failed_jobs_detail_change_the_store_and_audit(runtime):
    ids = seed_failed(runtime, 3)
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "enter")
        assert isinstance(app.screen, DetailScreen)
        assert "r: retry   d: forget" in str(app.screen.query_one(".hint").render())
        await press(app, pilot, "r")  # as r in the list: one job, no question
        assert not isinstance(app.screen, DetailScreen)
        assert runtime.huey.pending_count() == 1 and live_ids(runtime) == ids[:2]
        assert f"$ erpq queue retry {ids[2]}" in app.messages[-1]
        assert (audit(runtime)[0].action, audit(runtime)[0].target) == ("failed.retry", str(ids[2]))
        await press(app, pilot, "enter", "d")
        assert isinstance(app.screen, ConfirmScreen)  # the list's confirmation
        await press(app, pilot, "y")
        assert live_ids(runtime) == ids[:1]
        assert [a.action for a in audit(runtime)[:2]] == ["failed.forget", "failed.retry"]
        await press(app, pilot, "u")  # and the list's undo
        assert live_ids(runtime) == ids[:2]


async def test_detail_keys_follow_rebinding_and_unoffered_ones_do_nothing(runtime, tmp_path):
    from conftest import make_settings

    rt = Runtime(make_settings(tmp_path, console={"keys": {"detail.retry": "R"}}))
    try:
        ids = seed_failed(rt, 1)
        app = make(rt)
        async with app.run_test(size=(80, 24)) as pilot:
            await press(app, pilot, "3", "enter")
            assert "R: retry" in str(app.screen.query_one(".hint").render())
            await press(app, pilot, "f")  # no drill-down from a single failed job
            assert isinstance(app.screen, DetailScreen) and live_ids(rt) == ids
            await press(app, pilot, "R")
            assert live_ids(rt) == [] and rt.huey.pending_count() == 1
    finally:
        rt.close()


# ------------------------------------------------------------------ drill-downs


async def test_cluster_drills_down_to_its_failed_jobs(runtime):
    boom = seed_failed(runtime, 3, message="boom {i}")
    seed_failed(runtime, 2, message="timeout after {i}s")
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "c", "enter")
        assert isinstance(app.screen, DetailScreen)
        await press(app, pilot, "f")
        view = app.view("failed")
        assert not view.clustered and app.active_view is view
        assert sorted(int(k) for k in rows(app, "failed").keys) == boom
        assert "of cluster ConsoleTestJob RuntimeError" in head(app, "failed")
        await press(app, pilot, "R")  # retry all: of the drill-down only
        assert "Retry 3 failed jobs of cluster" in app.screen.question
        await press(app, pilot, "y")
        assert len(live_ids(runtime)) == 2 and runtime.huey.pending_count() == 3
        await press(app, pilot, "escape")  # back to every failed job
        assert len(rows(app, "failed").keys) == 2 and "of cluster" not in head(app, "failed")


async def test_failed_run_drills_down_to_its_failed_job(runtime):
    ids = seed_failed(runtime, 3)
    with runtime.session() as s:
        failed = {f.id: f.task_id for f in s.scalars(sa.select(FailedJob))}
        now = dt.datetime.now(dt.UTC)
        s.execute(sa.insert(JobRun), [
            {"task_id": failed[ids[0]], "task_name": "ConsoleTestJob", "kind": "job", "status": "failed",
             "attempt": 1, "enqueued_at": now, "started_at": now, "error": "RuntimeError: boom 0"},
            {"task_id": "ok-run", "task_name": "ConsoleTestJob", "kind": "job", "status": "success",
             "attempt": 1, "enqueued_at": now, "started_at": now}])
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "6", "enter")  # newest first: the successful run
        assert "f: failed jobs" not in str(app.screen.query_one(".hint").render())
        await press(app, pilot, "escape", "j", "enter")
        assert "f: failed jobs" in str(app.screen.query_one(".hint").render())
        await press(app, pilot, "f")
        assert app.active_view.KEY == "failed", app.messages
        assert rows(app, "failed").keys == [str(ids[0])]
        assert "of run #" in head(app, "failed")


async def test_batch_failures_drill_down_to_those_failed_jobs(runtime):
    ids = seed_failed(runtime, 4)
    bid = runtime.dispatch_batch("deal.created fan-out", "ConsoleTestJob", [((i,), {}) for i in range(3)])
    with runtime.session() as s:
        task_ids = list(s.scalars(sa.select(FailedJob.task_id).where(FailedJob.id.in_(ids[1:3]))))
        s.execute(sa.update(JobBatch).where(JobBatch.id == bid).values(failed=2, failed_job_ids=task_ids))
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "5", "enter")
        assert "f: failed jobs" in str(app.screen.query_one(".hint").render())
        await press(app, pilot, "f")
        assert app.active_view.KEY == "failed"
        assert sorted(int(k) for k in rows(app, "failed").keys) == ids[1:3]
        assert "of batch deal.created fan-out" in head(app, "failed")


# ------------------------------------------------------------------ bulk with progress


async def test_bulk_retry_of_3000_shows_progress_stays_responsive_and_audits_once(runtime):
    seed_failed(runtime, 3000)
    app = make(runtime, GatedOps)
    ops: GatedOps = app.ops  # type: ignore[assignment]
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "R")
        assert "Retry 3,000 failed jobs" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, ops.reached)  # held after the first chunk
        await pilot.pause()
        line = app.query_one("#progress")
        assert line.display and f"retrying {BULK_CHUNK}/3,000" in line.text and f"{app._stop_key()}: stop" in line.text
        assert len(live_ids(runtime)) == 3000 - BULK_CHUNK  # each chunk commits on its own
        await pilot.press("1")  # the console still takes keys while the bulk runs
        await pilot.pause()
        assert app.active_view.KEY == "schedule"
        await pilot.press("3", "R")  # a second bulk is refused while one runs
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await pilot.pause()
        assert f"wait, retrying is still running ({app._stop_key()} stops it)" in app.messages[-1]
        ops.gate.set()
        await settle(app, pilot)
        assert live_ids(runtime) == [] and runtime.huey.pending_count() == 3000
        assert not app.query_one("#progress").display
        assert any("3,000 failed jobs re-enqueued   $ erpq queue retry --all" in m for m in app.messages)
        retries = [a for a in audit(runtime) if a.action == "failed.retry"]
        assert len(retries) == 1 and retries[0].command == "erpq queue retry --all"


async def test_stop_key_ends_a_bulk_action_after_its_current_chunk(runtime):
    seed_failed(runtime, 3 * BULK_CHUNK)
    app = make(runtime, GatedOps)
    ops: GatedOps = app.ops  # type: ignore[assignment]
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "R")
        await pilot.press("y")
        await wait_for(pilot, ops.reached)
        await pilot.press("ctrl+x")
        await pilot.pause()
        assert "stopping after this chunk" in app.query_one("#progress").text
        ops.gate.set()
        await settle(app, pilot)
        assert len(live_ids(runtime)) == 2 * BULK_CHUNK and runtime.huey.pending_count() == BULK_CHUNK
        assert f"stopped after {BULK_CHUNK} of {3 * BULK_CHUNK}" in app.messages[-1]
        assert len([a for a in audit(runtime) if a.action == "failed.retry"]) == 1


# ------------------------------------------------------------------ marks


async def test_marked_rows_are_the_ones_acted_on_and_marks_survive_a_refresh(runtime):
    ids = seed_failed(runtime, 5)  # newest first on screen: ids[4], ids[3], ...
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3", "space", "j", "space")  # marks ids[4] and ids[2]
        table = rows(app, "failed")
        assert set(table.marked) == {str(ids[4]), str(ids[2])}
        assert "2 marked" in head(app, "failed")
        await press(app, pilot, "ctrl+r")
        assert set(table.marked) == {str(ids[4]), str(ids[2])}
        assert str(table.get_row(str(ids[2]))[0]) == KeyedTable.MARK
        await press(app, pilot, "r")
        assert app.screen.question.startswith("Retry 2 marked failed jobs")
        await press(app, pilot, "y")
        assert live_ids(runtime) == [ids[0], ids[1], ids[3]]
        assert table.marked == {}
        await press(app, pilot, "asterisk")  # the whole page
        assert len(table.marked) == 3
        await press(app, pilot, "asterisk")  # again: none
        assert table.marked == {}
        await press(app, pilot, "space", "escape")  # Esc drops the marks first
        assert table.marked == {} and app.active_view.KEY == "failed"
        await press(app, pilot, "g", "space", "d", "y")
        assert live_ids(runtime) == [ids[0], ids[1]]


async def test_marked_queue_jobs_are_cancelled_and_others_kept(runtime):
    for i in range(4):
        runtime.enqueue("ConsoleTestJob", i)
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "2", "space", "space")
        marked = [rows(app, "queue").record(k).id for k in rows(app, "queue").marked]
        await press(app, pilot, "c")
        assert app.screen.question.startswith("Cancel 2 marked jobs")
        await press(app, pilot, "y")
        assert runtime.huey.pending_count() == 2
        left = [rows(app, "queue").record(k).id for k in rows(app, "queue").keys]
        assert not set(marked) & set(left) and len(left) == 2
        assert [a.action for a in audit(runtime)] == ["queue.cancel", "queue.cancel"]


# ------------------------------------------------------------------ sort


async def test_sort_cycles_columns_and_matches_the_database(runtime):
    now = dt.datetime.now(dt.UTC)
    names = ["Zeta", "alpha", "Mid", "alpha", "Beta", "Mid"]
    with runtime.session() as s:
        s.execute(sa.insert(FailedJob), [
            {"task_id": f"t{i}", "task_name": n, "args": {}, "payload": b"", "exception_type": "E",
             "exception": "x", "attempts": 1, "failed_at": now - dt.timedelta(minutes=(7 * i) % 5),
             "reason": "error"} for i, n in enumerate(names)])
        all_rows = [(f.id, f.task_name, f.failed_at) for f in s.scalars(sa.select(FailedJob))]
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "3")
        table = rows(app, "failed")
        assert [int(k) for k in table.keys] == sorted((r[0] for r in all_rows), reverse=True)
        await press(app, pilot, "o")
        assert [int(k) for k in table.keys] == sorted(r[0] for r in all_rows)
        assert str(table.columns[table.ordered_columns[1].key].label) == "Id ▲"
        await press(app, pilot, "o")
        by_task = [int(k) for k in table.keys]
        assert by_task == [f.id for f in app.ops.failed(sort="task").items]
        assert [n for n in (next(r[1] for r in all_rows if r[0] == i) for i in by_task)] == sorted(
            names, key=lambda n: n.encode())  # the database's (binary) collation
        await press(app, pilot, "O")
        assert [int(k) for k in table.keys] == by_task[::-1]
        assert "Task ▼" in [str(c.label) for c in table.ordered_columns]
        await press(app, pilot, "o")
        assert [int(k) for k in table.keys] == [f.id for f in app.ops.failed(sort="-failed").items]
        await press(app, pilot, "o")  # back to the view's own order, no arrow
        assert [int(k) for k in table.keys] == sorted((r[0] for r in all_rows), reverse=True)
        assert not any("▲" in str(c.label) or "▼" in str(c.label) for c in table.ordered_columns)


async def test_activity_sorts_runs_by_task_in_the_database(runtime):
    now = dt.datetime.now(dt.UTC)
    with runtime.session() as s:
        s.execute(sa.insert(JobRun), [{"task_id": f"t{i}", "task_name": n, "kind": "job", "status": st,
                                       "attempt": 1, "enqueued_at": now}
                                      for i, (n, st) in enumerate([("b", "success"), ("a", "failed"),
                                                                   ("c", "success"), ("a", "success")])])
    app = make(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "6", "o", "o")
        names = [rows(app, "activity").record(k).task_name for k in rows(app, "activity").keys]
        assert names == ["a", "a", "b", "c"]
        assert [rows(app, "activity").record(k).id for k in rows(app, "activity").keys] == [
            r.id for r in app.ops.runs(sort="task").items]


def test_sorted_failed_pages_are_read_along_an_index(runtime):
    """On SQLite every order of the Failed view reads a page along an index, never sorting
    every live row in a temporary B-tree (what keeps a page instant at 1,000,000 rows)."""
    ops = Ops(runtime, ACTOR)
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY" in statement:
            seen.append((statement, parameters))

    sa.event.listen(runtime.engine, "before_cursor_execute", grab)
    try:
        for sort in ["id", "-id", "task", "-task", "failed", "-failed"]:
            seen.clear()
            ops.failed(sort=sort)
            (statement, params), = seen
            with runtime.engine.connect() as c:
                plan = " ".join(r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
            assert "TEMP B-TREE" not in plan, (sort, plan)
    finally:
        sa.event.remove(runtime.engine, "before_cursor_execute", grab)


def test_bad_sort_and_too_many_ids_are_refused(runtime):
    from erpq.ops import Invalid

    ops = Ops(runtime, ACTOR)
    with pytest.raises(Invalid, match="cannot sort by 'payload'"):
        ops.failed(sort="payload")
    with pytest.raises(Invalid, match="cannot sort by"):
        ops.runs(sort="-error")
    with pytest.raises(Invalid, match="at most 10,000"):
        ops.failed(ids=list(range(1, 10_002)))
