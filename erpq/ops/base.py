"""What every Ops section stands on: errors, records, the actor, auditing.

``OpsCore`` holds the runtime, the actor and the audit machinery; the core
sections (``schedule``, ``queue``, ``failed``, ``fleet``, ``tenants``) are mixins
of it, composed into ``erpq.ops.Ops``. A capability's section is an
``OpsSection``: it shares its ``Ops``'s actor, read-only flag and audit log, and
is reached as ``ops.section(name)`` (or ``ops.<name>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import getpass
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

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


# ====================================================================== checks
#
# Ops-level validation, the same on every backend (the CLI's argparse types in
# erpq.cli_support refuse most bad values earlier; these guard every caller).

MAX_ID = 2**31 - 1


def check_text(value: str | None, what: str, max_chars: int | None = None) -> str | None:
    """``value`` if it is UTF-8-encodable text of at most ``max_chars``; else Invalid."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Invalid(f"{what}: not valid UTF-8 text (at character {exc.start})") from None
    if max_chars is not None and len(value) > max_chars:
        raise Invalid(f"{what}: longer than {max_chars} characters ({len(value)})")
    return value


def column_size(model: Any, column: str) -> int | None:
    """The character size of ``model``'s ``column`` (None for unbounded text)."""
    return getattr(model.__table__.c[column].type, "length", None)


def check_columns(model: Any, what: str, **values: Any) -> None:
    """Each text value fits its column of ``model`` and is valid UTF-8 (else Invalid)."""
    for column, value in values.items():
        if isinstance(value, str):
            check_text(value, f"{what} {column}", column_size(model, column))


def check_page(offset: int, limit: int) -> None:
    """Paging arguments every backend reads the same way."""
    if not isinstance(offset, int) or not 0 <= offset <= MAX_ID:
        raise Invalid(f"offset must be 0 to {MAX_ID} (got {offset!r})")
    if not isinstance(limit, int) or not 0 <= limit <= 1_000_000:
        raise Invalid(f"limit must be 0 to 1000000 (got {limit!r})")


def check_id(value: Any, what: str = "id") -> int:
    """An id a database id column can hold (1 to 2^31-1), else Invalid."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise Invalid(f"{what} must be a whole number from 1 to {MAX_ID} (got {value!r})")
    return value


def check_json_payload(value: Any, what: str, max_bytes: int | None = None) -> str:
    """``value`` as JSON text that can be stored and sent (UTF-8, finite numbers, not too big)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise Invalid(f"{what}: text that is not valid UTF-8 (at character {exc.start} of the JSON)") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise Invalid(f"{what}: not storable as JSON: {str(exc).splitlines()[0]}") from None
    if max_bytes is not None and size > max_bytes:
        raise Invalid(f"{what}: {size} bytes of JSON, more than the {max_bytes} allowed")
    return text


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


def order_by(query, sort: str | None, columns: dict[str, Any], tiebreak, default):
    """``query`` ordered by ``sort`` (a key of ``columns``, ``-`` first for descending), then
    by ``tiebreak`` in the same direction, so each order can be read along one index and a
    page of 1,000,000 rows stays a page; ``None`` keeps ``default``. Unknown keys are Invalid."""
    if not sort:
        return query.order_by(*default)
    if not isinstance(sort, str):
        raise Invalid(f"sort must be a column name (got {sort!r})")
    key = sort.removeprefix("-")
    if key not in columns:
        raise Invalid(f"cannot sort by {key!r} (one of: {', '.join(columns)})")
    desc = sort.startswith("-")
    cols = [columns[key]] + ([tiebreak] if columns[key] is not tiebreak else [])
    return query.order_by(*[c.desc() if desc else c.asc() for c in cols])


#: How many rows one transaction of a bulk action touches; between two, the caller's
#: ``progress(done, total)`` is told (and may stop the rest by returning False).
BULK_CHUNK = 250


#: Longest text kept in an audit row's command (longer ones are cut with a marker).
AUDIT_COMMAND_MAX = 4000


def _fit(text: str | None, size: int) -> str | None:
    """``text`` cut to ``size`` characters with a visible marker when longer."""
    if text is None or len(text) <= size:
        return text
    marker = f"… [cut, {len(text)} chars]"
    return text[: max(0, size - len(marker))] + marker


def _fit_row(row: AuditLog) -> AuditLog:
    """An audit row whose texts fit their columns on every backend (never refused)."""
    for name in ("actor", "client", "source", "action", "target"):
        length = getattr(AuditLog.__table__.c[name].type, "length", None)
        if length:
            setattr(row, name, _fit(getattr(row, name), length))
    row.command = _fit(row.command, AUDIT_COMMAND_MAX)
    return row


