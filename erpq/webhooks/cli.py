"""``erpq webhook ...``: the webhooks capability's CLI group.

Every command calls ``ops.webhooks`` only, so each action is audited, refused
in read-only mode and recorded with its equivalent command. The secret is
printed by ``add`` and ``rotate-secret`` only.
"""

from __future__ import annotations

import argparse

from .. import events
from ..cli_support import Group, bounded_text, id_int, ops_for, out
from . import service

WEBHOOK_COLUMNS = ["id", "tenant", "url", "events", "is_active", "consecutive_failures", "disabled_at",
                   "disabled_reason"]
DELIVERY_COLUMNS = ["id", "delivery_id", "webhook_id", "event", "status", "attempts", "response_code",
                    "error", "next_retry_at", "delivered_at", "created_at"]


# ---------------------------------------------------------------- handlers


def _section(args, rt):
    return ops_for(args, rt).webhooks


def cmd_add(args, rt) -> int:
    names = [n for part in (args.events or []) for n in part.split(",") if n]
    hook, secret = _section(args, rt).add(args.tenant, args.url, names, args.description)
    print(f"Added webhook {hook.id} -> {hook.url} for {', '.join(hook.events)}")
    print(f"Secret (shown once, store it now): {secret}")
    return 0


def cmd_list(args, rt) -> int:
    return out(args, _section(args, rt).subscriptions(args.tenant), WEBHOOK_COLUMNS)


def cmd_disable(args, rt) -> int:
    hook = _section(args, rt).disable(args.id, args.reason)
    print(f"Disabled webhook {args.id} ({hook.disabled_reason})")
    return 0


def cmd_enable(args, rt) -> int:
    _section(args, rt).enable(args.id)
    print(f"Enabled webhook {args.id} (failure count reset)")
    return 0


def cmd_rotate(args, rt) -> int:
    secret = _section(args, rt).rotate_secret(args.id)
    print(f"Rotated the secret of webhook {args.id}; deliveries are signed with it from now on")
    print(f"Secret (shown once, store it now): {secret}")
    return 0


def cmd_redeliver(args, rt) -> int:
    d = _section(args, rt).redeliver(args.delivery)
    print(f"Redelivering {d.delivery_id} (webhook {d.webhook_id}, {d.event})")
    return 0


def cmd_deliveries(args, rt) -> int:
    page = _section(args, rt).deliveries(offset=args.offset, limit=args.limit, status=args.status,
                                         webhook_id=args.webhook)
    return out(args, page.items, DELIVERY_COLUMNS)


# ---------------------------------------------------------------- parsers


def register(groups, common: argparse.ArgumentParser) -> None:
    """Add ``erpq webhook add|list|disable|enable|rotate-secret|redeliver|deliveries``."""
    g = Group(groups, common, "webhook", "webhook subscriptions and deliveries")
    c = g.cmd("add", cmd_add, "subscribe a URL to events (prints the secret once)")
    c.add_argument("url", type=bounded_text(2048), help="https://... to POST events to")
    c.add_argument("--tenant", required=True, help="slug or id")
    c.add_argument("--event", dest="events", action="append", metavar="NAME",
                   help=f"event to send (repeat or comma-separate; default: all). Known: {', '.join(sorted(events.EVENTS))}")
    c.add_argument("--description", type=bounded_text(255), help="what the subscription is for")
    c = g.cmd("list", cmd_list, "subscriptions, with failure counts and why disabled", json=True)
    c.add_argument("--tenant", help="slug or id")
    c = g.cmd("disable", cmd_disable, "stop sending to a subscription")
    c.add_argument("id", type=id_int, help="webhook id")
    c.add_argument("--reason", type=bounded_text(512), help="why (shown in 'erpq webhook list')")
    g.cmd("enable", cmd_enable, "send to a subscription again (resets its failure count)").add_argument(
        "id", type=id_int, help="webhook id")
    g.cmd("rotate-secret", cmd_rotate, "give a subscription a new secret (printed once)").add_argument(
        "id", type=id_int, help="webhook id")
    g.cmd("redeliver", cmd_redeliver, "send a delivery again, same delivery id, full attempts").add_argument(
        "delivery", metavar="DELIVERY_ID", help="msg_... or the row id")
    c = g.cmd("deliveries", cmd_deliveries, "deliveries, newest first", json=True, paged=True)
    c.add_argument("--status", choices=service.STATUSES, help="only deliveries in this status")
    c.add_argument("--webhook", type=id_int, help="only this subscription")
