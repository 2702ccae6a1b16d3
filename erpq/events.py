"""The in-process event API: ``emit(name, payload, tenant, session=s)`` and handlers.

Business code announces what happened without knowing who listens;
capabilities subscribe with ``@on("deal.created")`` (or ``@on()`` for every
event) in one of their modules. Webhooks, workflows and deal notifications
hang off this.

Events are transactional (an outbox):

- ``emit(..., session=s)`` writes the event into the ``event_outbox`` table in
  the caller's transaction. Handlers run only after that transaction commits; a
  transaction that rolls back announces nothing.
- ``emit(...)`` without a session writes and commits the event at once, then
  fans it out.
- Fan-out claims the outbox row first (one conditional UPDATE), so an event is
  fanned out by one process at a time, and marks it done afterwards. A crash
  between commit and fan-out leaves the row pending: the runners' sweep
  (``sweep``, every heartbeat) fans it out later. Handlers get the outbox id as
  ``event.id`` and use it to de-duplicate (a crash in the middle of a fan-out
  runs it again).

Handlers run in order of registration, in the dispatching thread. One failing
handler does not stop the others; the event is then kept for the sweep to try
again (up to ``MAX_ATTEMPTS``) and ``EmitError`` tells a caller who waited.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event

log = logging.getLogger("erpq.events")

#: Every event name the system emits (each capability declares its own in
#: ``Capability(events=...)``); subscriptions to other names are refused.
EVENTS: set[str] = set()

#: "Every event", in handler registrations and webhook subscriptions.
ALL = "*"


class UnknownEvent(ValueError):
    pass


class EmitError(RuntimeError):
    """One or more handlers failed; ``errors`` maps handler name to exception."""

    def __init__(self, event: str, errors: dict[str, BaseException]):
        self.errors = errors
        first_name, first = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"event {event}: handler {first_name} failed: {first}{more}")


@dataclass(frozen=True)
class Event:
    name: str
    payload: dict[str, Any]
    tenant_id: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


Handler = Callable[[Event], Any]

_handlers: list[tuple[str, Handler]] = []


def define_event(name: str) -> None:
    """Make a new event name known (for capabilities that add their own)."""
    check_name_syntax(name)
    EVENTS.add(name)


def check_name_syntax(name: str) -> None:
    parts = name.split(".")
    if len(parts) < 2 or not all(p and p.replace("_", "").isalnum() and p.islower() for p in parts):
        raise UnknownEvent(f"event name {name!r} is not dotted lower_case (e.g. deal.created)")


def check_event(name: str) -> str:
    """``name`` if it is a known event, else UnknownEvent naming the known ones."""
    if name not in EVENTS:
        raise UnknownEvent(f"unknown event {name!r} (known: {', '.join(sorted(EVENTS))})")
    return name


def on(name: str = ALL, *, batch: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler(event)`` for event ``name`` (default: every event).

    With ``batch=True`` the handler is called once per fan-out with the list
    of its events (the events of one commit, or of one sweep) and returns a
    mapping of event id to result: a handler that can do its work for many
    events in one transaction should be a batch handler.

    Registering the same function again (a module imported twice) is a no-op.
    """
    if name != ALL:
        check_event(name)

    def decorator(handler: Handler) -> Handler:
        key = (handler.__module__, handler.__qualname__)
        handler.erpq_batch = batch  # type: ignore[attr-defined]
        _handlers[:] = [(n, h) for n, h in _handlers
                        if not (n == name and (h.__module__, h.__qualname__) == key)]
        _handlers.append((name, handler))
        return handler

    return decorator


def handlers_for(name: str) -> list[Handler]:
    return [h for n, h in _handlers if n in (ALL, name)]


#: Fan-out attempts of one event before it is left as failed.
MAX_ATTEMPTS = 5
#: A pending event older than this is the sweep's (its emitter died before fanning out).
SWEEP_AFTER_S = 10.0
#: A claim older than this is abandoned (the process died mid fan-out).
CLAIM_LEASE_S = 120.0
#: Events fanned out per dispatch_many after a commit (one claim, one read, one close each;
#: well under every backend's bind-parameter limit).
FANOUT_BATCH = 5000


