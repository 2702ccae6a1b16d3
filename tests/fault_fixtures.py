"""Throwaway servers and real runner processes for the fault tests.

Every server here is the test's own, on a free port in a temp dir, so it can be
killed and restarted; the shared Redis/PostgreSQL are never touched:

- ``RedisServer``: ``redis-server`` with the append-only file on and
  ``appendfsync always`` (a production setup that keeps the queue across a
  restart), killed with SIGKILL and started again on the same port and files.
- ``PgCluster``: ``initdb`` + ``pg_ctl`` as the ``postgres`` user (PostgreSQL
  refuses to run as root), trust auth on 127.0.0.1, restarted with
  ``pg_ctl restart -m immediate`` (a crash, then crash recovery).
- ``Tmpfs``: a small tmpfs mounted (as root) under the test's temp dir, for a
  disk that fills up; always unmounted.
- ``RunnerProc``: ``erpq queue work`` in a subprocess (``python -m
  fault_runner``, which registers the fault jobs), optionally with its wall clock
  faked by libfaketime through a timestamp file the test rewrites.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, port_open
from polling import wait_until

TESTS_DIR = Path(__file__).resolve().parent

#: The long soak of every fault test (more jobs, more restarts): ERPQ_FAULTS_FULL=1.
FULL = os.environ.get("ERPQ_FAULTS_FULL") == "1"

FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)


def write_config(path: Path, queue_url: str, db_url: str, *, queue_name: str = "erpq", workers: int = 2,
                 log: str = "erpq.log", busy_timeout_s: float | None = None, extra: str = "") -> Path:
    busy = f"busy_timeout_s = {busy_timeout_s}\n" if busy_timeout_s is not None else ""
    path.write_text(
        f'[queue]\nurl = "{queue_url}"\nname = "{queue_name}"\nworkers = {workers}\n{busy}'
        f'[database]\nurl = "{db_url}"\n{busy}'
        f'[log]\npath = "{log}"\n'
        "[runner]\nheartbeat_s = 0.5\ndead_after_s = 5.0\nperiodic_check_s = 1\nshutdown_timeout_s = 10\n"
        + extra,
        encoding="utf-8",
    )
    return path


def step_clock(path: Path, offset: str) -> None:
    """Set a faked runner's wall clock offset (libfaketime syntax: "+0", "-1h", "+1h"),
    replacing the file in one step so the runner never reads it half written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(offset + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- runner processes

class RunnerProc:
    """One ``erpq queue work`` process; its output goes to ``<name>.out``."""

    def __init__(self, folder: Path, config: Path, name: str, *, faketime_file: Path | None = None,
                 periodic: bool = False, workers: int = 2):
        self.name, self.folder = name, folder
        self.out_path = folder / f"{name}.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
        env["ERPQ_FAULTS_DIR"] = str(folder)
        env["PYTHONUNBUFFERED"] = "1"
        if periodic:
            env["ERPQ_FAULTS_PERIODIC"] = "1"
        if faketime_file is not None:
            # The wall clock (time(), clock_gettime(CLOCK_REALTIME)) follows the file;
            # the monotonic clock stays real, as when NTP steps a host's clock.
            env.update(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(faketime_file),
                       FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        args = [sys.executable, "-m", "fault_runner", "--config", str(config), "queue", "work",
                "--workers", str(workers)]
        if not periodic:
            args.append("--no-periodic")
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(args, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def wait_started(self) -> None:
        def started():
            assert self.alive(), f"runner {self.name} exited early:\n{self.output()}"
            return "Ctrl+C stops" in self.output()

        wait_until(started, timeout=60, message=f"runner {self.name} to start")

    def stop(self) -> int:
        """SIGTERM (a graceful stop: running jobs finish, claims released); the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"runner {self.name} did not stop on SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def runners():
    """Start runner processes with ``runners(folder, config, name, ...)``; all killed at the end."""
    made: list[RunnerProc] = []

    def start(*args, **kwargs) -> RunnerProc:
        r = RunnerProc(*args, **kwargs)
        made.append(r)
        return r

    yield start
    for r in made:
        r.kill()


# ---------------------------------------------------------------- Redis

class RedisServer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self._ping(), timeout=30, message=f"redis-server on port {self.port}")
        return self

    def _ping(self) -> bool:
        import redis

        assert self.proc is not None and self.proc.poll() is None, (self.folder / "redis.log").read_text()
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (the AOF is what brings the data back)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        wait_until(lambda: not port_open("127.0.0.1", self.port), message="the killed Redis's port to close")

    def stop(self) -> None:
        self.kill()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# ---------------------------------------------------------------- PostgreSQL

def pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PgCluster:
    """A PostgreSQL cluster of the test's own (data dir owned by ``postgres``)."""

    def __init__(self):
        self.bindir = pg_bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="erpq-faults-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", "postgres", "--", str(self.bindir / args[0]), *args[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def init(self) -> PgCluster:
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                          "-E", "UTF8")
        return self

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=60")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "start")

    def restart(self, mode: str = "immediate") -> None:
        # -l again: without it the new server writes to pg_ctl's stdout, which never closes
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode, "-w", "restart")

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg_cluster():
    if pg_bindir() is None:
        pytest.fail("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("there is no 'postgres' user to run a throwaway PostgreSQL as")
    cluster = PgCluster().init()
    cluster.start()
    yield cluster
    cluster.remove()


# ---------------------------------------------------------------- a small disk

class Tmpfs:
    def __init__(self, path: Path, size: str):
        self.path, self.size = path, size
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs (needs root and mount rights): {r.stderr.strip()}")
        self.mounted = True

    def fill(self, name: str = "filler") -> Path:
        """Write zeros until the disk is full; returns the filler file."""
        filler = self.path / name
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 512):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        return filler

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
            self.mounted = False


@pytest.fixture
def small_disk(tmp_path):
    disk = Tmpfs(tmp_path / "disk", "4m")
    yield disk
    disk.unmount()


# ---------------------------------------------------------------- the jobs

@pytest.fixture
def fault_jobs_registered():
    import fault_jobs

    fault_jobs.register()
    yield fault_jobs
    fault_jobs.unregister()


def effects(engine) -> dict[int, int]:
    """n -> how many effect rows it has."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT n, COUNT(*) FROM fault_effects GROUP BY n")).all())


def started(folder: Path, gate: str) -> int:
    return len(list(folder.glob(f"{gate}.started.*")))


def sleep_a_little(seconds: float) -> None:
    """Let a fault last a moment (never a timed assertion: nothing is measured)."""
    time.sleep(seconds)
