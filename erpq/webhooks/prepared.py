"""Core statements compiled once per dialect and run on the DBAPI connection.

The webhook hot path is one read and one UPDATE per delivery. Through a
SQLAlchemy ``Connection`` each costs 30-60 µs of Python (checkout events,
execution context, result wrapping) against ~5 µs for the statement itself,
and with several worker threads that overhead, not the database, set the
delivery rate. ``Prepared`` keeps SQLAlchemy for what it is good at (writing
the SQL for each dialect, converting values with the columns' types) and does
it once: the SQL string, the parameter order and the bind and result
processors are computed per dialect on first use, then each run is a plain
``cursor.execute``.

``transaction(engine, write=...)`` is the matching connection handling: a
pooled DBAPI connection; a write takes SQLite's write lock up front
(``BEGIN IMMEDIATE``, as erpq's engines do) and commits; a read on SQLite runs
in autocommit mode (one statement is its own snapshot).

Only for statements without expanding parameters (no ``in_()`` lists).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ClauseElement


class _Plan(NamedTuple):
    sql: str
    names: tuple[str, ...]  # parameter names, in order for positional paramstyles
    positional: bool
    defaults: dict[str, Any]  # values fixed in the statement (literals)
    bind: dict[str, Callable[[Any], Any]]  # name -> bind processor (only where one exists)
    result: tuple[Callable[[Any], Any] | None, ...]  # per result column


class Prepared:
    def __init__(self, stmt: ClauseElement):
        self.stmt = stmt
        self._plans: dict[tuple, _Plan] = {}
        self._lock = threading.Lock()
        columns = getattr(stmt, "selected_columns", None)
        self.Row = NamedTuple("Row", [(c.key, Any) for c in columns]) if columns is not None else None

    def _plan(self, dialect: Dialect) -> _Plan:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = self._plans.get(key) or self._compile(dialect)
                self._plans[key] = plan
        return plan

    def _compile(self, dialect: Dialect) -> _Plan:
        compiled = self.stmt.compile(dialect=dialect)
        binds = compiled.binds
        names = tuple(compiled.positiontup) if compiled.positional else tuple(binds)
        defaults = {name: bp.value for name, bp in binds.items() if bp.value is not None or not bp.required}
        bind = {}
        for name, bp in binds.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                bind[name] = proc
        result: tuple = ()
        if self.Row is not None:
            result = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                           for c in self.stmt.selected_columns)
        return _Plan(compiled.string, names, compiled.positional, defaults, bind, result)

    def execute(self, cursor, dialect: Dialect, **values: Any):
        """Run the statement with ``values`` for its named bind parameters; returns the cursor."""
        plan = self._plan(dialect)
        params = {**plan.defaults, **values}
        for name, proc in plan.bind.items():
            params[name] = proc(params[name])
        if plan.positional:
            cursor.execute(plan.sql, tuple(params[name] for name in plan.names))
        else:
            cursor.execute(plan.sql, params)
        return cursor

    def first(self, cursor, dialect: Dialect, **values: Any):
        """The first result row (a named tuple, values converted by the column types), or None."""
        raw = self.execute(cursor, dialect, **values).fetchone()
        if raw is None:
            return None
        procs = self._plan(dialect).result
        return self.Row(*(v if p is None or v is None else p(v) for p, v in zip(procs, raw, strict=True)))


_sqlite_write_locks: dict[int, threading.Lock] = {}


def sqlite_write_lock(engine: Engine) -> threading.Lock:
    """The process's turn-taking lock for writes to a SQLite database.

    SQLite has one writer at a time, and a thread that finds the database
    locked sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...): with several
    workers that sleeping, not the work, set the pace. Waiting on a lock
    wakes the next thread as soon as the previous commit is done.
    """
    return _sqlite_write_locks.setdefault(id(engine), threading.Lock())


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Any]:
    """A DBAPI cursor on a pooled connection: committed at the end when ``write``,
    rolled back on error; the connection goes back to the pool either way."""
    sqlite = engine.dialect.name == "sqlite"
    lock = sqlite_write_lock(engine) if write and sqlite else None
    if lock is not None:
        lock.acquire()
    try:
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                if lock is not None:
                    cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                if write:
                    conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool (which resets it)
    finally:
        if lock is not None:
            lock.release()
