"""The bad-input harness: run ``erpq`` in-process, dump what it could change, and
check the promise "exit 0 with the effect, or one line with exit 1/2 and nothing
changed" — never a traceback.

Cases are families of command lines: ``register(Case("webhook add", argv_strategy))``
with a hypothesis strategy of argv lists (without ``--config``), optional
``setup`` commands (run once per backend before any example, each must exit 0)
and an optional ``check(result, before, after)`` for the effect of a success.

The core's cases are in tests/test_bad_input_props.py. A capability adds its own
in ``tests/badinput_<capability>.py`` (no core test file names it):
``load_cases()`` imports every such module, and the property suite runs every
registered case on SQLite and on PostgreSQL. The strategies below (nasty text,
numbers, JSON, URLs, ids) are shared.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from hypothesis import strategies as st

from erpq.cli import main

# ---------------------------------------------------------------- shared strategies

#: Text as argv may carry it: any code point, bytes that were not UTF-8 (surrogates), NUL.
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("a-Z9 /é\udce9\x00'\"%_\n"), max_size=40),
    st.text(min_size=250, max_size=700, alphabet="ab"),
)
number_text = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e12", "0x10", "", "٣", "²", "1_000", "1e400", "-0"]),
    nasty_text,
)
#: An id argument: mostly near the ids a seeded database has, or anything.
id_text = st.one_of(st.sampled_from(["1", "2", "3"]), number_text)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=12,
)
json_text = st.one_of(json_values.map(lambda v: json.dumps(v, ensure_ascii=False)), nasty_text)
urls = st.one_of(
    nasty_text,
    st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
              st.sampled_from(["https", "http", "ftp", "file", "HTTPS", ""]),
              st.sampled_from(["example.com", "127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "0",
                               "user:pw@example.com", "example.com:99999", "xn--caf-dma.com", "ex ample.com"]),
              nasty_text),
)
dates = st.one_of(st.dates().map(str), st.sampled_from(["2026-02-30", "0000-01-01", "2026-1-1", "today"]),
                  nasty_text)
datetimes = st.one_of(st.datetimes().map(lambda d: d.isoformat()),
                      st.sampled_from(["2026-01-01T25:00", "9999-12-31T23:59:59-23:59", "2026-01-01T00:00+24:00"]),
                      nasty_text)
timezones = st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns", "Nowhere/Land", "../etc",
                                       "/etc/passwd", "", "Etc/GMT+14"]), nasty_text)
crons = st.one_of(st.lists(st.sampled_from(["*", "*/5", "0", "59", "60", "1-3", "7", "L", "MON", "?", "-1",
                                            "1,2", "*/0"]), min_size=1, max_size=7).map(" ".join), nasty_text)


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
    #: argv lists run once per backend before any example (each must exit 0), e.g. a record to act on
    setup: tuple[tuple[str, ...], ...] = ()
    #: who contributed the case ("core" or the capability's name), for reports
    owner: str = "core"
    #: files written in the test's folder before setup (name -> text); "{tmp}" in argv is that folder
    files: tuple[tuple[str, str], ...] = ()


CASES: list[Case] = []

#: Generated command lines run, per backend (printed at the end of the session).
GENERATED: dict[str, int] = {}


def register(case: Case) -> Case:
    if any(c.name == case.name for c in CASES):
        raise ValueError(f"bad-input case {case.name!r} is registered twice")
    CASES.append(case)
    return case


def load_cases() -> list[Case]:
    """Every registered case: the core's and those of each ``tests/badinput_<capability>.py``."""
    here = Path(__file__).parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    for path in sorted(here.glob("badinput_*.py")):
        importlib.import_module(path.stem)
    return list(CASES)


def setup_commands() -> list[list[str]]:
    """Every case's setup commands, in registration order, without repeats."""
    seen: list[list[str]] = []
    for case in CASES:
        for argv in case.setup:
            if list(argv) not in seen:
                seen.append(list(argv))
    return seen


def grew(table: str, by: int = 1):
    """A ``check``: a success added ``by`` rows to ``table`` (or jobs to ``pending``)."""
    def check(result: Result, before: dict, after: dict) -> None:
        if result.code == 0:
            assert len(after[table]) == len(before[table]) + by, (table, result)
    return check
