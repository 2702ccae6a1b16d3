"""At-least-once delivery with real consumer processes: a consumer SIGKILLed in the
middle of a job does not lose it; a consumer stopped by a signal exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import kill_jobs  # noqa: F401  (registers KillTestJob in this process too)
from conftest import REDIS_URL, _reset_redis, need, redis_available
from erpq.config import load
from erpq.models import FailedJob, JobRun, Runner
from erpq.runtime import Runtime
from polling import wait_until

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent


class Setup:
    def __init__(self, tmp: Path, queue_url: str, queue_name: str):
        self.tmp = tmp
        self.config = tmp / "config.toml"
        self.config.write_text(
            f'[queue]\nurl = "{queue_url}"\nname = "{queue_name}"\nworkers = 2\n'
            '[database]\nurl = "sqlite:///erpq.db"\n'
            '[log]\npath = "erpq.log"\n'
            "[runner]\nheartbeat_s = 0.5\ndead_after_s = 2.0\nperiodic_check_s = 1\n",
            encoding="utf-8",
        )
        self.rt = Runtime(load(self.config))
        self.procs: list[subprocess.Popen] = []

    def consumer(self, *extra: str) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
        env["ERPQ_CONFIG"] = str(self.config)
        out = (self.tmp / f"consumer{len(self.procs) + 1}.out").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "huey.bin.huey_consumer", "kill_jobs.huey", "-w", "2", "-k", "thread", *extra],
            cwd=self.tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        n = self.procs.index(proc) + 1
        return (self.tmp / f"consumer{n}.out").read_text(encoding="utf-8", errors="replace")

    def runner_row(self, proc: subprocess.Popen) -> Runner | None:
        with self.rt.read_session() as s:
            return s.scalars(sa.select(Runner).where(Runner.pid == proc.pid)
                             .order_by(Runner.started_at.desc())).first()

    def wait_registered(self, proc: subprocess.Popen) -> Runner:
        def registered():
            assert proc.poll() is None, f"consumer exited early:\n{self.output(proc)}"
            row = self.runner_row(proc)
            return row if row is not None and row.stopped_at is None else None

        return wait_until(registered, message="the consumer to register its runner")

    def wait_ready(self, proc: subprocess.Popen) -> Runner:
        """Registered, and its signal handlers installed (Huey does that last in start())."""
        row = self.wait_registered(proc)
        status = Path(f"/proc/{proc.pid}/status")
        if status.exists():  # Linux: read the caught-signals mask; SIGHUP's handler is set last
            def handlers_set():
                caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
                return int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1))

            wait_until(handlers_set, message="the consumer's signal handlers")
        return row

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.rt.close()


@pytest.fixture(params=["sqlite", "redis"])
def setup(request, tmp_path) -> Iterator[Setup]:
    if request.param == "redis":
        need("Redis", redis_available(), REDIS_URL)
        name = f"k{uuid.uuid4().hex[:10]}"
        s = Setup(tmp_path, REDIS_URL, name)
    else:
        name = "erpq"
        s = Setup(tmp_path, "sqlite:///queue.db", name)
    yield s
    s.close()
    if request.param == "redis":
        _reset_redis(REDIS_URL, name)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_job_survives_a_killed_consumer(setup, signum):
    """SIGKILL: no cleanup at all. SIGTERM: Huey's immediate stop, which abandons running jobs."""
    rt = setup.rt
    out = setup.tmp / "kill.txt"
    marker = out.with_suffix(".started")
    task_id = rt.enqueue("KillTestJob", str(out))

    first = setup.consumer("-n")
    wait_until(marker.exists, message="the job to start in consumer 1")
    assert rt.huey.storage.inflight_count() == 1
    if signum == signal.SIGTERM:
        setup.wait_ready(first)
    first.send_signal(signum)
    first.wait(30)
    assert "done" not in out.read_text(encoding="utf-8")

    second = setup.consumer("-n")
    wait_until(lambda: "done" in out.read_text(encoding="utf-8"),
               message="the job to complete in consumer 2")

    def success_rows():
        with rt.read_session() as s:
            return s.scalars(sa.select(JobRun).where(JobRun.task_id == task_id)).all()

    rows = wait_until(success_rows, message="the history row")
    assert [r.status for r in rows] == ["success"]
    assert rows[0].runner == setup.runner_row(second).id
    wait_until(lambda: rt.huey.storage.inflight_count() == 0, message="the claim to be released")
    assert rt.huey.pending_count() == 0
    with rt.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(FailedJob)) == 0
        dead = s.scalars(sa.select(Runner).where(Runner.pid == first.pid)).one()
        assert dead.stopped_at is not None  # declared dead by consumer 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines == [f"start {first.pid}", f"start {second.pid}", "done"]

    setup.wait_ready(second)
    second.send_signal(signal.SIGINT)
    assert second.wait(30) == 0, setup.output(second)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_consumer_stops_cleanly_on_signal(setup, signum):
    proc = setup.consumer("-n")  # no periodic tasks: truly idle
    setup.wait_ready(proc)
    proc.send_signal(signum)
    assert proc.wait(30) == 0, setup.output(proc)
    row = setup.runner_row(proc)
    assert row.stopped_at is not None
    assert "Traceback" not in setup.output(proc)
    assert setup.rt.huey.storage.inflight_count() == 0
