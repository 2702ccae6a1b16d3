"""The in-process event API: ``emit(name, payload, tenant)`` and handlers.

Business code announces what happened (``emit("deal.created", {...}, tenant)``)
without knowing who listens; capabilities subscribe with ``@on("deal.created")``
(or ``@on()`` for every event) when their module is imported. Webhook fan-out
is one such handler (``erpq.webhooks``); workflows and deal notifications will
be others.

``emit`` imports every capability module first (``load_capabilities``), so a
handler is never missed because its module had not been imported yet.

Handlers run in order of registration, in the emitting thread. One failing
handler does not stop the others: every handler runs, then the first error is
raised again (as ``EmitError``) so the caller knows the event was not fully
handled.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("erpq.events")

#: Every event name the system emits; subscriptions to other names are refused.
EVENTS: set[str] = {
    "contact.created",
    "deal.created",
    "deal.status_changed",
    "import.finished",
    "invoice.created",
    "lead.created",
    "product.updated",
    "purchase_order.created",
}

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


def on(name: str = ALL) -> Callable[[Handler], Handler]:
    """Register ``handler(event)`` for event ``name`` (default: every event).

    Registering the same function again (a module imported twice) is a no-op.
    """
    if name != ALL:
        check_event(name)

    def decorator(handler: Handler) -> Handler:
        key = (handler.__module__, handler.__qualname__)
        _handlers[:] = [(n, h) for n, h in _handlers
                        if not (n == name and (h.__module__, h.__qualname__) == key)]
        _handlers.append((name, handler))
        return handler

    return decorator


def handlers_for(name: str) -> list[Handler]:
    return [h for n, h in _handlers if n in (ALL, name)]


def emit(name: str, payload: dict[str, Any] | None, tenant: Any) -> dict[str, Any]:
    """Announce event ``name`` for ``tenant`` (an id, a Tenant row or a slug).

    ``payload`` must be a JSON object; it is checked here so that a bad payload
    fails at the caller, not later in a queued job. Returns each handler's
    result by handler name (the webhook handler returns its delivery ids).
    """
    from .runtime.registry import load_capabilities

    load_capabilities()
    check_event(name)
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise TypeError(f"event {name}: payload must be a JSON object, not {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"event {name}: payload is not JSON: {exc}") from None
    event = Event(name=name, payload=payload, tenant_id=_tenant_id(tenant))
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    for handler in handlers_for(name):
        label = f"{handler.__module__}.{handler.__qualname__}"
        try:
            results[label] = handler(event)
        except Exception as exc:  # one failing handler must not starve the others
            log.exception("event %s %s: handler %s failed", name, event.id, label)
            errors[label] = exc
    if errors:
        raise EmitError(name, errors)
    return results


def _tenant_id(tenant: Any) -> int:
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

        with current().read_session() as s:
            tid = s.scalar(sa.select(Tenant.id).where(Tenant.slug == tenant))
        if tid is None:
            raise LookupError(f"unknown tenant {tenant!r}")
        return tid
    raise TypeError(f"tenant must be an id, a Tenant or a slug, not {type(tenant).__name__}")
