"""``erpq workflow load|list|runs|show|resume``."""

from __future__ import annotations

from ..cli_support import Group, bounded_text, id_int, ops_for, out, print_json

RUN_COLUMNS = ["id", "workflow", "event", "status", "steps_done", "next_step", "resume_at", "error"]


def cmd_load(args, rt) -> int:
    loaded = ops_for(args, rt).crm.load_workflows(args.tenant, args.file)
    if args.json:
        print_json([w.to_dict() for w in loaded])
        return 0
    print(f"Loaded {len(loaded)} workflow(s): {', '.join(w.name for w in loaded)}")
    return 0


def cmd_list(args, rt) -> int:
    return out(args, ops_for(args, rt).crm.workflows(args.tenant),
               ["id", "tenant_id", "name", "trigger_event", "match", "is_active"])


def cmd_runs(args, rt) -> int:
    page = ops_for(args, rt).crm.workflow_runs(args.offset, args.limit, status=args.status)
    return out(args, page.items, RUN_COLUMNS)


def cmd_show(args, rt) -> int:
    info = ops_for(args, rt).crm.workflow_run(args.run)
    if args.json:
        print_json(info.to_dict())
        return 0
    out(args, [info], RUN_COLUMNS)
    for step in info.steps or []:
        print(f"  step {step['step']} {step['action']}: {step['status']} at {step['at']}"
              + (f" - {step['error']}" if step.get("error") else ""))
    return 0


def cmd_resume(args, rt) -> int:
    ops_for(args, rt).crm.resume_run(args.run)
    print(f"Resuming workflow run {args.run}")
    return 0


def register_workflow(groups, common) -> None:
    g = Group(groups, common, "workflow", "workflows: definitions and runs")
    c = g.cmd("load", cmd_load, "validate and load workflows from a TOML or JSON file (replaces same names)",
              json=True)
    c.add_argument("file", help="a .toml or .json file")
    c.add_argument("--tenant", required=True, type=bounded_text(64), help="tenant slug or id")
    g.cmd("list", cmd_list, "workflow definitions", json=True).add_argument("--tenant", help="only this tenant")
    c = g.cmd("runs", cmd_runs, "workflow runs, newest first, with waiting instances", json=True, paged=True)
    c.add_argument("--status", help="only runs with this status (running waiting completed failed cut)")
    g.cmd("show", cmd_show, "one run with each step", json=True).add_argument("run", type=id_int, help="run id")
    g.cmd("resume", cmd_resume, "resume a waiting run now").add_argument("run", type=id_int, help="run id")
