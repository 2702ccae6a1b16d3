"""``erpq lead|contact|deal|activity add|list|update``, ``erpq notifications list|read``,
``erpq workflow load|list|runs|show``: thin over ``ops.crm``."""

from __future__ import annotations

import argparse

from ..cli_support import (
    CliError,
    Group,
    bounded_int,
    bounded_text,
    id_int,
    ops_for,
    out,
    print_json,
)

COLUMNS = {
    "lead": ["id", "tenant_id", "name", "email", "company", "status", "owner_id", "created_at"],
    "contact": ["id", "tenant_id", "first_name", "last_name", "email", "company", "owner_id", "created_at"],
    "deal": ["id", "tenant_id", "title", "amount", "currency", "status", "stage", "assigned_to", "created_by"],
    "activity": ["id", "tenant_id", "subject", "type", "status", "due_at", "assigned_to", "created_by",
                 "reminder_sent_at"],
}
NOTIFICATION_COLUMNS = ["id", "user", "kind", "title", "read_at", "created_at"]


def _crm(args, rt):
    return ops_for(args, rt).crm


def parse_sets(items: list[str] | None) -> dict[str, str]:
    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set {item!r}: expected FIELD=VALUE")
        values[key.strip()] = value
    return values


def _record_cmds(entity: str):
    def cmd_add(args, rt) -> int:
        info = _crm(args, rt).add(entity, args.tenant, parse_sets(args.set))
        if getattr(args, "json", False):
            print_json(info.to_dict())
        else:
            print(f"Added {entity} {info.id}")
        return 0

    def cmd_list(args, rt) -> int:
        page = _crm(args, rt).records(entity, args.tenant, args.offset, args.limit, args.status)
        return out(args, page.items, COLUMNS[entity])

    def cmd_update(args, rt) -> int:
        info, changes = _crm(args, rt).update(entity, args.id, parse_sets(args.set))
        if getattr(args, "json", False):
            print_json({"record": info.to_dict(), "changes": changes})
        elif changes:
            print(f"Updated {entity} {info.id}: " + ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changes.items()))
        else:
            print(f"{entity} {info.id}: nothing changed")
        return 0

    return cmd_add, cmd_list, cmd_update


DUE_COLUMNS = ["id", "tenant", "subject", "due_local", "assignee", "reminder"]


def cmd_activity_due(args, rt) -> int:
    page = _crm(args, rt).due_activities(args.offset, args.limit, args.search, within_min=args.within)
    return out(args, page.items, DUE_COLUMNS)


def cmd_notifications_counts(args, rt) -> int:
    counts = _crm(args, rt).notification_counts()
    if args.json:
        print_json(counts)
    else:
        print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_notifications_list(args, rt) -> int:
    page = _crm(args, rt).notifications(user=args.user, unread=args.unread, offset=args.offset, limit=args.limit)
    return out(args, page.items, NOTIFICATION_COLUMNS)


def cmd_notifications_read(args, rt) -> int:
    n = _crm(args, rt).mark_read(args.id)
    if args.json:
        print_json(n.to_dict())
        return 0
    print(f"Notification {n.id} read")
    return 0


def register(groups, common: argparse.ArgumentParser) -> None:
    from ..crm.service import FIELDS

    for entity in ("lead", "contact", "deal", "activity"):
        cmd_add, cmd_list, cmd_update = _record_cmds(entity)
        fields = ", ".join(FIELDS[entity])
        g = Group(groups, common, entity, f"{entity} records (fields: {fields})")
        c = g.cmd("add", cmd_add, f"create a {entity} (emits {entity}.created)", json=True)
        c.add_argument("--tenant", required=True, type=bounded_text(64), help="tenant slug or id")
        c.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help=f"a field's value (repeat); times ISO 8601, UTC unless an offset is given. Fields: {fields}")
        c = g.cmd("list", cmd_list, f"{entity} records, newest first", json=True, paged=True)
        c.add_argument("--tenant", type=bounded_text(64), help="only this tenant (slug or id)")
        c.add_argument("--status", type=bounded_text(32), help="only records with this status")
        c = g.cmd("update", cmd_update, f"change fields of a {entity} (emits {entity}.updated)", json=True)
        c.add_argument("id", type=id_int, help=f"the {entity} id")
        c.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a new value (repeat)")
        if entity == "activity":
            c = g.cmd("due", cmd_activity_due, "open activities due within the reminder window (overdue "
                      "included), soonest first, with reminder state and the due time in the recipient's zone",
                      json=True, paged=True)
            c.add_argument("--within", type=bounded_int(0, 525_600), metavar="MIN", help="minutes ahead (default: [crm] "
                           "reminder_window_min)")
            c.add_argument("--search", type=bounded_text(255), help="only activities whose subject, tenant or recipient contains this")

    g = Group(groups, common, "notifications", "users' database notifications")
    c = g.cmd("list", cmd_notifications_list, "notifications, newest first", json=True, paged=True)
    c.add_argument("--user", type=id_int, help="only this user's (user id)")
    c.add_argument("--unread", action="store_true", help="only unread ones")
    g.cmd("counts", cmd_notifications_counts, "notification counts (total, unread)", json=True)
    g.cmd("read", cmd_notifications_read, "mark a notification read", json=True).add_argument(
        "id", type=id_int, help="the notification id")

    from .workflow_cli import register_workflow

    register_workflow(groups, common)
