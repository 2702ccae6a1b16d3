"""Email accounts: create, list, enable/disable, test the IMAP and SMTP logins.

Passwords are Fernet-encrypted at rest (``erpq.mail.secrets``) and never leave
this module in clear except to the IMAP/SMTP login calls; every error text is
scrubbed of them.
"""

from __future__ import annotations

import datetime as dt
import re
import smtplib
import ssl
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..db import utcnow
from ..ops.base import text_search
from . import secrets
from .models import Email, EmailAccount, EmailFolderState

SECURITY = ("none", "starttls", "tls")
EMAIL_RE = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


class MailError(Exception):
    """A one-line error about an account or campaign (never a password)."""


def scrub(text: str, *secrets_: str) -> str:
    """``text`` on one line with any secret replaced."""
    line = " ".join(str(text).split())
    for secret in secrets_:
        if secret:
            line = line.replace(secret, "***")
    return line[:500]


def valid_address(address: str) -> bool:
    return bool(EMAIL_RE.match(address or ""))


def folders_of(acc: EmailAccount) -> list[str]:
    return list(acc.folders or [acc.folder or "INBOX"])


def add_account(s: Session, settings, tenant_id: int, email: str, *, name: str | None = None,
                owner_user_id: int | None = None, imap_host: str, imap_port: int | None = None,
                imap_security: str = "tls", imap_username: str | None = None, imap_password: str = "",
                smtp_host: str | None = None, smtp_port: int | None = None, smtp_security: str = "starttls",
                smtp_username: str | None = None, smtp_password: str | None = None,
                folders: list[str] | None = None) -> EmailAccount:
    if not valid_address(email):
        raise MailError(f"not an email address: {email!r}")
    for label, value in (("IMAP", imap_security), ("SMTP", smtp_security)):
        if value not in SECURITY:
            raise MailError(f"{label} security must be one of {', '.join(SECURITY)}, not {value!r}")
    if not imap_host:
        raise MailError("an IMAP host is needed")
    imap_port = imap_port or {"tls": 993}.get(imap_security, 143)
    smtp_port = smtp_port or {"tls": 465, "starttls": 587}.get(smtp_security, 25)
    for label, port in (("IMAP", imap_port), ("SMTP", smtp_port)):
        if not 0 < port < 65536:
            raise MailError(f"{label} port must be 1-65535, not {port}")
    folders = [f.strip() for f in (folders or ["INBOX"]) if f.strip()] or ["INBOX"]
    acc = EmailAccount(
        tenant_id=tenant_id, name=name or email, email=email, owner_user_id=owner_user_id,
        imap_host=imap_host, imap_port=imap_port, imap_security=imap_security, imap_ssl=imap_security == "tls",
        username=imap_username or email, password_encrypted=secrets.encrypt(settings, imap_password),
        smtp_host=smtp_host or imap_host, smtp_port=smtp_port, smtp_security=smtp_security,
        smtp_starttls=smtp_security == "starttls",
        smtp_username=smtp_username if smtp_username is not None else (imap_username or email),
        smtp_password_encrypted=secrets.encrypt(settings, smtp_password if smtp_password is not None
                                                else imap_password),
        folders=folders, folder=folders[0], is_active=True, consecutive_failures=0)
    s.add(acc)
    s.flush()
    return acc


def get_account(s: Session, account_id: int) -> EmailAccount:
    acc = s.get(EmailAccount, account_id)
    if acc is None:
        raise MailError(f"unknown email account {account_id}")
    return acc


def set_active(s: Session, account_id: int, active: bool) -> EmailAccount:
    acc = get_account(s, account_id)
    acc.is_active = active
    if active:
        acc.consecutive_failures = 0
        acc.backoff_until = None
    return acc


@dataclass
class AccountRow:
    account: EmailAccount
    messages: int
    folders: dict[str, dict]


