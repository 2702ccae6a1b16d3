"""Telling an outage (queue store or database down, restarting, locked, disk
full) from a bug, and riding one out.

A runner meets outages in its housekeeping, its periodic check and around each
job. ``unreachable`` turns such an error into one line for the log;
``retrying`` calls a step again while the outage lasts (bounded), so that the
outcome of a job that already ran is recorded once the database is back rather
than lost.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("erpq.runner")

#: How long ``retrying`` keeps trying by default (seconds).
RETRY_FOR_S = 30.0


#: Words of a driver error that says the server or file cannot be used right now,
#: as opposed to a wrong statement or a missing table (also OperationalError).
OUTAGE_WORDS = (
    "database is locked", "table is locked", "disk is full", "no space left", "disk i/o error",
    "unable to open database", "connect", "connection", "server closed", "terminating",
    "shutting down", "starting up", "in recovery", "gone away", "timeout", "timed out",
)


def unreachable(exc: BaseException) -> str | None:
    """One line when ``exc`` says the queue store or the database cannot be used
    right now (down, restarting, locked, disk full), else None."""
    import sqlalchemy.exc

    try:
        import redis
    except ImportError:  # a SQLite-only install (no erpq[redis]): no Redis error to see
        redis = None
    if redis is not None and isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"queue store: {exc}"
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        lines = str(exc.orig or exc).strip().splitlines()
        first = lines[0] if lines else type(exc.orig).__name__
        if exc.connection_invalidated or (
                isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
                and any(w in first.lower() for w in OUTAGE_WORDS)):
            return f"database: {first}"
        return None
    if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc).lower() for w in OUTAGE_WORDS):
        return f"queue store: {exc}"
    return None


def retrying(fn: Callable[[], T], what: str, retry_for_s: float = RETRY_FOR_S, pause_s: float = 0.5) -> T:
    """``fn()``, called again every ``pause_s`` while it fails with an outage
    (``unreachable``), for up to ``retry_for_s``; any other error, or the last
    outage error, is raised. One warning line when it starts waiting."""
    deadline = time.monotonic() + retry_for_s
    warned = False
    while True:
        try:
            return fn()
        except Exception as exc:
            down = unreachable(exc)
            if down is None or time.monotonic() >= deadline:
                raise
            if not warned:
                log.warning("%s waits for the outage to end: %s", what, down)
                warned = True
        time.sleep(pause_s)
