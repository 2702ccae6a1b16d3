"""Configuration from the environment (twelve-factor) and ``erpq config show``.

Every key of config.toml can be set as ``ERPQ_<SECTION>__<KEY>`` (double
underscore between levels, any case): ``ERPQ_QUEUE__URL``,
``ERPQ_DATABASE__URL``, ``ERPQ_QUEUE__WORKERS=8``, ``ERPQ_MAIL__PASSWORD``,
``ERPQ_CONSOLE__KEYS__SCHEDULE.TRIGGER=T``. A value is read as a TOML value
when it is one (``8``, ``true``, ``["a", "b"]``), else as a string, then
validated exactly like the file (same one-line errors, naming the variable).
The environment wins over the file.

``describe(settings)`` lists every key with its value and where it came from
(``env ERPQ_…``, the file, or the default), secrets masked.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

PREFIX = "ERPQ_"
#: Variables that are not settings keys.
NOT_KEYS = {"ERPQ_CONFIG", "ERPQ_REQUIRE_SERVICES", "ERPQ_CAPTURE_DIR"}
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey")


def env_keys(environ: Mapping[str, str] | None = None) -> dict[tuple[str, ...], tuple[str, str]]:
    """``{("queue", "url"): ("ERPQ_QUEUE__URL", value)}`` for every ERPQ_* variable with a ``__``."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in NOT_KEYS or upper.startswith("ERPQ_TEST_") or "__" not in name:
            continue
        path = tuple(p.lower() for p in name[len(PREFIX):].split("__"))
        if all(path):
            out[path] = (name, value)
    return out


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overlay(raw: dict, environ: Mapping[str, str] | None = None) -> tuple[dict, dict[str, str]]:
    """``raw`` with the environment's keys set; returns it and ``{"queue.url": "ERPQ_QUEUE__URL"}``."""
    used: dict[str, str] = {}
    for path, (name, value) in sorted(env_keys(environ).items()):
        node = raw
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            node = nxt
        else:
            node[path[-1]] = parse_value(value)
            used[".".join(path)] = name
    return raw, used


def is_secret(key: str) -> bool:
    return any(w in key.lower() for w in SECRET_WORDS)


def mask(key: str, value: Any) -> Any:
    if value in (None, "", [], {}):
        return value
    if is_secret(key):
        return "********"
    if isinstance(value, str):
        return re.sub(r"(//[^:/@]*:)[^@/]+@", r"\1********@", value)  # passwords in URLs
    return value


def _walk(obj: Any, prefix: str):
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name in ("source", "base_dir", "sections"):
                continue
            yield from _walk(getattr(obj, f.name), f"{prefix}{f.name}.")
    else:
        yield prefix.rstrip("."), obj


def describe(settings: Any) -> list[dict[str, Any]]:
    """Every key: ``{"key", "value", "source"}``, secrets masked."""
    file_keys: set[str] = getattr(settings, "file_keys", set())
    env_used: dict[str, str] = getattr(settings, "env_used", {})
    file_label = getattr(settings, "file_source", settings.source)
    rows = []
    items = list(_walk(settings, ""))
    for name, section in sorted(getattr(settings, "sections", {}).items()):
        items += list(_walk(section, f"{name}."))
    for key, value in items:
        if key in env_used or any(k.startswith(key + ".") for k in env_used):
            src = "env " + env_used.get(key, next((v for k, v in env_used.items() if k.startswith(key + ".")), ""))
        elif key in file_keys or any(k.startswith(key + ".") for k in file_keys):
            src = file_label
        else:
            src = "default"
        if isinstance(value, dict):
            value = {k: mask(k, v) for k, v in value.items()}
        rows.append({"key": key, "value": mask(key, value), "source": src})
    return rows


def flat_keys(raw: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in raw.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= flat_keys(v, prefix + k + ".")
    return out