def _audited(method):
    """Make an action and the audit rows it queued with ``_act`` one transaction.

    The action's database writes go through ``self._tx()`` (one session for the
    whole action, nested actions included); its audit rows are added to that
    session and everything commits once, or nothing does. Work outside the
    database (enqueueing on the queue store) is registered with
    ``self._after_commit(do, undo)`` and done once the commit succeeded; if it
    fails, ``undo`` compensates and the audit rows are deleted again (unless the
    step was registered with ``keep_audit=True``: its committed record stands).

    A method whose answer can only be read once everything committed (a run
    done after commit, a row read back) returns ``self._then(fn)``: the caller
    gets ``fn()``, called after the after-commit steps.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        state = self._audit_state
        if getattr(state, "pending", None) is not None:  # nested action: the outermost one commits
            return method(self, *args, **kwargs)
        state.pending, state.session, state.after = [], None, []
        audit_ids: list[int] = []
        try:
            result = method(self, *args, **kwargs)
            rows = [_fit_row(r) for r in state.pending]
            if rows or state.session is not None:
                s = state.session = state.session or self.rt.Session()
                s.add_all(rows)
                s.flush()
                audit_ids = [r.id for r in rows]
                s.commit()
        except BaseException:
            if state.session is not None:
                state.session.rollback()
            raise
        finally:
            if state.session is not None:
                state.session.close()
            after = state.after or []
            state.pending = state.session = state.after = None
        _run_after_commit(self, after, audit_ids)
        return result.fn() if isinstance(result, _Then) else result

    return wrapper


@dataclass
class _Then:
    """An action's answer, computed once the action committed (``OpsCore._then``)."""

    fn: Any


def _run_after_commit(core, steps: list, audit_ids: list[int]) -> None:
    """Do the after-commit steps in order; on a failure undo the steps not done
    (and, when none was done and the step did not say its record stands, delete
    the action's audit rows), then re-raise."""
    for i, (do, _undo, _keep) in enumerate(steps):
        try:
            do()
        except BaseException:
            for _do, undo, _k in steps[i:]:
                if undo is not None:
                    try:
                        undo()
                    except Exception:  # the original error is the one to report
                        pass
            if i == 0 and audit_ids and not _keep:
                try:
                    with core.rt.session() as s:
                        s.execute(sa.delete(AuditLog).where(AuditLog.id.in_(audit_ids)))
                except Exception:
                    pass
            raise


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

        Inside an ``@_audited`` method the row is written in the action's own
        transaction (a refused or failed action leaves no audit entry, and an
        audit row that cannot be written undoes the action); elsewhere it is
        written at once.
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Session]:
        """The session an action writes in: inside an ``@_audited`` action, the one
        shared with its audit rows (committed once by the decorator); elsewhere a
        session of its own that commits at the end of the block."""
        state = self._audit_state
        if getattr(state, "pending", None) is None:
            with self.rt.session() as s:
                yield s
            return
        if state.session is None:
            state.session = self.rt.Session()
        yield state.session
        state.session.flush()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        """A session to read in: inside an ``@_audited`` action that has written, the
        action's own (it sees the action's writes, not yet committed); else a read session."""
        state = self._audit_state
        if getattr(state, "pending", None) is not None and state.session is not None:
            state.session.flush()
            yield state.session
            return
        with self.rt.read_session() as s:
            yield s

    def _after_commit(self, do, undo=None, keep_audit: bool = False) -> None:
        """Run ``do()`` once the action's transaction committed (at once outside an
        action); if it fails, ``undo()`` takes the committed record back and the
        audit rows are deleted. ``keep_audit=True``: what committed stands when
        ``do()`` fails (e.g. a run whose record a sweep picks up or that records its
        own failure), so its audit row stays."""
        after = getattr(self._audit_state, "after", None)
        if after is None:
            _run_after_commit(self, [(do, undo, keep_audit)], [])
        else:
            after.append((do, undo, keep_audit))

    @staticmethod
    def _then(fn) -> Any:
        """Return this from an ``@_audited`` action to answer ``fn()`` after the commit
        and the after-commit steps (e.g. the result of a run done after commit)."""
        return _Then(fn)

    def take_command(self) -> str | None:
        """The equivalent ``erpq`` command line of the last action on this thread
        (then forgotten), for a front end to show next to the outcome."""
        command = getattr(self._audit_state, "command", None)
        self._audit_state.command = None
        return command

    def _write_audit(self, rows: list[AuditLog]) -> None:
        if rows:
            with self.rt.session() as s:
                s.add_all([_fit_row(r) for r in rows])

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
        check_page(offset, limit)
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

    def _tx(self):
        """The action's session (see ``OpsCore._tx``): write in it, not in ``rt.session()``,
        so the action and its audit row commit together."""
        return self.ops._tx()

    def _after_commit(self, do, undo=None, keep_audit: bool = False) -> None:
        self.ops._after_commit(do, undo, keep_audit)

    def _read(self):
        """A session to read in that sees the action's own writes (see ``OpsCore._read``)."""
        return self.ops._read()

    _then = staticmethod(OpsCore._then)

    @property
    def settings(self) -> Any:
        """This capability's settings section."""
        return self.rt.settings.section(self.name)


#: The public name of the audit decorator, for capability sections.
audited = _audited
