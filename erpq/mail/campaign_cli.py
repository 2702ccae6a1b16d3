"""``erpq campaign create|add-recipients|send|schedule|pause|resume|cancel|status``."""

from __future__ import annotations

from pathlib import Path

from ..cli_support import (
    CliError,
    Group,
    bounded_int,
    bounded_text,
    column_text,
    datetime_arg,
    id_int,
    ops_for,
    out,
    print_json,
)
from .models import EmailCampaign

RECIPIENT_COLUMNS = ["id", "email", "name", "status", "attempts", "error", "sent_at"]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


def cmd_create(args, rt) -> int:
    c = ops_for(args, rt).mail.create_campaign(args.tenant, args.account, args.name, args.subject,
                                               _read(args.body_file), args.rate)
    print(f"Created campaign {c.id} ({c.name}), draft")
    return 0


def cmd_add(args, rt) -> int:
    if bool(args.csv) == bool(args.source):
        raise CliError("give exactly one of --csv FILE or --from contacts|leads")
    added, dups, invalid = ops_for(args, rt).mail.add_recipients(args.id, args.csv, args.source)
    for where, reason in invalid:
        print(f"refused {where}: {reason}")
    print(f"Added {added} recipients, skipped {dups} duplicates, refused {len(invalid)}")
    return 0


def cmd_send(args, rt) -> int:
    c = ops_for(args, rt).mail.send(args.id)
    print(f"Campaign {c.id} is {c.status} ({c.total} recipients)")
    return 0


def cmd_schedule(args, rt) -> int:
    c = ops_for(args, rt).mail.send(args.id, args.at)
    print(f"Campaign {c.id} is {c.status} for {c.scheduled_at}")
    return 0


def _control(action):
    def handler(args, rt) -> int:
        c = getattr(ops_for(args, rt).mail, action)(args.id)
        print(f"Campaign {c.id} is {c.status}")
        return 0
    return handler


def cmd_status(args, rt) -> int:
    mail = ops_for(args, rt).mail
    c = mail.campaign(args.id)
    uncertain = mail.recipients(args.id, status="uncertain", limit=1000).items
    if args.json:
        print_json({**c.to_dict(), "uncertain": [u.to_dict() for u in uncertain]})
        return 0
    print(f"Campaign {c.id} {c.name}: {c.status}, {c.progress} of {c.total}, rate {c.rate_per_minute}/min"
          + (f", ETA {c.eta:%H:%M:%S}" if c.eta else ""))
    print("  " + ", ".join(f"{k} {v}" for k, v in c.counts.items()))
    if c.error:
        print(f"  last error: {c.error}")
    if uncertain:
        print("Uncertain (check before resending):")
        out(args, uncertain, RECIPIENT_COLUMNS)
    return 0


def register_campaign(groups, common) -> None:
    g = Group(groups, common, "campaign", "email campaigns")
    c = g.cmd("create", cmd_create, "create a draft campaign (templates checked now)")
    c.add_argument("--tenant", required=True, type=bounded_text(64), help="tenant slug or id")
    c.add_argument("--account", type=id_int, required=True, help="sending email account id")
    c.add_argument("--name", required=True, type=column_text(EmailCampaign, "name"), help="campaign name")
    c.add_argument("--subject", required=True, type=column_text(EmailCampaign, "subject"), help="subject template (Jinja2, sandboxed)")
    c.add_argument("--body-file", required=True, help="file holding the body template")
    c.add_argument("--rate", type=bounded_int(1, 1_000_000), help="messages per minute (default [mailing] rate_per_minute)")
    c = g.cmd("add-recipients", cmd_add, "add recipients from a CSV file or the tenant's contacts/leads")
    c.add_argument("id", type=id_int, help="campaign id")
    c.add_argument("--csv", help="CSV file with an 'email' column (other columns become fields)")
    c.add_argument("--from", dest="source", choices=("contacts", "leads"), help="the tenant's contacts or leads")
    g.cmd("send", cmd_send, "start sending now").add_argument("id", type=id_int, help="campaign id")
    c = g.cmd("schedule", cmd_schedule, "start sending at a time")
    c.add_argument("id", type=id_int, help="campaign id")
    c.add_argument("--at", required=True, type=datetime_arg, help="ISO date-time (UTC unless an offset is given)")
    for action in ("pause", "resume", "cancel"):
        g.cmd(action, _control(action), f"{action} a campaign").add_argument("id", type=id_int, help="campaign id")
    g.cmd("status", cmd_status, "progress, counts by status, uncertain recipients", json=True).add_argument(
        "id", type=id_int, help="campaign id")
