"""Ops section: emitting a business event by hand (as the application would)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from .. import events
from .base import Invalid, OpsCore, OpsError, _audited, _Record, check_json_payload


@dataclass
class EmitOutcome(_Record):
    event_id: str
    name: str
    tenant_id: int
    handlers: int
    #: What the handlers did, one line each (e.g. the webhook deliveries they queued).
    effects: list[str] = field(default_factory=list)


class EventOps(OpsCore):
    @_audited
    def emit_event(self, name: str, payload: dict[str, Any] | None, tenant: str | int) -> EmitOutcome:
        """Emit ``name`` for ``tenant`` through the outbox and fan it out now."""
        try:
            events.check_event(name)
            payload = events.check_payload(name, payload)
        except (events.UnknownEvent, TypeError) as exc:
            raise Invalid(str(exc)) from None
        tid = self.tenant_id(tenant)  # type: ignore[attr-defined]
        # Refused at the door: a payload that cannot be sent would fail every delivery attempt.
        check_json_payload(payload, "event data")
        data = json.dumps(payload, separators=(",", ":"))
        self._act("event.emit", name, f"erpq event emit {shlex.quote(name)} --tenant {shlex.quote(str(tenant))}"
                  + (f" --data {shlex.quote(data)}" if payload else ""))
        # The outbox row commits with the audit row; the fan-out runs after the commit
        # (a fan-out that fails leaves the event pending: the runners' sweep retries it).
        with self._tx() as s:
            event_id = events.write_outbox(s, name, payload, tid)
        results: dict[str, Any] = {}

        def fan_out() -> None:
            try:
                results.update(events.dispatch(self.rt, event_id, raise_errors=True) or {})
            except events.EmitError as exc:
                raise OpsError(str(exc)) from None

        self._after_commit(fan_out, keep_audit=True)

        def outcome() -> EmitOutcome:
            effects = [f"{label.rsplit('.', 1)[-1]}: {item}" for label, result in results.items()
                       if isinstance(result, list | tuple) for item in result]
            return EmitOutcome(event_id=str(event_id), name=name, tenant_id=tid, handlers=len(results),
                               effects=effects)

        return self._then(outcome)
