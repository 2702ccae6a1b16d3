"""``erpq mail ...`` (accounts, sync, emails) and ``erpq campaign ...``.

Passwords are never taken on the command line (they would land in shell
history and ``ps``): ``--imap-password-env NAME`` / ``--smtp-password-env NAME``
name environment variables, otherwise they are prompted for.
"""

from __future__ import annotations

import getpass
import os

from ..cli_support import CliError, Group, bounded_text, column_text, id_int, ops_for, out, port_int
from .models import EmailAccount

ACCOUNT_COLUMNS = ["id", "tenant", "email", "imap", "smtp", "folders", "is_active", "last_synced_at",
                   "messages", "backoff", "last_error"]
EMAIL_COLUMNS = ["id", "account_id", "folder", "uid", "from_address", "subject", "sent_at", "contact_id",
                 "lead_id"]
SYNC_COLUMNS = ["account_id", "email", "new", "skipped", "error", "seconds"]


def _mail(args, rt):
    return ops_for(args, rt).mail


def _password(env: str | None, prompt: str, required: bool = True) -> str | None:
    if env:
        if env not in os.environ:
            raise CliError(f"environment variable {env} (the {prompt}) is not set")
        return os.environ[env]
    if not required:
        return None
    try:
        return getpass.getpass(f"{prompt}: ")
    except (EOFError, KeyboardInterrupt):
        raise CliError(f"no {prompt} given") from None


def cmd_account_add(args, rt) -> int:
    imap_pw = _password(args.imap_password_env, "IMAP password")
    smtp_pw = _password(args.smtp_password_env, "SMTP password", required=False)
    acc = _mail(args, rt).add_account(
        args.tenant, args.email, name=args.name, owner_user_id=args.owner, imap_host=args.imap_host,
        imap_port=args.imap_port, imap_security=args.imap_security, imap_username=args.imap_username,
        imap_password=imap_pw, smtp_host=args.smtp_host, smtp_port=args.smtp_port,
        smtp_security=args.smtp_security, smtp_username=args.smtp_username, smtp_password=smtp_pw,
        folders=args.folders)
    print(f"Added email account {acc.id} {acc.email} (IMAP {acc.imap}, SMTP {acc.smtp}, folders "
          f"{', '.join(acc.folders)})")
    return 0


def cmd_account_list(args, rt) -> int:
    return out(args, _mail(args, rt).accounts(args.tenant), ACCOUNT_COLUMNS)


def cmd_account_test(args, rt) -> int:
    checks = _mail(args, rt).test_account(args.id)
    if getattr(args, "json", False):
        return out(args, checks, ["check", "ok", "detail"])
    for c in checks:
        print(f"{c.check.upper():5} {'ok    ' if c.ok else 'FAILED'} {c.detail}")
    return 0 if all(c.ok for c in checks) else 1


def cmd_account_disable(args, rt) -> int:
    _mail(args, rt).disable_account(args.id)
    print(f"Disabled email account {args.id}")
    return 0


def cmd_account_enable(args, rt) -> int:
    _mail(args, rt).enable_account(args.id)
    print(f"Enabled email account {args.id} (failures and back-off cleared)")
    return 0


def cmd_sync(args, rt) -> int:
    results = _mail(args, rt).sync(args.account)
    out(args, results, SYNC_COLUMNS)
    return 1 if any(r.error for r in results) else 0


def cmd_emails(args, rt) -> int:
    page = _mail(args, rt).emails(args.account, args.search, args.offset, args.limit)
    return out(args, page.items, EMAIL_COLUMNS)


def register(groups, common) -> None:
    """Add ``erpq mail account add|list|test|disable|enable``, ``mail sync``, ``mail emails``
    and the ``erpq campaign`` group."""
    g = Group(groups, common, "mail", "email accounts, IMAP sync and synced emails")
    c = g.cmd("account", None, "email accounts: add | list | test | disable | enable")
    sub = c.add_subparsers(dest="account_cmd", metavar="ACTION", required=True)
    json_flag, _ = g.json_flag, g.paging

    a = sub.add_parser("add", help="add an account (passwords from --*-password-env or a prompt)",
                       parents=[common])
    a.set_defaults(handler=cmd_account_add, needs_runtime=True)
    a.add_argument("email", type=column_text(EmailAccount, "email"), help="the account's address")
    a.add_argument("--tenant", required=True, type=bounded_text(64), help="tenant slug or id")
    a.add_argument("--name", type=column_text(EmailAccount, "name"), help="display name (default: the address)")
    a.add_argument("--owner", type=id_int, help="owner user id")
    a.add_argument("--imap-host", required=True, type=column_text(EmailAccount, "imap_host"), help="IMAP server host")
    a.add_argument("--imap-port", type=port_int, help="IMAP port (default 993 with tls, else 143)")
    a.add_argument("--imap-security", choices=("none", "starttls", "tls"), default="tls", help="IMAP transport security")
    a.add_argument("--imap-username", type=column_text(EmailAccount, "username"), help="IMAP login (default: the address)")
    a.add_argument("--imap-password-env", metavar="VAR", help="environment variable holding the IMAP password")
    a.add_argument("--smtp-host", type=column_text(EmailAccount, "smtp_host"), help="SMTP server host (default: the IMAP host)")
    a.add_argument("--smtp-port", type=port_int, help="SMTP port (default 465 tls, 587 starttls, 25 none)")
    a.add_argument("--smtp-security", choices=("none", "starttls", "tls"), default="starttls",
                   help="SMTP transport security")
    a.add_argument("--smtp-username", type=column_text(EmailAccount, "smtp_username"), help="SMTP login (default: the IMAP login)")
    a.add_argument("--smtp-password-env", metavar="VAR", help="environment variable holding the SMTP password "
                   "(default: the IMAP password)")
    a.add_argument("--folder", dest="folders", action="append", metavar="NAME", type=bounded_text(255),
                   help="folder to sync (repeat; default INBOX)")
    a = sub.add_parser("list", help="accounts with last sync, messages, last error and back-off",
                       parents=[common, json_flag])
    a.set_defaults(handler=cmd_account_list, needs_runtime=True)
    a.add_argument("--tenant", type=bounded_text(64), help="tenant slug or id")
    a = sub.add_parser("test", help="log in to IMAP and SMTP and say what worked", parents=[common, json_flag])
    a.set_defaults(handler=cmd_account_test, needs_runtime=True)
    a.add_argument("id", type=id_int, help="account id")
    for name, handler, text in (("disable", cmd_account_disable, "stop syncing an account"),
                                ("enable", cmd_account_enable, "sync an account again (clears back-off)")):
        a = sub.add_parser(name, help=text, parents=[common])
        a.set_defaults(handler=handler, needs_runtime=True)
        a.add_argument("id", type=id_int, help="account id")

    c = g.cmd("sync", cmd_sync, "run crm:sync-email-accounts now, here", json=True)
    c.add_argument("--account", type=id_int, help="only this account (even if backed off)")
    c = g.cmd("emails", cmd_emails, "synced emails, newest first", json=True, paged=True)
    c.add_argument("--account", type=id_int, help="only this account")
    c.add_argument("--search", type=bounded_text(998), help="text in the subject, addresses or Message-ID")

    try:
        from .campaign_cli import register_campaign
    except ImportError:
        return
    register_campaign(groups, common)
