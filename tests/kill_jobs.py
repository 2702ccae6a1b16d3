"""A job for the kill test, and the entry point its consumers load.

    huey_consumer kill_jobs.huey -w 2 -k thread     (PYTHONPATH=tests, ERPQ_CONFIG=...)

Importing this module only registers ``KillTestJob``; ``kill_jobs.huey`` builds
the configured runtime (``erpq.tasks``) on first access, so the test process can
import the module without building a runtime from some other config.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from erpq.runtime import job


@job("KillTestJob")
def kill_test_job(path: str) -> None:
    """Append a line; the first attempt (no marker file yet) then hangs for 30 s."""
    out = Path(path)
    marker = out.with_suffix(".started")
    with out.open("a", encoding="utf-8") as fh:
        fh.write(f"start {os.getpid()}\n")
    if not marker.exists():
        marker.write_text(str(os.getpid()), encoding="utf-8")
        time.sleep(30)
    with out.open("a", encoding="utf-8") as fh:
        fh.write("done\n")


def __getattr__(name: str):
    if name == "huey":
        from erpq.tasks import huey

        return huey
    raise AttributeError(name)
