"""``erpq health``: latest readings, a reading now, history."""

from __future__ import annotations

import argparse

from ..cli_support import bounded_text, count_int, finite_float, flag_parents, ops_for, out

COLUMNS = ["tenant", "checked_at", "status", "cpu_percent", "memory_percent", "disk_percent",
           "db_connections", "queue_pending", "failed_last_hour"]


PROBE_COLUMNS = ["id", "enqueued_at", "status", "wait_s", "run_s", "runner", "error"]


def cmd_health(args, rt) -> int:
    ops = ops_for(args, rt)
    health = ops.health
    if args.probe:
        probe = health.probe(wait_s=args.wait)
        code = out(args, [probe], PROBE_COLUMNS)
        return code or (0 if probe.status == "ok" else 1)
    if args.probes:
        return out(args, health.probes(limit=args.limit), PROBE_COLUMNS)
    if args.history:
        tenant_id = ops.tenant_id(args.tenant) if args.tenant else None
        items = health.history(tenant_id=tenant_id, limit=args.limit)
    else:
        items = health.check() if args.check else health.latest()
    if not items and not args.json:
        print("No health readings yet: erp:check-system-health runs every 5 minutes, "
              "or take one now with 'erpq health --check'.")
        return 0
    code = out(args, items, COLUMNS) or 0
    if args.check:  # a probe: the exit code says how it went
        statuses = {h.status for h in items}
        return CHECK_CODES["critical"] if "critical" in statuses else \
            CHECK_CODES["warning"] if "warning" in statuses else code
    return code


#: ``erpq health --check`` exit codes (1 and 2 keep their meaning: error, usage).
CHECK_CODES = {"ok": 0, "warning": 3, "critical": 4}


def register(groups, common: argparse.ArgumentParser) -> None:
    json_flag, _ = flag_parents()
    c = groups.add_parser("health", help="system health readings", parents=[common, json_flag],
                          description="system health readings of the host and every tenant")
    c.set_defaults(handler=cmd_health)
    c.add_argument("--check", action="store_true",
                   help="take a reading now; exit 0 ok, 3 warning, 4 critical (1 error, 2 usage): usable as a probe")
    c.add_argument("--history", action="store_true", help="readings over time")
    c.add_argument("--probe", action="store_true",
                   help="send a probe job through the queue and wait for it (exit 1 when no worker ran it)")
    c.add_argument("--wait", type=finite_float(0, 3600), default=None,
                   help="with --probe: seconds to wait (default health.probe_timeout_s)")
    c.add_argument("--probes", action="store_true", help="the last probes' wait and run times (--limit)")
    c.add_argument("--tenant", type=bounded_text(64), help="with --history: this tenant (slug or id)")
    c.add_argument("--limit", type=count_int, default=60, help="readings to show with --history (default 60)")
