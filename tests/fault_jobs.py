"""Jobs for the fault tests (tests/test_faults.py), run by real runner processes.

Each job's effect is a row of ``fault_effects`` (n, pid) in the erpq database,
with no unique key, so a job that ran twice shows as two rows. A job given a
``gate`` path writes ``<gate>.started.<n>`` and waits for the gate file before
its effect, so a test can hold jobs in flight across a fault.

Nothing is registered on import: ``register()`` (the jobs) and
``register_periodic()`` (the periodic tasks) are called by the runner processes
and, for the length of a test, by the test process, so no other test's runtime
sees them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa

from erpq.runtime import current, job
from erpq.runtime.registry import JOBS, periodic

EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS fault_effects (n INTEGER NOT NULL, pid INTEGER NOT NULL)"

TICK = "faults:tick"
HOLD = "faults:hold"


def _wait_gate(gate: str, n: int) -> None:
    Path(f"{gate}.started.{n}").write_text(str(os.getpid()), encoding="utf-8")
    deadline = time.monotonic() + 120
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _effect(n: int) -> None:
    with current().session() as s:
        s.execute(sa.text("INSERT INTO fault_effects (n, pid) VALUES (:n, :pid)"), {"n": n, "pid": os.getpid()})


def fault_effect_job(n: int, pause: float = 0.0, gate: str = "", pad: str = "") -> None:
    """Insert the effects row of n (retried while the database is away); ``pad``
    only makes the task message big."""
    if gate:
        _wait_gate(gate, n)
    if pause:
        time.sleep(pause)
    _effect(n)


def fault_once_job(n: int, gate: str = "") -> None:
    """Insert the effects row of n; no retry, so an outage fails it."""
    if gate:
        _wait_gate(gate, n)
    _effect(n)


def _tick() -> None:
    """Every minute: nothing but its run-history row."""


def _hold() -> None:
    """Hold the task's lease lock until $ERPQ_FAULTS_DIR/hold.release exists."""
    folder = Path(os.environ["ERPQ_FAULTS_DIR"])
    (folder / f"hold.started.{os.getpid()}").write_text("", encoding="utf-8")
    deadline = time.monotonic() + 120
    while not (folder / "hold.release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


JOB_NAMES = ("FaultEffectJob", "FaultOnceJob")


def register() -> None:
    job("FaultEffectJob", retries=20, retry_delay=0.5)(fault_effect_job)
    job("FaultOnceJob")(fault_once_job)


def register_periodic() -> None:
    periodic(TICK, cron="* * * * *", description="fault test tick")(_tick)
    periodic(HOLD, cron="0 0 1 1 *", description="fault test lock holder")(_hold)


def unregister() -> None:
    for name in (*JOB_NAMES, TICK, HOLD):
        JOBS.pop(name, None)
