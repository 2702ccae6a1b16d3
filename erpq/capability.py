"""Capabilities: each business capability declares itself in one object.

A capability is a package under ``erpq/`` (or any installed package) holding a
``capability.py`` module that defines ``CAPABILITY = Capability(...)``. That
one object says everything the core needs to know about it:

- its **jobs** and **periodic tasks** (declared with ``@CAPABILITY.job`` and
  ``@CAPABILITY.periodic(name, cron=...)`` in the modules listed in ``modules``;
  the periodic task's default cron expression lives in the declaration);
- its **settings** section (a dataclass, read from ``[<settings_key>]`` in
  config.toml and validated by the config loader; a ``validate(self, err)``
  method on the dataclass adds checks, ``err(key, reason)`` builds the one-line
  error);
- its **CLI** group (``cli="erpq.x.cli:register"``: ``register(groups, common)``);
- its **Ops** section (``ops="erpq.x.ops:XOps"``, an ``erpq.ops.OpsSection``
  reached as ``ops.section("x")`` and ``ops.x``);
- the **event** names it emits;
- its **console panels** (``PanelSpec``: generic table panels over an Ops
  read, with actions bound to Ops section actions; or a Textual view named by
  a dotted path, for the rare panel that needs more than a table);
- its **models** module and **migrations** folder (an Alembic branch of its own).

The core finds capabilities by itself and never names one:

1. every subpackage of ``erpq`` that has a ``capability`` module;
2. the ``erpq.capabilities`` entry-point group (installed packages);
3. ``ERPQ_CAPABILITIES`` (comma-separated module paths) and
   ``[capabilities] extra`` in config.toml.

A capability that fails to import is a ``CapabilityError`` naming it: never
silently missing commands.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CapabilityError(RuntimeError):
    """A capability could not be loaded; the message names it and why."""


@dataclass(frozen=True)
class PanelAction:
    """A key on a capability panel: calls ``ops.section(cap).<method>(row_id)``, or
    ``<method>(row_id, text)`` when it has a ``prompt``."""

    key: str
    label: str
    method: str
    #: A confirmation question ("{id}" is replaced by the row id); None: no question.
    confirm: str | None = None
    #: Ask for a line of text first (e.g. a reason; "{id}" replaced) and pass it on.
    prompt: str | None = None
    #: The text the prompt starts with (and what read-only mode would have sent).
    default: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """A console panel: a table over an Ops section read.

    ``read`` names a method of the capability's Ops section taking
    ``(offset, limit, search)`` and returning an ``erpq.ops.Page`` of records
    (objects with attributes named by ``columns`` and a ``to_dict()``).
    ``view`` instead names a Textual view class ("package.module:Class") for a
    panel that needs more than a table.
    """

    key: str
    title: str
    read: str = ""
    columns: tuple[tuple[str, str, int | None], ...] = ()
    actions: tuple[PanelAction, ...] = ()
    row_id: str = "id"
    #: One line shown above the table; may use the counts a ``summary`` Ops method returns.
    summary: str = ""
    #: The Ops section method giving ``{summary}`` (a string).
    summary_read: str = "summary"
    view: str = ""
    #: Place among the console's tabs (core views are 10, 20, 30, 50, 60, 70).
    order: int = 100


@dataclass
class Capability:
    name: str
    title: str = ""
    description: str = ""
    #: Modules to import for their ``@job`` / ``@periodic`` declarations and event handlers.
    modules: tuple[str, ...] = ()
    #: Settings dataclass, read from ``[settings_key]`` (default: the capability name).
    settings: type | None = None
    settings_key: str = ""
    #: "module:function" registering the CLI group(s): ``register(groups, common)``.
    cli: str = ""
    #: "module:Class" of the Ops section (an ``erpq.ops.OpsSection``).
    ops: str = ""
    #: Event names this capability emits (declared on load).
    events: tuple[str, ...] = ()
    panels: tuple[PanelSpec, ...] = ()
    #: Module holding this capability's SQLAlchemy models (imported before migrations run).
    models: str = ""
    #: Folder of this capability's Alembic revisions (its own branch), if any.
    migrations: str | Path | None = None
    #: Capabilities this one needs loaded first.
    requires: tuple[str, ...] = ()
    #: Filled on load: the module that defined the object.
    module: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.settings_key = self.settings_key or self.name
        self.title = self.title or self.name.replace("_", " ").title()

    # ------------------------------------------------------------ declarations
    def job(self, name: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare a queued job of this capability (options as ``erpq.runtime.job``)."""
        from .runtime.registry import job

        return job(name, capability=self.name, **options)

    def periodic(self, name: str, *, cron: str, description: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare a periodic task with its default cron expression."""
        from .runtime.registry import periodic

        return periodic(name, cron=cron, description=description, capability=self.name, **options)

    # ------------------------------------------------------------ lookups
    def resolve(self, ref: str) -> Any:
        """The object a "module:attr" reference names (imported now)."""
        module, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except Exception as exc:
            raise CapabilityError(f"capability {self.name}: cannot load {ref}: {type(exc).__name__}: {exc}") from exc

    def migrations_dir(self) -> Path | None:
        if not self.migrations:
            return None
        path = Path(self.migrations)
        if not path.is_absolute() and self.module:
            spec = importlib.util.find_spec(self.module)
            if spec and spec.origin:
                path = Path(spec.origin).parent / path
        return path


# ====================================================================== discovery

_lock = threading.RLock()
_loaded: dict[str, Capability] = {}
_loaded_modules: set[str] = set()

ENTRY_POINT_GROUP = "erpq.capabilities"


@functools.cache
def builtin_modules() -> list[str]:
    """``erpq.<pkg>.capability`` for every subpackage of erpq that has one (scanned once:
    ``load_all`` runs on every ``events.emit``)."""
    import erpq

    found = []
    for info in pkgutil.iter_modules(erpq.__path__):
        if info.ispkg and (Path(info.module_finder.path) / info.name / "capability.py").exists():  # type: ignore[attr-defined]
            found.append(f"erpq.{info.name}.capability")
    return sorted(found)


@functools.cache
def entry_point_modules() -> list[str]:
    """Modules named in the entry-point group (read once per process: scanning every
    installed distribution's metadata costs milliseconds, on every emit)."""
    from importlib.metadata import entry_points

    return [ep.value.partition(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]


def env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get("ERPQ_CAPABILITIES", "").split(",") if m.strip()]


def load_all(extra: Iterable[str] = ()) -> list[Capability]:
    """Import every capability (built-in, entry points, env, ``extra``) once; return them all.

    First every ``capability`` module is imported (the declarations), then each
    new capability's models and modules, dependencies first.
    """
    with _lock:
        fresh = [_declare(m) for m in dict.fromkeys([*builtin_modules(), *entry_point_modules(),
                                                     *env_modules(), *extra])
                 if m not in _loaded_modules]
        done: set[str] = set()

        def finish(cap: Capability, chain: tuple[str, ...] = ()) -> None:
            if cap.name in done:
                return
            for dep in cap.requires:
                if dep not in _loaded:
                    _forget(cap)
                    raise CapabilityError(f"capability {cap.name} requires capability {dep!r}, which is not installed")
                if dep in chain:
                    raise CapabilityError(f"capabilities {' -> '.join((*chain, dep))} require each other")
                if dep in {c.name for c in fresh}:
                    finish(_loaded[dep], (*chain, cap.name))
            _import_parts(cap)
            done.add(cap.name)

        for cap in fresh:
            finish(cap)
        return list(_loaded.values())


def _declare(module: str) -> Capability:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:
        raise CapabilityError(f"capability module {module} failed to import: {type(exc).__name__}: {exc}") from exc
    cap = getattr(mod, "CAPABILITY", None)
    if not isinstance(cap, Capability):
        raise CapabilityError(f"capability module {module} defines no CAPABILITY = Capability(...)")
    other = _loaded.get(cap.name)
    if other is not None and other.module != module:
        raise CapabilityError(f"capability name {cap.name!r} is declared by both {other.module} and {module}")
    cap.module = module
    _loaded_modules.add(module)
    _loaded[cap.name] = cap
    return cap


def _forget(cap: Capability) -> None:
    _loaded.pop(cap.name, None)
    _loaded_modules.discard(cap.module)


def _import_parts(cap: Capability) -> None:
    try:
        from . import events

        for name in cap.events:
            events.define_event(name)
        for m in (cap.models, *cap.modules):
            if m:
                importlib.import_module(m)
    except Exception as exc:
        _forget(cap)
        raise CapabilityError(f"capability {cap.name} ({cap.module}) failed to load: {type(exc).__name__}: {exc}") from exc


def loaded() -> list[Capability]:
    """The capabilities loaded so far (``load_all`` loads them)."""
    return list(_loaded.values())


def get(name: str) -> Capability:
    load_all()
    try:
        return _loaded[name]
    except KeyError:
        raise CapabilityError(f"unknown capability {name!r} (known: {', '.join(sorted(_loaded))})") from None


def settings_sections() -> dict[str, type]:
    """``[section]`` name -> settings dataclass, for every loaded capability with settings."""
    return {c.settings_key: c.settings for c in loaded() if c.settings is not None}


def default_schedule() -> dict[str, str]:
    """Every periodic task's default cron expression: the union of what capabilities declare."""
    from .runtime.registry import periodic_specs

    load_all()
    return {s.name: s.cron for s in sorted(periodic_specs(), key=lambda s: s.name)}
