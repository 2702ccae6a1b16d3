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
