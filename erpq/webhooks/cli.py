"""``erpq webhook ...`` and ``erpq event emit``: argparse groups the main CLI mounts.

``register(subparsers, common)`` adds the ``webhook`` group and
``register_events(subparsers, common)`` the ``event`` group; each handler is
``handler(args, rt) -> int``. Bad input ends in one ``CliError`` line and
changes nothing. The secret is printed by ``add`` and ``rotate-secret`` only.

Actions go through ``erpq.ops`` (``disable``, ``enable`` and ``redeliver`` are
``Ops`` methods), so each is written to the audit log like every other
operator action; ``add`` and ``rotate-secret`` stay here (they print the
secret once) and are audited with ``Ops.audit``, without it.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

import sqlalchemy as sa

from .. import events
from ..cli_support import CliError, print_json, print_table
from ..models import Tenant, Webhook, WebhookDelivery
from . import service
from .service import WebhookError

WEBHOOK_COLUMNS = ["id", "tenant", "url", "events", "active", "failures", "disabled_at", "disabled_reason"]
DELIVERY_COLUMNS = ["id", "delivery_id", "webhook_id", "event", "status", "attempts", "response_code",
                    "error", "next_retry_at", "delivered_at", "created_at"]


# ---------------------------------------------------------------- helpers


def _ops(rt):
    from ..ops import Actor, Ops

    return Ops(rt, Actor.detect("cli"))


def _ops_call(method, *args):
    """Call an ``Ops`` action; its one-line errors become ``CliError``."""
    from ..ops import OpsError

    try:
        return method(*args)
    except OpsError as exc:
        raise CliError(str(exc)) from None


def tenant_id(s, ref: str) -> int:
    """A tenant id from a slug or an id."""
    q = sa.select(Tenant.id)
    q = q.where(Tenant.id == int(ref)) if ref.isdigit() else q.where(Tenant.slug == ref)
    tid = s.scalar(q)
    if tid is None:
        raise CliError(f"unknown tenant {ref!r} (see 'erpq tenant list')")
    return tid


def webhook_row(h: Webhook, slugs: dict[int, str]) -> dict[str, Any]:
    """What operators see of a subscription: everything but the secret."""
    return {"id": h.id, "tenant": slugs.get(h.tenant_id, h.tenant_id), "url": h.url,
            "events": ",".join(h.events or []), "active": h.is_active, "failures": h.consecutive_failures,
            "first_failure_at": h.first_failure_at, "disabled_at": h.disabled_at,
            "disabled_reason": h.disabled_reason, "description": h.description, "created_at": h.created_at}


def delivery_row(d: WebhookDelivery) -> dict[str, Any]:
    return {"id": d.id, "delivery_id": d.delivery_id, "webhook_id": d.webhook_id, "tenant_id": d.tenant_id,
            "event": d.event, "status": d.status, "attempts": d.attempts, "response_code": d.response_code,
            "error": d.error, "duration_ms": d.duration_ms, "next_retry_at": d.next_retry_at,
            "delivered_at": d.delivered_at, "created_at": d.created_at, "response_body": d.response_body}


def _out(args, rows: list[dict], columns: list[str]) -> int:
    print_json(rows) if args.json else print_table(rows, columns)
    return 0


def _slugs(s) -> dict[int, str]:
    return dict(s.execute(sa.select(Tenant.id, Tenant.slug)).all())


# ---------------------------------------------------------------- handlers


def cmd_add(args, rt) -> int:
    names = [n for part in (args.events or []) for n in part.split(",")]
    ops = _ops(rt)
    _ops_call(ops.check_writable, "webhook.add")
    try:
        with rt.session() as s:
            hook, secret = service.create_webhook(
                s, tenant_id(s, args.tenant), args.url, names, description=args.description,
                allow=rt.settings.webhooks.allow_hosts)
            hook_id, subscribed = hook.id, hook.events
    except WebhookError as exc:
        raise CliError(str(exc)) from None
    command = f"erpq webhook add {shlex.quote(args.url)} --tenant {shlex.quote(args.tenant)}" + "".join(
        f" --event {shlex.quote(n)}" for n in names) + (
        f" --description {shlex.quote(args.description)}" if args.description else "")
    ops.audit("webhook.add", str(hook_id), command)
    print(f"Added webhook {hook_id} -> {args.url} for {', '.join(subscribed)}")
    print(f"Secret (shown once, store it now): {secret}")
    return 0


def cmd_list(args, rt) -> int:
    with rt.read_session() as s:
        tid = tenant_id(s, args.tenant) if args.tenant else None
        slugs = _slugs(s)
        rows = [webhook_row(h, slugs) for h in service.list_webhooks(s, tid)]
    return _out(args, rows, WEBHOOK_COLUMNS)


def cmd_disable(args, rt) -> int:
    ops = _ops(rt)
    hook = _ops_call(ops.disable_webhook, args.id, args.reason)
    print(f"Disabled webhook {args.id} ({hook.disabled_reason})")
    return 0


def cmd_enable(args, rt) -> int:
    ops = _ops(rt)
    _ops_call(ops.enable_webhook, args.id)
    print(f"Enabled webhook {args.id} (failure count reset)")
    return 0


def cmd_rotate(args, rt) -> int:
    ops = _ops(rt)
    _ops_call(ops.check_writable, "webhook.rotate-secret")
    try:
        with rt.session() as s:
            secret = service.rotate_secret(s, args.id)
    except WebhookError as exc:
        raise CliError(str(exc)) from None
    ops.audit("webhook.rotate-secret", str(args.id), f"erpq webhook rotate-secret {args.id}")
    print(f"Rotated the secret of webhook {args.id}; deliveries are signed with it from now on")
    print(f"Secret (shown once, store it now): {secret}")
    return 0


def cmd_redeliver(args, rt) -> int:
    ops = _ops(rt)
    d = _ops_call(ops.redeliver, args.delivery)
    print(f"Redelivering {d.delivery_id} (webhook {d.webhook_id}, {d.event})")
    return 0


def cmd_deliveries(args, rt) -> int:
    try:
        with rt.read_session() as s:
            rows = [delivery_row(d) for d in service.list_deliveries(
                s, status=args.status, webhook_id=args.webhook, limit=args.limit, offset=args.offset)]
    except WebhookError as exc:
        raise CliError(str(exc)) from None
    return _out(args, rows, DELIVERY_COLUMNS)


def cmd_event_emit(args, rt) -> int:
    try:
        payload = json.loads(args.data) if args.data else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"--data: not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(payload, dict):
        raise CliError("--data: must be a JSON object, e.g. '{\"id\": 7}'")
    try:
        events.check_event(args.name)
    except events.UnknownEvent as exc:
        raise CliError(str(exc)) from None
    with rt.read_session() as s:
        tid = tenant_id(s, args.tenant)
    try:
        results = events.emit(args.name, payload, tid)
    except events.EmitError as exc:
        raise CliError(str(exc)) from None
    deliveries = results.get("erpq.webhooks.service.fan_out_to_webhooks") or []
    print(f"Emitted {args.name} for tenant {args.tenant}: {len(results)} handler(s), "
          f"{len(deliveries)} webhook deliver{'y' if len(deliveries) == 1 else 'ies'} queued")
    for delivery_id in deliveries:
        print(f"  {delivery_id}")
    return 0


# ---------------------------------------------------------------- parsers


def register(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``erpq webhook add|list|disable|enable|rotate-secret|redeliver|deliveries``."""
    g = subparsers.add_parser("webhook", help="webhook subscriptions and deliveries", parents=[common],
                              description="webhook subscriptions and deliveries")
    sub = g.add_subparsers(dest="cmd", metavar="SUBCOMMAND", required=True)

    def cmd(name: str, handler, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, parents=[common])
        c.set_defaults(handler=handler)
        if json_flag:
            c.add_argument("--json", action="store_true", help="print JSON")
        return c

    c = cmd("add", cmd_add, "subscribe a URL to events (prints the secret once)")
    c.add_argument("url")
    c.add_argument("--tenant", required=True, help="slug or id")
    c.add_argument("--event", dest="events", action="append", metavar="NAME",
                   help=f"event to send (repeat or comma-separate; default: all). Known: {', '.join(sorted(events.EVENTS))}")
    c.add_argument("--description")
    c = cmd("list", cmd_list, "subscriptions, with failure counts and why disabled", json_flag=True)
    c.add_argument("--tenant", help="slug or id")
    c = cmd("disable", cmd_disable, "stop sending to a subscription")
    c.add_argument("id", type=int)
    c.add_argument("--reason")
    cmd("enable", cmd_enable, "send to a subscription again (resets its failure count)").add_argument(
        "id", type=int)
    cmd("rotate-secret", cmd_rotate, "give a subscription a new secret (printed once)").add_argument(
        "id", type=int)
    cmd("redeliver", cmd_redeliver, "send a delivery again, same delivery id, full attempts").add_argument(
        "delivery", metavar="DELIVERY_ID", help="msg_... or the row id")
    c = cmd("deliveries", cmd_deliveries, "deliveries, newest first", json_flag=True)
    c.add_argument("--status", choices=service.STATUSES)
    c.add_argument("--webhook", type=int, help="only this subscription")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--offset", type=int, default=0)


def register_events(subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``erpq event emit NAME --tenant T [--data JSON]``."""
    g = subparsers.add_parser("event", help="emit business events", parents=[common],
                              description="emit business events (as the application would)")
    sub = g.add_subparsers(dest="cmd", metavar="SUBCOMMAND", required=True)
    c = sub.add_parser("emit", help="emit an event to its handlers (webhooks, ...)", parents=[common],
                       description="emit an event to its handlers (webhooks, ...)")
    c.set_defaults(handler=cmd_event_emit)
    c.add_argument("name", help=f"one of: {', '.join(sorted(events.EVENTS))}")
    c.add_argument("--tenant", required=True, help="slug or id")
    c.add_argument("--data", help="the payload, a JSON object")