def account_rows(s: Session, tenant_id: int | None = None, search: str | None = None,
                 offset: int = 0, limit: int | None = None) -> tuple[list[AccountRow], int]:
    """Accounts with their message counts and folder states (the one read the CLI and console use)."""
    q = sa.select(EmailAccount)
    if tenant_id is not None:
        q = q.where(EmailAccount.tenant_id == tenant_id)
    if search:
        q = q.where(text_search((EmailAccount.email, EmailAccount.name, EmailAccount.last_error), search))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    q = q.order_by(EmailAccount.id).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    accs = s.scalars(q).all()
    ids = [a.id for a in accs]
    counts = dict(s.execute(sa.select(Email.account_id, sa.func.count()).where(Email.account_id.in_(ids))
                            .group_by(Email.account_id)).all()) if ids else {}
    states: dict[int, dict] = {}
    if ids:
        for st in s.scalars(sa.select(EmailFolderState).where(EmailFolderState.account_id.in_(ids))):
            states.setdefault(st.account_id, {})[st.folder] = {"uidvalidity": st.uidvalidity,
                                                               "last_uid": st.last_uid}
    return [AccountRow(a, counts.get(a.id, 0), states.get(a.id, {})) for a in accs], total


# ---------------------------------------------------------------- connections


def passwords(settings, acc: EmailAccount) -> tuple[str, str]:
    what = f"email account {acc.id} ({acc.email})"
    return (secrets.decrypt(settings, acc.password_encrypted, f"{what} IMAP password"),
            secrets.decrypt(settings, acc.smtp_password_encrypted, f"{what} SMTP password"))


def imap_login(acc: EmailAccount, password: str, timeout: float):
    """A logged-in imap-tools mailbox (no folder selected)."""
    from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted

    cls = {"tls": MailBox, "starttls": MailBoxStartTls, "none": MailBoxUnencrypted}[acc.imap_security or "tls"]
    mb = cls(acc.imap_host, acc.imap_port, timeout=timeout)
    try:
        mb.login(acc.username or acc.email, password, initial_folder=None)
    except BaseException:
        try:
            mb.client.shutdown()
        except Exception:
            pass
        raise
    return mb


def smtp_connect(host: str, port: int, security: str, username: str | None, password: str,
                 timeout: float) -> smtplib.SMTP:
    if security == "tls":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = smtplib.SMTP(host, port, timeout=timeout)
        if security == "starttls":
            conn.starttls(context=ssl.create_default_context())
    if username and password:
        conn.login(username, password)
    return conn


def test_account(settings, acc: EmailAccount) -> list[tuple[str, bool, str]]:
    """Log in to IMAP and SMTP; (what, worked, detail) for each."""
    try:
        imap_pw, smtp_pw = passwords(settings, acc)
    except secrets.MailKeyError as exc:
        return [("key", False, str(exc))]
    results = []
    try:
        mb = imap_login(acc, imap_pw, settings.timeout_s)
        try:
            names = {f.name for f in mb.folder.list()}
            missing = [f for f in folders_of(acc) if f not in names]
        finally:
            mb.logout()
        detail = f"logged in to {acc.imap_host}:{acc.imap_port}" + (
            f"; folders missing: {', '.join(missing)}" if missing else "")
        results.append(("imap", not missing, detail))
    except Exception as exc:
        results.append(("imap", False, scrub(f"{acc.imap_host}:{acc.imap_port}: {type(exc).__name__}: {exc}",
                                             imap_pw, smtp_pw)))
    try:
        conn = smtp_connect(acc.smtp_host, acc.smtp_port, acc.smtp_security, acc.smtp_username, smtp_pw,
                            settings.timeout_s)
        try:
            code, _ = conn.noop()
        finally:
            conn.quit()
        results.append(("smtp", code == 250, f"connected to {acc.smtp_host}:{acc.smtp_port}"
                        + (" and logged in" if acc.smtp_username and smtp_pw else "")))
    except Exception as exc:
        results.append(("smtp", False, scrub(f"{acc.smtp_host}:{acc.smtp_port}: {type(exc).__name__}: {exc}",
                                             imap_pw, smtp_pw)))
    return results


def backoff_state(acc: EmailAccount, now: dt.datetime | None = None) -> str:
    now = now or utcnow()
    if acc.backoff_until and acc.backoff_until > now:
        return f"until {acc.backoff_until:%Y-%m-%d %H:%M} ({acc.consecutive_failures} failures)"
    if acc.consecutive_failures:
        return f"{acc.consecutive_failures} failures"
    return ""
