"""Operator commands of issue 8: ``erpq alerts``, ``erpq stats``, ``erpq metrics``,
``erpq jobs`` and ``erpq config show``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .cli_support import CliError, Group, flag_parents, ops_for, out


def cmd_alerts(args, rt) -> int:
    from .alerts import collect

    alerts = collect(ops_for(args, rt))
    if args.json:
        out(args, alerts, [])
    elif not alerts:
        print("No alerts: runners alive, scheduler firing, nothing critical.")
    else:
        out(args, alerts, ["severity", "source", "text", "command"])
    if args.check:  # a probe: 0 none, 3 warnings only, 4 critical
        return 4 if any(a.severity == "critical" for a in alerts) else 3 if alerts else 0
    return 0


def cmd_stats(args, rt) -> int:
    from .metrics import spark, stats

    items = stats(ops_for(args, rt), minutes=args.minutes)
    if args.json:
        return out(args, items, [])
    if not items:
        print(f"No finished runs in the last {args.minutes:g} minutes.")
        return 0
    rows = [{**i.to_dict(), "trend": spark(i.spark)} for i in items]
    return out(args, rows, ["task_name", "processed", "failed", "per_min", "failed_per_min", "wait_p50_s",
                            "wait_p95_s", "run_p50_s", "run_p95_s", "trend"])


def cmd_metrics(args, rt) -> int:
    from .metrics import prometheus_text

    text = prometheus_text(ops_for(args, rt))
    if not args.output:
        sys.stdout.write(text)
        return 0
    # node_exporter's textfile collector must never read a half-written file.
    target = Path(args.output)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".erpq-metrics-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)
    return 0


def cmd_jobs(args, rt) -> int:
    from .runtime.registry import JOBS

    sched = rt.settings.schedule.cron
    items = [{"name": s.name, "kind": "periodic" if s.periodic else "job",
              "schedule": sched.get(s.name, s.cron) if s.periodic else "", "retries": s.retries,
              "capability": getattr(s, "capability", ""), "description": s.description}
             for s in sorted(JOBS.values(), key=lambda s: (not s.periodic, s.name))
             if not s.name.startswith("_")]
    return out(args, items, ["name", "kind", "schedule", "retries", "capability", "description"])


def cmd_config_show(args, rt) -> int:
    from .envconfig import describe

    settings = rt.settings if rt is not None else _load(args)
    rows = describe(settings)
    if args.json:
        print(json.dumps({"config": getattr(settings, "file_source", settings.source), "keys": rows},
                         indent=2, default=str))
        return 0
    for line in _config_summary(settings):
        print(line)
    return out(args, [{**r, "value": json.dumps(r["value"], default=str) if not isinstance(r["value"], str)
                       else r["value"]} for r in rows], ["key", "value", "source"])


def _config_summary(settings) -> list[str]:
    """Which config is in force, where relative paths point and the database (masked)."""
    from .config import uses_packaged_default
    from .runtime.core import redact_url

    source = getattr(settings, "file_source", settings.source)
    if uses_packaged_default(settings):
        lines = [f"config: none found (--config, $ERPQ_CONFIG, ./config.toml): built-in defaults ({source}), "
                 f"relative paths from {settings.base_dir}"]
    else:
        lines = [f"config: {source}"]
    db = settings.sqlite_path(settings.database.url)
    if db is None:
        lines.append(f"database: {redact_url(settings.database.url)}")
    else:
        db = db.absolute()
        lines.append(f"database: {db}" + ("" if db.exists() else " (does not exist: 'erpq db upgrade' creates it)"))
    return lines


def _load(args):
    from .config import load

    return load(args.config)


def register(groups, common: argparse.ArgumentParser) -> None:
    json_flag, _ = flag_parents()
    c = groups.add_parser("alerts", help="what needs attention now (runners, scheduler, health, webhooks)",
                          parents=[common, json_flag])
    c.set_defaults(handler=cmd_alerts)
    c.add_argument("--check", action="store_true", help="exit 0 no alerts, 3 warnings only, 4 critical (a probe)")
    c = groups.add_parser("stats", help="per task: jobs/min, failures, wait and run time p50/p95",
                          parents=[common, json_flag])
    c.set_defaults(handler=cmd_stats)
    c.add_argument("--minutes", type=float, default=60, help="window of run history (default 60)")
    c = groups.add_parser("metrics", help="Prometheus text format (for node_exporter's textfile collector)",
                          parents=[common])
    c.set_defaults(handler=cmd_metrics)
    c.add_argument("--output", help="write atomically to this file instead of stdout (e.g. .../erpq.prom)")
    c = groups.add_parser("jobs", help="registered jobs and periodic tasks", parents=[common, json_flag])
    c.set_defaults(handler=cmd_jobs)
    g = Group(groups, common, "config", "the configuration in force")
    g.cmd("show", cmd_config_show, "every key, its value and where it came from (env, file, default); "
          "secrets masked", json=True, runtime=False)


__all__ = ["CliError", "register"]
