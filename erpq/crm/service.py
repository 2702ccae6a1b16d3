"""Records and their events, notifications: plain functions on a session.

Every create and update emits its event in the caller's transaction
(``erpq.events.emit(..., session=s)``), so a rolled-back change announces
nothing. An event's payload is the record as JSON plus, for updates,
``changes`` ({field: [old, new]}); ``_depth`` counts the workflow runs that
led to the change (the workflow loop guard reads it).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import events
from ..db import utcnow
from ..models import Tenant, User
from .models import Activity, Contact, Deal, Lead, Notification, UserPreference


class CrmError(ValueError):
    """Bad input or a missing record; the message is one line naming what and why."""


class NotFoundError(CrmError):
    pass


ENTITIES: dict[str, type] = {"lead": Lead, "contact": Contact, "deal": Deal, "activity": Activity}

#: Fields a person (or a workflow's "update a field") may set, per entity.
FIELDS: dict[str, dict[str, str]] = {
    "lead": {"name": "str", "email": "str", "phone": "str", "company": "str", "source": "str", "status": "str",
             "owner_id": "user"},
    "contact": {"first_name": "str", "last_name": "str", "email": "str", "phone": "str", "company": "str",
                "owner_id": "user"},
    "deal": {"title": "str", "amount": "decimal", "currency": "str", "status": "str", "stage": "str",
             "contact_id": "int", "assigned_to": "user", "created_by": "user"},
    "activity": {"subject": "str", "type": "str", "status": "str", "due_at": "datetime", "assigned_to": "user",
                 "created_by": "user", "deal_id": "int"},
}
REQUIRED = {"lead": "name", "contact": None, "deal": "title", "activity": "subject"}
DEAL_STATUSES = ("open", "won", "lost")
ACTIVITY_STATUSES = ("open", "done", "cancelled")


# ---------------------------------------------------------------- values


def jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return float(value)
    return value


def record_dict(row: Any) -> dict[str, Any]:
    """A row as a JSON object (every column)."""
    return {c.key: jsonable(getattr(row, c.key)) for c in sa.inspect(type(row)).column_attrs}


def parse_time(text: str | dt.datetime | None, what: str = "time") -> dt.datetime | None:
    """An aware UTC datetime from ISO 8601 (a time without offset is UTC)."""
    if text is None or text == "":
        return None
    if isinstance(text, dt.datetime):
        value = text
    else:
        try:
            value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise CrmError(f"{what}: not an ISO 8601 time: {text!r}") from None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _coerce(s: Session, tenant_id: int, entity: str, field: str, value: Any) -> Any:
    kind = FIELDS[entity].get(field)
    if kind is None:
        raise CrmError(f"{entity}: unknown field {field!r} (fields: {', '.join(FIELDS[entity])})")
    if value is None or value == "":
        if field == REQUIRED[entity]:
            raise CrmError(f"{entity}.{field}: must not be empty")
        return None
    if kind == "str":
        return str(value)
    if kind == "decimal":
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise CrmError(f"{entity}.{field}: not a number: {value!r}") from None
    if kind == "datetime":
        return parse_time(value, f"{entity}.{field}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise CrmError(f"{entity}.{field}: not an id: {value!r}") from None
    if kind == "user" and s.scalar(sa.select(User.id).where(User.id == number, User.tenant_id == tenant_id)) is None:
        raise CrmError(f"{entity}.{field}: no user {number} in tenant {tenant_id}")
    return number


def _check_status(entity: str, values: dict[str, Any]) -> None:
    allowed = {"deal": DEAL_STATUSES, "activity": ACTIVITY_STATUSES}.get(entity)
    if allowed and "status" in values and values["status"] not in allowed:
        raise CrmError(f"{entity}.status: must be one of {', '.join(allowed)}, not {values['status']!r}")


def check_tenant(s: Session, tenant_id: int) -> None:
    if s.get(Tenant, tenant_id) is None:
        raise NotFoundError(f"no tenant {tenant_id}")


# ---------------------------------------------------------------- create / update


def create(s: Session, entity: str, tenant_id: int, values: dict[str, Any], *, depth: int = 0,
           source_key: str | None = None) -> Any:
    """Create a lead, contact, deal or activity and emit ``<entity>.created``."""
    model = ENTITIES[entity]
    check_tenant(s, tenant_id)
    clean = {k: _coerce(s, tenant_id, entity, k, v) for k, v in values.items()}
    required = REQUIRED[entity]
    if required and not clean.get(required):
        raise CrmError(f"{entity}.{required}: required")
    _check_status(entity, clean)
    if source_key is not None:
        clean["source_key"] = source_key
    row = model(tenant_id=tenant_id, **clean)
    s.add(row)
    s.flush()
    events.emit(f"{entity}.created", {**record_dict(row), "_depth": depth}, tenant_id, session=s)
    return row


def get(s: Session, entity: str, record_id: int, tenant_id: int | None = None, *, lock: bool = False) -> Any:
    model = ENTITIES[entity]
    q = sa.select(model).where(model.id == record_id)
    if tenant_id is not None:
        q = q.where(model.tenant_id == tenant_id)
    if lock:
        q = q.with_for_update()
    row = s.scalar(q)
    if row is None:
        raise NotFoundError(f"no {entity} {record_id}" + (f" in tenant {tenant_id}" if tenant_id else ""))
    return row


def update(s: Session, entity: str, record_id: int, values: dict[str, Any], *, tenant_id: int | None = None,
           depth: int = 0) -> tuple[Any, dict[str, list]]:
    """Change fields of a record; emits ``<entity>.updated`` with the changes, and
    ``deal.status_changed`` (old and new status) when a deal's status changed.
    Returns the row and its changes ({} when nothing changed: no event)."""
    row = get(s, entity, record_id, tenant_id, lock=True)
    clean = {k: _coerce(s, row.tenant_id, entity, k, v) for k, v in values.items()}
    _check_status(entity, clean)
    changes: dict[str, list] = {}
    for key, value in clean.items():
        old = getattr(row, key)
        if old != value:
            changes[key] = [jsonable(old), jsonable(value)]
            setattr(row, key, value)
    if not changes:
        return row, {}
    if entity == "activity" and "due_at" in changes:  # a new due time deserves a new reminder
        row.reminder_claimed_at = row.reminder_sent_at = None
    s.flush()
    payload = {**record_dict(row), "changes": changes, "_depth": depth}
    events.emit(f"{entity}.updated", payload, row.tenant_id, session=s)
    if entity == "deal" and "status" in changes:
        old, new = changes["status"]
        events.emit("deal.status_changed", {**payload, "old_status": old, "new_status": new}, row.tenant_id,
                    session=s)
    return row, changes


def listing(s: Session, entity: str, tenant_id: int | None = None, offset: int = 0, limit: int = 50,
            status: str | None = None) -> tuple[list[Any], int]:
    model = ENTITIES[entity]
    q = sa.select(model)
    if tenant_id is not None:
        q = q.where(model.tenant_id == tenant_id)
    if status is not None and hasattr(model, "status"):
        q = q.where(model.status == status)
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    return list(s.scalars(q.order_by(model.id.desc()).offset(offset).limit(limit))), total


# ---------------------------------------------------------------- notifications


def notify(s: Session, tenant_id: int, user_id: int, kind: str, title: str, body: str | None,
           data: dict[str, Any] | None, dedupe_key: str, known_new: bool = False) -> Notification | None:
    """Add a notification unless this user already has one with ``dedupe_key``;
    returns it, or None when it existed (a repeated job never notifies twice).

    ``known_new``: the caller's transaction already makes the key new (a workflow
    step that owns it, recorded in the same transaction): insert without looking
    first; a duplicate then fails the transaction (IntegrityError) instead of
    being skipped."""
    if known_new:
        row = Notification(tenant_id=tenant_id, user_id=user_id, kind=kind, title=title[:255], body=body,
                           data=data, dedupe_key=dedupe_key[:191])
        s.add(row)
        s.flush()
        return row
    if s.scalar(sa.select(Notification.id).where(Notification.user_id == user_id,
                                                 Notification.dedupe_key == dedupe_key)) is not None:
        return None
    row = Notification(tenant_id=tenant_id, user_id=user_id, kind=kind, title=title[:255], body=body,
                       data=data, dedupe_key=dedupe_key[:191])
    try:
        with s.begin_nested():  # two jobs racing: the unique key decides, the loser skips
            s.add(row)
            s.flush()
    except IntegrityError:
        return None
    return row


def notifications(s: Session, user_id: int | None = None, unread: bool = False, tenant_id: int | None = None,
                  offset: int = 0, limit: int = 50, search: str | None = None
                  ) -> tuple[list[tuple[Notification, str]], int]:
    q = sa.select(Notification, User.name).join(User, User.id == Notification.user_id)
    if user_id is not None:
        q = q.where(Notification.user_id == user_id)
    if tenant_id is not None:
        q = q.where(Notification.tenant_id == tenant_id)
    if unread:
        q = q.where(Notification.read_at.is_(None))
    if search:
        from ..ops.base import text_search

        q = q.where(text_search((Notification.title, Notification.kind, User.name), search))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    rows = s.execute(q.order_by(Notification.id.desc()).offset(offset).limit(limit)).all()
    return [(n, name) for n, name in rows], total


def notification(s: Session, notification_id: int) -> tuple[Notification, str]:
    row = s.execute(sa.select(Notification, User.name).join(User, User.id == Notification.user_id)
                    .where(Notification.id == notification_id)).first()
    if row is None:
        raise NotFoundError(f"no notification {notification_id}")
    return row[0], row[1]


def mark_read(s: Session, notification_id: int) -> Notification:
    row = s.get(Notification, notification_id)
    if row is None:
        raise NotFoundError(f"no notification {notification_id}")
    if row.read_at is None:
        row.read_at = utcnow()
    return row


def notification_counts(s: Session) -> dict[str, int]:
    total = s.scalar(sa.select(sa.func.count()).select_from(Notification)) or 0
    unread = s.scalar(sa.select(sa.func.count()).select_from(Notification)
                      .where(Notification.read_at.is_(None))) or 0
    return {"total": total, "unread": unread}


# ---------------------------------------------------------------- users and their time


def user_timezone(s: Session, user_id: int | None, default: str = "UTC") -> zoneinfo.ZoneInfo:
    name = s.scalar(sa.select(UserPreference.timezone).where(UserPreference.user_id == user_id)) if user_id else None
    try:
        return zoneinfo.ZoneInfo(name or default)
    except Exception:
        return zoneinfo.ZoneInfo("UTC")


def set_user_timezone(s: Session, user_id: int, timezone: str) -> None:
    try:
        zoneinfo.ZoneInfo(timezone)
    except Exception:
        raise CrmError(f"unknown timezone {timezone!r}") from None
    user = s.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    pref = s.get(UserPreference, user_id)
    if pref is None:
        s.add(UserPreference(user_id=user_id, tenant_id=user.tenant_id, timezone=timezone))
    else:
        pref.timezone = timezone


def local_time(when: dt.datetime | None, tz: zoneinfo.ZoneInfo) -> str:
    """``when`` in a user's timezone, with its abbreviation (e.g. 2026-03-01 14:30 CET)."""
    if when is None:
        return "-"
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
