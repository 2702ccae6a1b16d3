"""Idle SQLite runners are woken by an enqueue on the same host (erpq.runtime.wake).

The runners here poll once an hour (``initial_delay = max_delay = 3600``), so a
job that runs within the tests' generous waits was started by a wake-up, not
by a poll. Each test first waits until every worker is waiting, so the job
cannot be found by a dequeue that was already under way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import testjobs
from conftest import make_settings
from erpq.models import JobRun
from erpq.runtime import EmbeddedRunner, Runtime, set_current, wake
from erpq.runtime.runner import ErpqWorker
from polling import wait_until

HOUR = {"initial_delay": 3600, "max_delay": 3600}


@pytest.fixture(autouse=True)
def _reset():
    testjobs.reset()
    yield
    testjobs.reset()


@pytest.fixture
def idle(runtime):
    """A started runner of ``runtime`` polling hourly; yields (runner, listener)."""
    runners = []

    def start(workers: int = 1, rt=None) -> tuple[EmbeddedRunner, wake.Listener]:
        rt = rt or runtime
        runner = EmbeddedRunner(rt, workers=workers, periodic=False, **HOUR)
        runner.start()
        runners.append(runner)
        listener = rt.huey.storage.wake_listener
        assert listener is not None and listener.listening
        wait_until(lambda: listener.waiting == workers, message=f"{workers} idle workers waiting")
        return runner, listener

    yield start
    for runner in runners:
        runner.stop()


def test_an_enqueue_wakes_an_idle_worker_polling_hourly(runtime, idle):
    runner, listener = idle()
    path = listener.path
    assert Path(path).parent == wake.wake_dir(runtime.settings.sqlite_path(runtime.settings.queue.url))
    runtime.enqueue("TestEcho", "woken")
    wait_until(lambda: testjobs.ECHOED == ["woken"], timeout=60, message="the job to run")
    # and again: the worker went back to waiting after the job
    wait_until(lambda: listener.waiting == 1, message="the worker waiting again")
    runtime.enqueue("TestEcho", "again")
    wait_until(lambda: testjobs.ECHOED == ["woken", "again"], timeout=60, message="the second job")
    runner.stop()  # wakes the waiting worker: no hour-long stop
    assert not os.path.exists(path), "a stopped runner removes its socket"
    assert not os.path.exists(os.path.dirname(path)), "and the last one the directory"


def test_the_wake_directory_is_next_to_the_queue_file():
    assert wake.wake_dir("/srv/erpq/var/queue.db") == Path("/srv/erpq/var/queue.db.wake")
    assert wake.wake_dir(":memory:") is None


def test_fair_queue_wakes_too(tmp_path, idle):
    rt = Runtime(make_settings(tmp_path, queue={"fair": True}))
    set_current(rt)
    try:
        runner, _listener = idle(rt=rt)
        rt.enqueue("TestEcho", "fair", tenant_id=3)
        wait_until(lambda: testjobs.ECHOED == ["fair"], timeout=60, message="the job to run")
        runner.stop()
    finally:
        set_current(None)
        rt.close()


def test_several_idle_workers_each_get_work(runtime, idle):
    runner, _listener = idle(workers=3)
    keys = ["a", "b", "c"]
    for key in keys:
        runtime.enqueue("TestBlock", key)
    # All three run at once: each job blocks its worker until released.
    for key in keys:
        assert testjobs.block(key)[0].wait(60), f"TestBlock {key} never started: a worker was not woken"
    for key in keys:
        testjobs.block(key)[1].set()
    wait_until(lambda: sorted(testjobs.ECHOED) == keys, message="the three jobs to finish")


def test_a_second_runner_on_the_same_queue_is_woken_as_well(tmp_path, runtime, idle):
    other = Runtime(runtime.settings)
    try:
        idle(workers=1)
        idle(workers=1, rt=other)
        assert len(os.listdir(runtime.huey.storage.waker.dir)) == 2
        runtime.enqueue("TestBlock", "one")
        assert testjobs.block("one")[0].wait(60)
        runtime.enqueue("TestBlock", "two")  # the first runner's only worker is busy
        assert testjobs.block("two")[0].wait(60), "the second runner was not woken"
        for key in ("one", "two"):
            testjobs.block(key)[1].set()
        wait_until(lambda: sorted(testjobs.ECHOED) == ["one", "two"])
    finally:
        for key in ("one", "two"):
            testjobs.block(key)[1].set()


def test_schedule_run_from_another_process_wakes_the_idle_runner(tmp_path, runtime, idle):
    idle(workers=1)
    config = tmp_path / "config.toml"
    config.write_text('[queue]\nurl = "sqlite:///queue.db"\n[database]\nurl = "sqlite:///erpq.db"\n'
                      '[log]\npath = "erpq.log"\n')
    task = "crm:resume-workflows"
    done = subprocess.run([sys.executable, "-m", "erpq.cli", "--config", str(config), "schedule", "run", task],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    def started():
        with runtime.read_session() as s:
            return s.scalar(sa.select(JobRun.started_at).where(JobRun.task_name == task,
                                                                JobRun.trigger == "manual"))

    wait_until(started, timeout=60, message=f"the manual run of {task} to start")


def test_stale_sockets_and_strangers_in_the_wake_directory_do_not_break_enqueue(runtime, idle):
    storage = runtime.huey.storage
    directory = storage.waker.dir
    directory.mkdir(mode=0o700)
    stale = directory / f"{storage.waker.prefix}.1.dead0000.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(stale))
    s.close()  # a runner killed without removing its socket
    stranger = directory / f"{storage.waker.prefix}.2.file0000.sock"
    stranger.write_text("not a socket")
    other_queue = directory / "00000000.3.other000.sock"
    o = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    o.bind(str(other_queue))  # another queue's runner in the same file: left alone
    try:
        runtime.enqueue("TestEcho", "no runner")
        assert not stale.exists(), "the stale socket is removed"
        assert stranger.exists(), "only sockets are removed"
        assert runtime.huey.pending_count() == 1
        assert directory.exists(), "a directory with other entries stays"
        with pytest.raises(BlockingIOError):
            o.recv(16, socket.MSG_DONTWAIT)  # no wake-up for another queue

        idle(workers=1)  # a live runner among the leftovers is still woken
        wait_until(lambda: testjobs.ECHOED == ["no runner"], timeout=60)  # found by its first dequeue
        runtime.enqueue("TestEcho", "live")
        wait_until(lambda: testjobs.ECHOED == ["no runner", "live"], timeout=60, message="the woken run")
    finally:
        o.close()
        other_queue.unlink()
        stranger.unlink()


def test_the_last_stale_socket_takes_its_directory_along(runtime):
    waker = runtime.huey.storage.waker
    waker.dir.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(waker.dir / f"{waker.prefix}.1.dead0000.sock"))
    s.close()
    runtime.enqueue("TestEcho", "x")
    assert not waker.dir.exists()


def test_enqueue_without_a_wake_directory_and_a_runner_that_cannot_listen(tmp_path):
    settings = make_settings(tmp_path)
    rt = Runtime(settings)
    set_current(rt)
    try:
        directory = rt.huey.storage.waker.dir
        assert not directory.exists()
        rt.enqueue("TestEcho", "no directory")  # nobody to wake: fine
        directory.write_text("a file where the directory should be")
        rt.enqueue("TestEcho", "a file")
        runner = EmbeddedRunner(rt, workers=1, periodic=False)  # usual polling
        runner.start()
        try:
            assert rt.huey.storage.wake_listener is None  # no wake-ups, polling only
            wait_until(lambda: testjobs.ECHOED == ["no directory", "a file"], timeout=60)
        finally:
            runner.stop()
    finally:
        set_current(None)
        rt.close()


def test_a_wake_up_resets_the_workers_polling_backoff(runtime):
    storage = runtime.huey.storage
    listener = storage.listen()
    try:
        worker = ErpqWorker(runtime.huey, threading.Event(), default_delay=0.25, max_delay=3600, backoff=2.0)
        worker.delay = 3000.0  # long idle: fully backed off
        worker._seen = listener.generation
        t = threading.Thread(target=worker.sleep, daemon=True)
        t.start()
        wait_until(lambda: listener.waiting == 1, message="the worker waiting")
        assert storage.waker.wake() == 1
        t.join(60)
        assert not t.is_alive(), "the wake-up did not end the wait"
        assert worker.delay == 0.25
    finally:
        storage.stop_listening()


def test_a_queue_path_too_long_for_a_socket_uses_a_private_temp_directory(tmp_path):
    deep = tmp_path.joinpath(*["d" * 40] * 3)
    deep.mkdir(parents=True)
    queue_file = deep / "queue.db"
    directory = wake.wake_dir(queue_file)
    assert not str(directory).startswith(str(deep))
    assert directory == wake.wake_dir(queue_file), "senders and runners agree on it"
    listener = wake.Listener(queue_file, "erpq")
    assert listener.start()
    try:
        assert os.stat(directory).st_mode & 0o777 == 0o700
        seen = listener.generation
        assert wake.Waker(queue_file, "erpq").wake() == 1
        assert listener.wait(seen, 60)
        assert len(listener.path) <= wake.MAX_SOCKET_PATH
    finally:
        listener.stop()
    assert not directory.exists()


def test_a_symlinked_private_directory_turns_wake_ups_off(tmp_path):
    deep = tmp_path.joinpath(*["e" * 40] * 3)
    deep.mkdir(parents=True)
    queue_file = deep / "queue.db"
    directory = wake.wake_dir(queue_file)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    directory.symlink_to(target)
    try:
        assert not wake.Listener(queue_file, "erpq").start()
        assert wake.Waker(queue_file, "erpq").wake() == 0
        assert os.listdir(target) == []
    finally:
        directory.unlink()
