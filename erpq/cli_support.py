"""Small helpers shared by every ``erpq`` command: errors, tables, JSON, argument types."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
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


def parse_json_arg(text: str, what: str, max_bytes: int | None = None) -> Any:
    """``text`` parsed as JSON (a one-line CliError when it is not, or is over ``max_bytes``)."""
    if max_bytes is not None and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise CliError(f"{what}: longer than {max_bytes} bytes (queue.max_args_bytes)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what}: not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise CliError(f"{what}: nested too deeply") from None


# ---------------------------------------------------------------- argument types
#
# One validation layer for command-line values: each type refuses a bad value
# with a one-line message before anything is read or written, the same on every
# backend. Use them for every numeric or bounded option of a command.

#: The largest id an INTEGER primary key holds on every backend (PostgreSQL's int4).
MAX_ID = 2**31 - 1


def bounded_int(lo: int, hi: int, what: str = "a whole number"):
    """An argparse type: an integer in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({lo} to {hi})")
        return value

    parse.__name__ = "integer"
    return parse


#: Counts and sizes (``--limit``, ``-n``): 0 to a million.
count_int = bounded_int(0, 1_000_000)
#: Positive counts (``--workers``, ``--jobs``).
positive_int = bounded_int(1, 1_000_000, "a positive whole number")
#: Row ids: what a database id column can hold on every backend.
id_int = bounded_int(1, MAX_ID, "an id (a positive whole number)")


def finite_float(lo: float, hi: float):
    """An argparse type: a finite number in ``lo..hi`` (no nan, no inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({lo:g} to {hi:g})")
        return value

    parse.__name__ = "number"
    return parse


def bounded_text(max_chars: int):
    """An argparse type: text of at most ``max_chars`` characters (e.g. a column's size)."""

    def parse(text: str) -> str:
        if len(text) > max_chars:
            raise argparse.ArgumentTypeError(f"longer than {max_chars} characters ({len(text)})")
        return text

    parse.__name__ = "text"
    return parse


def column_text(model: Any, column: str):
    """An argparse type: text that fits ``model``'s ``column`` (its character size)."""
    size = getattr(model.__table__.c[column].type, "length", None)
    return bounded_text(size) if size else bounded_text(1_000_000)


#: Network ports.
port_int = bounded_int(1, 65535, "a port number")


def decimal_text(lo: float, hi: float, what: str = "a number"):
    """An argparse type: a finite decimal number in ``lo..hi``, kept as its text
    (quantities and prices are stored as exact decimals)."""
    from decimal import Decimal, InvalidOperation

    def parse(text: str) -> str:
        try:
            value = Decimal(text.strip())
        except (InvalidOperation, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value.is_finite() or not Decimal(str(lo)) <= value <= Decimal(str(hi)):
            raise argparse.ArgumentTypeError(f"{text} is out of range ({lo:g} to {hi:g})")
        return text.strip()

    parse.__name__ = "number"
    return parse


def date_arg(text: str) -> dt.date:
    """An argparse type: a calendar date, YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


date_arg.__name__ = "date"


def datetime_arg(text: str) -> dt.datetime:
    """An argparse type: an ISO 8601 date-time, UTC unless it carries an offset."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise argparse.ArgumentTypeError(f"date-time out of range: {text!r}") from None


datetime_arg.__name__ = "date-time"


def timezone_arg(text: str) -> str:
    """An argparse type: an IANA time zone name (``Europe/Berlin``, ``UTC``)."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text[:80]!r} (an IANA name, e.g. Europe/Berlin)") \
            from None
    return text


timezone_arg.__name__ = "time zone"


def cron_arg(text: str) -> str:
    """An argparse type: a five-field cron expression croniter accepts."""
    from croniter import croniter

    fields = text.split()
    if len(fields) != 5 or not croniter.is_valid(text):
        raise argparse.ArgumentTypeError(f"not a cron expression (five fields, e.g. '0 7 * * 1-5'): {text[:80]!r}")
    return text


cron_arg.__name__ = "cron expression"


#: The largest JSON option text (``--filters``, ``--mapping``) a command accepts.
JSON_OPTION_BYTES = 65_536


def check_argv(argv: Sequence[str]) -> None:
    """Refuse an argument that is not valid UTF-8 (bytes the OS handed over as
    surrogates): it could never be stored or sent."""
    for i, arg in enumerate(argv, 1):
        if "\x00" in arg:
            raise CliError(f"argument {i} contains a NUL character", code=2)
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = ascii(arg)[1:-1]  # one line: newlines, surrogates and control characters escaped
            raise CliError(f"argument {i} is not valid UTF-8 text (at character {exc.start}): "
                           f"{shown[:80]}", code=2) from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``erpq ...: error: ...``), exit 2."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print a JSON array of objects")
    paging = argparse.ArgumentParser(add_help=False)
    paging.add_argument("--limit", type=count_int, default=50, help="rows to show (default 50)")
    paging.add_argument("--offset", type=bounded_int(0, MAX_ID), default=0, help="rows to skip")
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
