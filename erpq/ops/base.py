"""What every Ops section stands on: errors, records, the actor, auditing.

``OpsCore`` holds the runtime, the actor and the audit machinery; the core
sections (``schedule``, ``queue``, ``failed``, ``fleet``, ``tenants``) are mixins
of it, composed into ``erpq.ops.Ops``. A capability's section is an
``OpsSection``: it shares its ``Ops``'s actor, read-only flag and audit log, and
is reached as ``ops.section(name)`` (or ``ops.<name>``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import getpass
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from ..models import AuditLog

if TYPE_CHECKING:
    from ..runtime import Runtime

# ====================================================================== errors


class OpsError(Exception):
    """An operator-caused error; the message is one line naming what and why."""


class NotFound(OpsError):
    pass


class ReadOnly(OpsError):
    pass


class Conflict(OpsError):
    pass


class Invalid(OpsError):
    """Bad arguments (a value out of range, a malformed name)."""


# ====================================================================== records


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return v


@dataclass
class Page:
    items: list
    total: int
    offset: int
    limit: int


@dataclass
class AuditInfo(_Record):
    id: int
    at: dt.datetime
    actor: str
    client: str | None
    source: str
    action: str
    target: str | None
    command: str | None
    detail: str | None


@dataclass
class Actor:
    """Who is acting, for the audit log."""

    user: str
    client: str | None
    source: str  # cli | console

    @classmethod
    def detect(cls, source: str) -> Actor:
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid())
        ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
        return cls(user=user, client=ssh.split()[0] if ssh else None, source=source)


# ====================================================================== auditing


_NORMALISE = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"0x[0-9a-f]+", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def normalise_message(message: str) -> str:
    """A failure message with its variable parts replaced, for clustering."""
    text = (message or "").splitlines()[0] if message else ""
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text[:200]


def text_search(columns, search: str):
    """A WHERE clause: ``search`` found in any of ``columns``, ignoring case, the same
    way on every backend (ILIKE on PostgreSQL, lower() LIKE lower() elsewhere);
    ``%`` and ``_`` in ``search`` are literal."""
    escaped = search.replace("/", "//").replace("%", "/%").replace("_", "/_")
    like = f"%{escaped}%"
    return sa.or_(*(c.ilike(like, escape="/") for c in columns))


def _audited(method):
    """Write the audit rows an action queued with ``_act`` only if it succeeds."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        state = self._audit_state
        outer = getattr(state, "pending", None)
        if outer is not None:  # nested action: the outermost one writes
            return method(self, *args, **kwargs)
        state.pending = []
        try:
            result = method(self, *args, **kwargs)
            rows = state.pending
        finally:
            state.pending = None
        self._write_audit(rows)
        return result

    return wrapper


class OpsCore:
    def __init__(self, runtime: Runtime, actor: Actor | None = None, read_only: bool = False):
        self.rt = runtime
        self.actor = actor or Actor.detect("api")
        self.read_only = read_only
        self._audit_state = threading.local()
        self._clusters_cache: dict[str | None, tuple[tuple, list]] = {}  # FailedOps.failure_clusters

    # ------------------------------------------------------------ helpers
    def _act(self, action: str, target: str | None, command: str, detail: Any = None) -> None:
        """Refuse in read-only mode; else audit the action.

        Inside an ``@_audited`` method the row is written only once the method
        succeeds (a refused or failed action leaves no audit entry); elsewhere
        it is written at once.
        """
        if self.read_only:
            raise ReadOnly(f"read-only mode: '{action}' is refused (equivalent: {command})")
        self._audit_state.command = command
        row = AuditLog(actor=self.actor.user, client=self.actor.client, source=self.actor.source,
                       action=action, target=target, command=command,
                       detail=json.dumps(detail, default=str) if detail is not None else None)
        pending = getattr(self._audit_state, "pending", None)
        if pending is not None:
            pending.append(row)
        else:
            self._write_audit([row])

    def take_command(self) -> str | None:
        """The equivalent ``erpq`` command line of the last action on this thread
        (then forgotten), for a front end to show next to the outcome."""
        command = getattr(self._audit_state, "command", None)
        self._audit_state.command = None
        return command

    def _write_audit(self, rows: list[AuditLog]) -> None:
        if rows:
            with self.rt.session() as s:
                s.add_all(rows)

    def check_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnly(f"read-only mode: '{action}' is refused")

    def _decode(self, data: bytes):
        try:
            return self.rt.huey.deserialize_task(data)
        except Exception:
            return None

    @staticmethod
    def _ts(epoch: float | None) -> dt.datetime | None:
        return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)

    # ------------------------------------------------------------ audit
    def audit_log(self, offset: int = 0, limit: int = 50) -> Page:
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(AuditLog)) or 0
            rows = s.scalars(sa.select(AuditLog).order_by(AuditLog.id.desc()).offset(offset).limit(limit)).all()
            return Page([AuditInfo(a.id, a.at, a.actor, a.client, a.source, a.action, a.target, a.command, a.detail)
                         for a in rows], total, offset, limit)

    def audit(self, action: str, target: str | None, command: str) -> None:
        """Audit an action done elsewhere (e.g. by a capability's CLI); refused in read-only mode.

        Call it before the action, inside an ``@_audited`` caller, or after it succeeded.
        """
        self._act(action, target, command)



class OpsSection:
    """A capability's part of Ops: its reads and its audited actions.

    Subclass it in ``erpq/<capability>/ops.py`` and name the class in the
    capability's ``ops=``; decorate actions with ``@audited`` and call
    ``self._act(action, target, command)`` in them, as core sections do.
    """

    #: The capability name (set when ``Ops`` builds the section).
    name: ClassVar[str] = ""

    def __init__(self, ops: OpsCore) -> None:
        self.ops = ops
        self.rt = ops.rt

    @property
    def read_only(self) -> bool:
        return self.ops.read_only

    @property
    def _audit_state(self):
        return self.ops._audit_state

    def _write_audit(self, rows: list[AuditLog]) -> None:
        self.ops._write_audit(rows)

    def _act(self, action: str, target: str | None, command: str, detail: Any = None) -> None:
        self.ops._act(action, target, command, detail)

    def check_writable(self, action: str) -> None:
        self.ops.check_writable(action)

    @property
    def settings(self) -> Any:
        """This capability's settings section."""
        return self.rt.settings.section(self.name)


#: The public name of the audit decorator, for capability sections.
audited = _audited
