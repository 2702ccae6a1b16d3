"""Small helpers shared by every ``erpq`` command: errors, tables, JSON."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1 (``code`` to change)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.0f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def print_table(rows: Sequence[dict], columns: Sequence[str], out=None) -> None:
    """Print rows (dicts) as an aligned text table with the given columns."""
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def print_json(rows: Iterable[dict] | dict, out=None) -> None:
    """Print a JSON array (or object); datetimes as ISO 8601 UTC."""
    payload = rows if isinstance(rows, dict) else list(rows)
    json.dump(payload, out or sys.stdout, indent=2, default=_default)
    print(file=out or sys.stdout)


def parse_json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what}: not valid JSON: {exc.msg} at position {exc.pos}") from None


# ---------------------------------------------------------------- building command groups


def ops_for(args: Any, rt: Any):
    """The ``Ops`` a command acts through, as the CLI's actor (one per runtime)."""
    from .ops import Actor, Ops

    ops = getattr(rt, "_cli_ops", None)
    if ops is None:
        ops = rt._cli_ops = Ops(rt, Actor.detect("cli"), read_only=bool(getattr(args, "read_only", False)))
    return ops


def flag_parents():
    """(``--json``, ``--limit/--offset``) parent parsers for read commands."""
    import argparse

    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print a JSON array of objects")
    paging = argparse.ArgumentParser(add_help=False)
    paging.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    paging.add_argument("--offset", type=int, default=0, help="rows to skip")
    return json_flag, paging


class Group:
    """One ``erpq NAME SUBCOMMAND`` group: ``Group(groups, common, name, help).cmd(...)``."""

    def __init__(self, groups: Any, common: Any, name: str, help: str):
        self.common = common
        g = groups.add_parser(name, help=help, parents=[common], description=help)
        self.sub = g.add_subparsers(dest="cmd", metavar="SUBCOMMAND", required=True)
        self.json_flag, self.paging = flag_parents()

    def cmd(self, name: str, handler: Any, help: str, *, json: bool = False, paged: bool = False,
            runtime: bool = True):
        parents = [self.common] + ([self.json_flag] if json else []) + ([self.paging] if paged else [])
        c = self.sub.add_parser(name, help=help, description=help, parents=parents)
        c.set_defaults(handler=handler, needs_runtime=runtime)
        return c


def out(args: Any, items: Iterable, columns: Sequence[str]) -> int:
    """Print records (``to_dict()``) or dicts as a table, or as JSON with ``--json``."""
    rows = [i.to_dict() if hasattr(i, "to_dict") else i for i in items]
    if getattr(args, "json", False):
        print_json(rows)
    else:
        print_table(rows, columns)
    return 0
