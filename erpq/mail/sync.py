"""``crm:sync-email-accounts``: fetch new messages of every account over IMAP.

Per account and folder: STATUS gives UIDVALIDITY and UIDNEXT. Unchanged
UIDVALIDITY and UIDNEXT-1 <= last UID synced: nothing to do (one round trip).
Otherwise one ``UID FETCH last+1:* (RFC822.SIZE)`` lists the new UIDs and their
sizes (UIDs <= last dropped client-side: ``n:*`` always returns the newest
message); they are fetched in bulk, read-only (EXAMINE: no \\Seen flag set), in
batches bounded by count and bytes; each batch's rows and the folder's new last
UID are committed together, so a crash or dropped connection never leaves a gap
and never duplicates. A changed UIDVALIDITY resynchronises the folder from UID 1,
matching existing rows by Message-ID (or a fingerprint when there is none).

Accounts sync in parallel (bounded by ``[mailing] sync_parallel``), each under
its own lock; one account's failure is recorded on it (``last_error``,
``consecutive_failures``, back-off after ``backoff_after_failures``) and the
others go on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from ..db import utcnow
from ..runtime import current, locks
from . import accounts, secrets
from .capability import CAPABILITY
from .models import Email, EmailAccount, EmailFolderState

log = logging.getLogger("erpq.mail.sync")

CONTACTS = sa.table("contacts", sa.column("id"), sa.column("tenant_id"), sa.column("email"))
LEADS = sa.table("leads", sa.column("id"), sa.column("tenant_id"), sa.column("email"))

_SIZE_RE = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)")


@dataclass
class SyncResult:
    account_id: int
    email: str
    new: int = 0
    skipped: str | None = None  # why nothing was tried (locked, backed off, inactive)
    error: str | None = None
    seconds: float = 0.0


def settings_of(rt):
    return rt.settings.section("mailing")


# ---------------------------------------------------------------- entry points


@CAPABILITY.periodic("crm:sync-email-accounts", cron="*/5 * * * *",
                     description="Fetch new messages of every active email account over IMAP")
def sync_email_accounts() -> None:
    rt = current()
    results = sync_accounts(rt)
    failed = [r for r in results if r.error]
    log.info("mail sync: %d accounts, %d new messages, %d failed", len(results),
             sum(r.new for r in results), len(failed))


@CAPABILITY.job("SyncEmailAccountJob")
def sync_email_account_job(account_id: int) -> None:
    """Sync one account now (ignores its back-off)."""
    result = sync_account(current(), account_id, force=True)
    if result.error:
        log.warning("mail sync of account %s failed: %s", account_id, result.error)


def due_accounts(rt, now: dt.datetime | None = None) -> list[int]:
    now = now or utcnow()
    with rt.read_session() as s:
        return list(s.scalars(sa.select(EmailAccount.id).where(
            EmailAccount.is_active.is_(True),
            sa.or_(EmailAccount.backoff_until.is_(None), EmailAccount.backoff_until <= now))
            .order_by(EmailAccount.id)))


def sync_accounts(rt, account_ids: list[int] | None = None, force: bool = False) -> list[SyncResult]:
    """Sync the given accounts (default: every active one not backed off), in parallel."""
    ids = account_ids if account_ids is not None else due_accounts(rt)
    if not ids:
        return []
    workers = min(settings_of(rt).sync_parallel, len(ids))
    if workers == 1:
        return [sync_account(rt, i, force=force) for i in ids]
    with ThreadPoolExecutor(workers, thread_name_prefix="mail-sync") as pool:
        return list(pool.map(lambda i: sync_account(rt, i, force=force), ids))


def sync_account(rt, account_id: int, force: bool = False) -> SyncResult:
    import time

    settings = settings_of(rt)
    started = time.perf_counter()
    with rt.read_session() as s:
        acc = s.get(EmailAccount, account_id)
        if acc is None:
            raise accounts.MailError(f"unknown email account {account_id}")
        s.expunge(acc)
    result = SyncResult(acc.id, acc.email)
    if not acc.is_active and not force:
        result.skipped = "disabled"
        return result
    if not force and acc.backoff_until and acc.backoff_until > utcnow():
        result.skipped = f"backed off until {acc.backoff_until:%H:%M:%S}"
        return result
    lock = f"mail:sync:{acc.id}"
    holder = f"{rt.runner_id}:{threading.get_ident()}"
    if not locks.acquire(rt.Session, lock, holder, max(600.0, settings.timeout_s * 10)):
        result.skipped = "another sync of this account is running"
        return result
    imap_pw = ""
    try:
        try:
            imap_pw, _ = accounts.passwords(settings, acc)
            mb = accounts.imap_login(acc, imap_pw, settings.timeout_s)
            try:
                for folder in accounts.folders_of(acc):
                    sync_folder(rt, settings, acc, mb, folder, result)
            finally:
                try:
                    mb.logout()
                except Exception:
                    pass
        except Exception as exc:
            msg = str(exc) if isinstance(exc, secrets.MailKeyError) else \
                f"IMAP {acc.imap_host}:{acc.imap_port}: {type(exc).__name__}: {exc}"
            result.error = accounts.scrub(msg, imap_pw)
        _record_outcome(rt, settings, acc.id, result.error)
    finally:
        locks.release(rt.Session, lock, holder)
        result.seconds = time.perf_counter() - started
    return result


def _record_outcome(rt, settings, account_id: int, error: str | None) -> None:
    now = utcnow()
    with rt.session() as s:
        acc = s.get(EmailAccount, account_id)
        if acc is None:
            return
        if error is None:
            acc.last_synced_at = now
            acc.last_error = None
            acc.consecutive_failures = 0
            acc.backoff_until = None
        else:
            acc.last_error = error
            acc.consecutive_failures = (acc.consecutive_failures or 0) + 1
            over = acc.consecutive_failures - settings.backoff_after_failures
            if over >= 0:
                delay = min(settings.backoff_s * 2 ** over, settings.backoff_max_s)
                acc.backoff_until = now + dt.timedelta(seconds=delay)


# ---------------------------------------------------------------- one folder


def sync_folder(rt, settings, acc: EmailAccount, mb, folder: str, result: SyncResult | None = None) -> int:
    status = mb.folder.status(folder, ["UIDVALIDITY", "UIDNEXT"])
    uidvalidity, uidnext = int(status["UIDVALIDITY"]), int(status["UIDNEXT"])
    with rt.session() as s:
        state = s.scalars(sa.select(EmailFolderState).where(EmailFolderState.account_id == acc.id,
                                                            EmailFolderState.folder == folder)).first()
        if state is None:
            state = EmailFolderState(account_id=acc.id, folder=folder, uidvalidity=None, last_uid=0)
            s.add(state)
        resync = state.uidvalidity is not None and state.uidvalidity != uidvalidity
        if resync or state.uidvalidity is None:
            state.uidvalidity, state.last_uid = uidvalidity, 0
        last = state.last_uid or 0
        if uidnext - 1 <= last:
            state.last_synced_at = utcnow()
            return 0
    # resync also when rows of an older UIDVALIDITY exist (a crash mid-resync)
    with rt.read_session() as s:
        resync = resync or bool(s.scalar(sa.select(Email.id).where(
            Email.account_id == acc.id, Email.folder == folder, Email.uidvalidity != uidvalidity).limit(1)))
    mb.folder.set(folder, readonly=True)  # EXAMINE: nothing marked seen
    typ, data = mb.client.uid("FETCH", f"{last + 1}:*", "(UID RFC822.SIZE)")
    sizes: dict[int, int] = {}
    for item in data or []:
        line = item[0] if isinstance(item, tuple) else item
        if not isinstance(line, bytes):
            continue
        uid = size = None
        for m in _SIZE_RE.finditer(line):
            if m.group(1):
                uid = int(m.group(1))
            else:
                size = int(m.group(2))
        if uid is not None and uid > last:
            sizes[uid] = size or 0
    total = 0
    for batch in _batches(sorted(sizes), sizes, settings.fetch_batch, settings.fetch_batch_bytes):
        stored = _fetch_and_store(rt, acc, mb, folder, uidvalidity, batch, resync)
        total += stored
        if result is not None:  # counted per committed batch: right even if a later one fails
            result.new += stored
    return total


def _batches(uids: list[int], sizes: dict[int, int], count: int, max_bytes: int):
    batch: list[int] = []
    used = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= count or used + size > max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(uid)
        used += size
    if batch:
        yield batch


def _clean(text: str | None, limit: int | None = None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "")
    return text[:limit] if limit else text


def _header(msg, name: str) -> str | None:
    value = msg.headers.get(name)
    if not value:
        return None
    return " ".join(value[0].split()) or None


def _row(acc: EmailAccount, folder: str, uidvalidity: int, msg) -> dict:
    date = msg.date
    if date is not None and date.year <= 1900:
        date = None
    elif date is not None and date.tzinfo is None:
        date = date.replace(tzinfo=dt.UTC)
    message_id = _header(msg, "message-id")
    to = ", ".join(msg.to)
    fingerprint = None
    if not message_id:
        fingerprint = hashlib.sha256("|".join(
            [msg.from_, to, msg.date_str or "", msg.subject or "", str(msg.size_rfc822)]).encode()).hexdigest()
    return dict(
        tenant_id=acc.tenant_id, account_id=acc.id, folder=folder, uidvalidity=uidvalidity, uid=int(msg.uid),
        message_id=_clean(message_id, 255), from_address=_clean(msg.from_, 255), to_addresses=_clean(to),
        cc_addresses=_clean(", ".join(msg.cc)) or None, subject=_clean(msg.subject, 998),
        body_text=_clean(msg.text), body_html=_clean(msg.html) or None,
        attachments=[{"name": a.filename, "size": a.size, "type": a.content_type} for a in msg.attachments],
        in_reply_to=_clean(_header(msg, "in-reply-to"), 998), fingerprint=fingerprint, sent_at=date,
        received_at=utcnow())


def _fetch_and_store(rt, acc: EmailAccount, mb, folder: str, uidvalidity: int, uids: list[int],
                     resync: bool) -> int:
    from imap_tools import AND

    rows = [_row(acc, folder, uidvalidity, m)
            for m in mb.fetch(AND(uid=[str(u) for u in uids]), mark_seen=False, bulk=True)]
    rows = [r for r in rows if r["uid"] in set(uids)]
    with rt.session() as s:
        _link(s, acc.tenant_id, rows)
        if resync and rows:
            rows = _rematch(s, acc.id, folder, rows)
        if rows:
            s.execute(sa.insert(Email), rows)
        s.execute(sa.update(EmailFolderState).where(EmailFolderState.account_id == acc.id,
                                                    EmailFolderState.folder == folder)
                  .values(last_uid=max(uids), uidvalidity=uidvalidity, last_synced_at=utcnow()))
    return len(rows)


def _rematch(s, account_id: int, folder: str, rows: list[dict]) -> list[dict]:
    """After a UIDVALIDITY change: move known messages to their new UID; return the new ones."""
    ids = {r["message_id"] for r in rows if r["message_id"]}
    prints = {r["fingerprint"] for r in rows if r["fingerprint"]}
    base = sa.select(Email.id, Email.message_id, Email.fingerprint).where(
        Email.account_id == account_id, Email.folder == folder)
    known: dict[tuple[str, str], int] = {}
    if ids:
        for eid, mid, _fp in s.execute(base.where(Email.message_id.in_(ids))):
            known.setdefault(("m", mid), eid)
    if prints:
        for eid, _mid, fp in s.execute(base.where(Email.fingerprint.in_(prints))):
            known.setdefault(("f", fp), eid)
    fresh = []
    for r in rows:
        key = ("m", r["message_id"]) if r["message_id"] else ("f", r["fingerprint"])
        eid = known.pop(key, None)
        if eid is None:
            fresh.append(r)
        else:
            s.execute(sa.update(Email).where(Email.id == eid).values(uidvalidity=r["uidvalidity"], uid=r["uid"]))
    return fresh


def _link(s, tenant_id: int, rows: list[dict]) -> None:
    """Set contact_id / lead_id from the sender (else the first recipient) known in the tenant."""
    from email.utils import getaddresses

    wanted: dict[int, list[str]] = {}
    for i, r in enumerate(rows):
        addrs = [a.lower() for _, a in getaddresses([r["from_address"] or "", r["to_addresses"] or ""]) if a]
        wanted[i] = addrs
    every = {a for addrs in wanted.values() for a in addrs}
    if not every:
        return
    found = {}
    for table, key in ((CONTACTS, "contact_id"), (LEADS, "lead_id")):
        try:
            pairs = s.execute(sa.select(sa.func.lower(table.c.email), table.c.id).where(
                table.c.tenant_id == tenant_id, sa.func.lower(table.c.email).in_(every))).all()
        except sa.exc.DBAPIError:  # the table is not there (a deployment without CRM)
            s.rollback()
            pairs = []
        found[key] = dict(pairs)
    for i, r in enumerate(rows):
        r["contact_id"] = next((found["contact_id"][a] for a in wanted[i] if a in found["contact_id"]), None)
        r["lead_id"] = next((found["lead_id"][a] for a in wanted[i] if a in found["lead_id"]), None)
