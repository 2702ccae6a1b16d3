"""The bad-input harness: run ``erpq`` in-process, dump what it could change, and
check the promise "exit 0 with the effect, or one line with exit 1/2 and nothing
changed" — never a traceback.

Extend it per capability: ``register(Case("webhook add", argv_strategy))`` with a
hypothesis strategy of argv lists (without ``--config``), and optionally
``check(result, before, after)`` for the effect of a success. The property suite
(tests/test_bad_input_props.py) runs every registered case on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from erpq.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(cfg: str, argv: list[str]) -> Result:
    """``erpq --config cfg argv...`` in-process; a traceback is a test failure (re-raised)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--config", cfg, *argv])
        except SystemExit as exc:  # argparse: usage errors (2), --help (0)
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())


def write_config(tmp: Path, database_url: str, queue_url: str = "sqlite:///q.db", extra: str = "") -> str:
    path = tmp / "config.toml"
    path.write_text(f'[queue]\nurl = "{queue_url}"\nworkers = 2\n'
                    f'[database]\nurl = "{database_url}"\n'
                    '[log]\npath = "erpq.log"\n'
                    '[runner]\nheartbeat_s = 0.5\ndead_after_s = 2.0\nperiodic_check_s = 1\n' + extra)
    return str(path)


def dump(cfg: str) -> dict:
    """Every row of every table, and every job in the queue store (what a command could change)."""
    rt = _runtime(cfg)
    if True:
        storage = rt.huey.storage
        state: dict = {"pending": sorted(bytes(d) for _k, d in storage.enqueued_page(0, 100_000)),
                       "scheduled": sorted(bytes(d) for _k, d, _t in storage.scheduled_page(0, 100_000))}
        meta = _METADATA.get(cfg)
        if meta is None:  # reflected once per config (the schema does not change under a test)
            meta = _METADATA[cfg] = sa.MetaData()
            meta.reflect(rt.engine)
        with rt.engine.connect() as conn:  # a new transaction: sees every commit
            for table in meta.sorted_tables:
                rows = conn.execute(sa.select(table)).all()
                state[table.name] = sorted(repr(tuple(r)) for r in rows)
        return state


_RUNTIMES: dict = {}
_METADATA: dict = {}


def _runtime(cfg: str):
    """One runtime per config for dumps (opening one per example is slow)."""
    from erpq.config import load
    from erpq.runtime import Runtime

    rt = _RUNTIMES.get(cfg)
    if rt is None:
        rt = _RUNTIMES[cfg] = Runtime(load(cfg))
    return rt


def close_dumps() -> None:
    _METADATA.clear()
    while _RUNTIMES:
        _RUNTIMES.popitem()[1].close()


def assert_outcome(result: Result, before: dict, after: dict, argv: list[str]) -> None:
    """Exit 0, or one line on stderr with exit 1/2 and nothing changed."""
    if result.code == 0:
        return
    assert result.code in (1, 2), (argv, result)
    lines = result.err.strip("\n").split("\n")
    assert len(lines) == 1 and "error" in lines[0], (argv, result.err)
    assert "Traceback" not in result.err
    assert after == before, f"{argv}: failed with {result.err!r} but changed the stored state"


@dataclass
class Case:
    """A family of command lines: ``argv`` is a hypothesis strategy of argv lists."""

    name: str
    argv: object
    #: check(result, before, after) for extra expectations (e.g. the effect of a success)
    check: Callable[[Result, dict, dict], None] | None = None


CASES: list[Case] = []


def register(case: Case) -> Case:
    CASES.append(case)
    return case