def check_payload(name: str, payload: Any) -> dict[str, Any]:
    """``payload`` as a JSON object, or TypeError naming the event and the reason."""
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise TypeError(f"event {name}: payload must be a JSON object, not {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"event {name}: payload is not JSON: {exc}") from None
    return payload


def emit(name: str, payload: dict[str, Any] | None, tenant: Any, *, session: Any = None) -> Any:
    """Announce event ``name`` for ``tenant`` (an id, a Tenant row or a slug).

    With ``session``: the event is written in that session's transaction and
    fanned out after it commits; returns the outbox row (its id is set when the
    session next flushes). Without: written, committed and fanned out now;
    returns each handler's result by handler name.
    """
    from .models import EventOutbox
    from .runtime.registry import load_capabilities

    if name not in EVENTS:  # loading scans entry points (~15 ms): not once per event of a bulk import
        load_capabilities()
    check_event(name)
    payload = check_payload(name, payload)
    tenant_id = _tenant_id(tenant, session)
    if session is not None:
        row = EventOutbox(name=name, tenant_id=tenant_id, payload=payload, status="pending", attempts=0)
        session.add(row)  # flushed with the caller's own rows: no extra round trip per event
        _listen(session)
        session.info.setdefault("erpq_outbox_rows", []).append(row)
        return row
    return emit_now(name, payload, tenant_id)[1]


def emit_many(name: str, payloads: list[dict[str, Any]], tenant: Any, *, session: Any) -> int:
    """Write many events of one name in the caller's transaction, in one batched
    INSERT, for bulk writers (imports); they are fanned out together after the
    commit, like ``emit``'s. Returns how many were written."""
    import sqlalchemy as sa

    from .db import utcnow
    from .models import EventOutbox
    from .runtime.registry import load_capabilities

    if name not in EVENTS:
        load_capabilities()
    check_event(name)
    if not payloads:
        return 0
    tenant_id = _tenant_id(tenant, session)
    now = utcnow()
    rows = [{"name": name, "tenant_id": tenant_id, "payload": check_payload(name, p), "status": "pending",
             "attempts": 0, "created_at": now} for p in payloads]
    _listen(session)
    table = EventOutbox.__table__
    dialect = session.get_bind().dialect
    # SQLite claims ordered RETURNING but gets it by one INSERT per row (no sentinel
    # column): there one executemany and the look-up after the commit are far cheaper
    if dialect.insert_executemany_returning_sort_by_parameter_order and dialect.name != "sqlite":
        # ids read back in one go: noted for the fan-out now, no look-up after the commit
        session.info.setdefault("erpq_outbox", []).extend(session.execute(
            sa.insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars())
    else:
        session.execute(sa.insert(table), rows)
        session.info.setdefault("erpq_outbox_bulk", []).append((name, tenant_id, now))
    return len(rows)


def _listen(session: Any) -> None:
    if not session.info.get("erpq_outbox_listening"):
        session.info["erpq_outbox_listening"] = True
        sa_event.listen(session, "after_flush_postexec", _after_flush)
        sa_event.listen(session, "after_commit", _after_commit)
        sa_event.listen(session, "after_soft_rollback", _after_rollback)


def emit_now(name: str, payload: dict[str, Any] | None, tenant: Any) -> tuple[int, dict[str, Any]]:
    """Write event ``name`` to the outbox, commit, fan it out now; returns (outbox id, handler results)."""
    from .runtime import current
    from .runtime.registry import load_capabilities

    load_capabilities()
    check_event(name)
    payload = check_payload(name, payload)
    rt = current()
    with rt.session() as s:
        event_id = write_outbox(s, name, payload, tenant)
    return event_id, dispatch(rt, event_id, raise_errors=True) or {}


def write_outbox(s: Any, name: str, payload: dict[str, Any] | None, tenant: Any) -> int:
    """Add event ``name``'s outbox row in session ``s`` without an automatic fan-out
    (the caller dispatches it after its commit, e.g. to report the handlers' results);
    returns its id. Until then it is pending, so the runners' sweep fans it out if
    the caller never does."""
    from .models import EventOutbox

    row = EventOutbox(name=name, tenant_id=_tenant_id(tenant, s), payload=payload, status="pending", attempts=0)
    s.add(row)
    s.flush()
    return row.id


def _after_flush(session: Any, _context: Any) -> None:
    """Outbox rows get their ids when flushed: note them for the fan-out after commit."""
    rows = session.info.get("erpq_outbox_rows")
    if rows:
        ids = session.info.setdefault("erpq_outbox", [])
        ids.extend(r.id for r in rows if r.id is not None)
        rows[:] = [r for r in rows if r.id is None]


def _bulk_ids(rt: Any, bulk: list[tuple[str, int, Any]]) -> list[int]:
    """The outbox ids ``emit_many`` wrote (by name, tenant and their shared write time)."""
    import sqlalchemy as sa

    from .models import EventOutbox as O

    with rt.read_session() as s:
        return [i for name, tenant_id, at in bulk for i in s.scalars(
            sa.select(O.id).where(O.name == name, O.tenant_id == tenant_id, O.created_at == at,
                                  O.status == "pending").order_by(O.id))]


def _after_commit(session: Any) -> None:
    if session.in_nested_transaction():  # a savepoint was released; the real commit is still to come
        return
    ids = session.info.pop("erpq_outbox", [])
    bulk = session.info.pop("erpq_outbox_bulk", [])
    if not ids and not bulk:
        return
    from .runtime import current

    try:
        rt = current()
        if bulk:
            ids += _bulk_ids(rt, bulk)
        for start in range(0, len(ids), FANOUT_BATCH):
            dispatch_many(rt, ids[start:start + FANOUT_BATCH])
    except Exception:  # the rows stay pending or failed; the sweep retries them
        log.exception("events %s: fan-out after commit failed", ids)


def _after_rollback(session: Any, previous_transaction: Any) -> None:
    if previous_transaction.parent is None or not session.in_transaction():
        session.info.pop("erpq_outbox", None)
        session.info.pop("erpq_outbox_rows", None)
        session.info.pop("erpq_outbox_bulk", None)


def dispatch(rt: Any, event_id: int, raise_errors: bool = False) -> dict[str, Any] | None:
    """Claim outbox row ``event_id`` and run its handlers; returns their results.

    A row another process holds (or already did) is left alone: returns None.
    """
    return dispatch_many(rt, [event_id], raise_errors=raise_errors).get(event_id)


def dispatch_many(rt: Any, event_ids: list[int], raise_errors: bool = False) -> dict[int, dict[str, Any]]:
    """Claim the outbox rows ``event_ids`` in one statement, run each event's
    handlers, and close them in one more: the events of one commit cost two
    writes, not two each. Returns the handlers' results of each event claimed
    (rows another process holds, or already did, are absent)."""
    import sqlalchemy as sa

    from .db import utcnow
    from .models import EventOutbox as O

    if not event_ids:
        return {}
    now = utcnow()
    stale = now - dt.timedelta(seconds=CLAIM_LEASE_S)
    claimable = sa.or_(O.status == "pending", sa.and_(O.status == "dispatching", O.claimed_at < stale))
    with rt.session() as s:
        # claimed_at = now marks this claim: the rows read back are the ones this call won
        s.execute(sa.update(O).where(O.id.in_(event_ids), claimable)
                  .values(status="dispatching", claimed_at=now, attempts=O.attempts + 1)
                  .execution_options(synchronize_session=False))
        rows = s.execute(sa.select(O.id, O.name, O.payload, O.tenant_id, O.created_at, O.attempts)
                         .where(O.id.in_(event_ids), O.status == "dispatching", O.claimed_at == now)
                         .order_by(O.id)).all()
    if not rows:
        return {}
    results: dict[int, dict[str, Any]] = {}
    errors: dict[int, dict[str, BaseException]] = {}
    evs = [Event(name=name, payload=dict(payload or {}), tenant_id=tenant_id, id=str(event_id),
                 occurred_at=created_at) for event_id, name, payload, tenant_id, created_at, _ in rows]
    for event in evs:
        out = results.setdefault(int(event.id), {})
        for handler in handlers_for(event.name):
            if getattr(handler, "erpq_batch", False):
                continue
            label = f"{handler.__module__}.{handler.__qualname__}"
            try:
                out[label] = handler(event)
            except Exception as exc:  # one failing handler must not starve the others
                log.exception("event %s %s: handler %s failed", event.name, event.id, label)
                errors.setdefault(int(event.id), {})[label] = exc
    for name, handler in list(_handlers):
        if not getattr(handler, "erpq_batch", False):
            continue
        mine = [e for e in evs if name in (ALL, e.name)]
        if not mine:
            continue
        label = f"{handler.__module__}.{handler.__qualname__}"
        try:
            got = handler(mine) or {}
            for e in mine:
                results[int(e.id)][label] = got.get(e.id)
        except Exception as exc:
            log.exception("events %s..: batch handler %s failed", mine[0].id, label)
            for e in mine:
                errors.setdefault(int(e.id), {})[label] = exc
    failed: dict[int, tuple[str, int]] = {}
    first_error: EmitError | None = None
    attempts_of = {r[0]: r[5] for r in rows}
    names = {int(e.id): e.name for e in evs}
    for event_id, errs in errors.items():
        label, exc = next(iter(errs.items()))
        failed[event_id] = (f"{label}: {type(exc).__name__}: {exc}"[:4000], attempts_of[event_id])
        first_error = first_error or EmitError(names[event_id], errs)
    done = [r[0] for r in rows if r[0] not in failed]
    with rt.session() as s:
        if done:
            s.execute(sa.update(O).where(O.id.in_(done)).values(status="done", dispatched_at=utcnow(), error=None)
                      .execution_options(synchronize_session=False))
        for event_id, (error, attempts) in failed.items():
            s.execute(sa.update(O).where(O.id == event_id).values(
                status="failed" if attempts >= MAX_ATTEMPTS else "pending", error=error))
    if first_error is not None and raise_errors:
        raise first_error
    return results


def sweep(rt: Any, limit: int = 500) -> int:
    """Fan out events whose emitter died before (or while) fanning them out; returns how many."""
    import sqlalchemy as sa

    from .db import utcnow
    from .models import EventOutbox as O

    now = utcnow()
    with rt.read_session() as s:
        ids = list(s.scalars(sa.select(O.id).where(sa.or_(
            sa.and_(O.status == "pending", O.created_at < now - dt.timedelta(seconds=SWEEP_AFTER_S)),
            sa.and_(O.status == "dispatching", O.claimed_at < now - dt.timedelta(seconds=CLAIM_LEASE_S)),
        )).order_by(O.id).limit(limit)))
    if not ids:
        return 0
    load_capabilities_quietly()
    done = 0
    for start in range(0, len(ids), 100):
        try:
            done += len(dispatch_many(rt, ids[start:start + 100]))
        except Exception:
            log.exception("events %s..: sweep fan-out failed", ids[start])
    if done:
        log.info("Swept %d event(s) left pending", done)
    return done


def load_capabilities_quietly() -> None:
    from .runtime.registry import load_capabilities

    load_capabilities()


def _tenant_id(tenant: Any, session: Any = None) -> int:
    if isinstance(tenant, bool):
        raise TypeError("tenant must be an id, a Tenant or a slug")
    if isinstance(tenant, int):
        return tenant
    if hasattr(tenant, "id") and isinstance(tenant.id, int):
        return tenant.id
    if isinstance(tenant, str):
        import sqlalchemy as sa

        from .models import Tenant
        from .runtime import current

        if session is not None:
            tid = session.scalar(sa.select(Tenant.id).where(Tenant.slug == tenant))
        else:
            with current().read_session() as s:
                tid = s.scalar(sa.select(Tenant.id).where(Tenant.slug == tenant))
        if tid is None:
            raise LookupError(f"unknown tenant {tenant!r}")
        return tid
    raise TypeError(f"tenant must be an id, a Tenant or a slug, not {type(tenant).__name__}")
