"""Email campaigns: recipients as rows, ``SendEmailCampaignJob`` sending over one
reused SMTP connection per batch at the configured rate.

Exactly-once bookkeeping: a recipient stays ``pending`` while its envelope
(MAIL FROM, RCPT TO) is sent; once the server accepted the envelope and right
before DATA, one commit marks it ``sending`` together with the previous
recipient's outcome (``MailConnection.send(before_data=...)``). A failure
before DATA is known not delivered: the recipient stays pending (4xx: retried
with the back-off ``[mailing] retry_delays_s``; 5xx: failed with the server's
text). A connection lost after DATA without an answer marks it ``uncertain``.
A runner that dies leaves at most one recipient in ``sending`` -- the one whose
DATA went out and whose outcome was not yet written (at the latest, with the
next recipient's DATA or at the end of the batch) -- which the next run marks
``uncertain`` (listed, never silently resent).

An SMTP server that cannot be reached (connection refused, dropped before any
answer) is the campaign's problem, not the recipient's: nobody's attempt is
spent; the campaign records the error in ``error``, counts
``server_failures`` and retries at ``retry_at`` (``[mailing]
server_retry_s``). Pause and cancel are seen between messages.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import mailer
from ..db import utcnow
from ..models import JobBatch, Runner
from ..runtime import current, locks
from . import accounts
from .capability import CAPABILITY
from .models import EmailAccount, EmailCampaign
from .models import EmailCampaignRecipient as R

log = logging.getLogger("erpq.mail.campaigns")
CAMPAIGN_STATUSES = ("draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed")
RECIPIENT_STATUSES = ("pending", "sending", "sent", "failed", "uncertain")
CONTACTS = sa.table("contacts", sa.column("id"), sa.column("tenant_id"), sa.column("email"),
                    sa.column("first_name"), sa.column("last_name"))
LEADS = sa.table("leads", sa.column("id"), sa.column("tenant_id"), sa.column("email"), sa.column("name"))


def _settings(rt):
    return rt.settings.section("mailing")


def get_campaign(s: Session, campaign_id: int) -> EmailCampaign:
    c = s.get(EmailCampaign, campaign_id)
    if c is None:
        raise accounts.MailError(f"unknown campaign {campaign_id}")
    return c


def check_templates(subject: str, body: str) -> None:
    for what, text in (("subject", subject), ("body", body)):
        try:
            mailer.check_template(text)
        except mailer.TemplateError as exc:
            raise accounts.MailError(f"{what} template: {exc}") from None


def create_campaign(s: Session, tenant_id: int, account_id: int, name: str, subject: str, body: str,
                    rate_per_minute: int | None = None) -> EmailCampaign:
    acc = accounts.get_account(s, account_id)
    if acc.tenant_id != tenant_id:
        raise accounts.MailError(f"email account {account_id} belongs to another tenant")
    check_templates(subject, body)
    c = EmailCampaign(tenant_id=tenant_id, account_id=account_id, name=name, subject=subject,
                      body_template=body, status="draft", rate_per_minute=rate_per_minute, total_count=0,
                      sent_count=0, failed_count=0, uncertain_count=0)
    s.add(c)
    s.flush()
    return c


def _add_rows(s: Session, c: EmailCampaign, rows: list[tuple[str, str, str | None, dict]]):
    """rows: (where, address, name, fields). Returns (added, duplicates, invalid [(where, reason)])."""
    if c.status not in ("draft", "scheduled", "paused"):
        raise accounts.MailError(f"campaign {c.id} is {c.status}: recipients can only be added before sending")
    known = {e.lower() for e in s.scalars(sa.select(R.email).where(R.campaign_id == c.id))}
    added, dups, invalid, new = 0, 0, [], []
    for where, address, name, fields in rows:
        address = (address or "").strip()
        if not accounts.valid_address(address):
            invalid.append((where, f"not an email address: {address!r}"))
            continue
        if address.lower() in known:
            dups += 1
            continue
        known.add(address.lower())
        new.append(dict(tenant_id=c.tenant_id, campaign_id=c.id, email=address, name=name, data=fields,
                        status="pending", attempts=0))
        added += 1
    if new:
        s.execute(sa.insert(R), new)
    c.total_count = (c.total_count or 0) + added
    return added, dups, invalid


def add_recipients_csv(s: Session, campaign_id: int, path: str | Path):
    c = get_campaign(s, campaign_id)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = {k.lower(): k for k in reader.fieldnames or []}
            if "email" not in cols:
                raise accounts.MailError(f"{path}: no 'email' column (columns: {', '.join(reader.fieldnames or [])})")
            rows = [(f"line {reader.line_num}", r.get(cols["email"]), r.get(cols["name"]) if "name" in cols else None,
                     {k: v for k, v in r.items() if k}) for r in reader]
    except OSError as exc:
        raise accounts.MailError(f"{path}: {exc.strerror}") from None
    return _add_rows(s, c, rows)


def add_recipients_from(s: Session, campaign_id: int, source: str):
    c = get_campaign(s, campaign_id)
    if source == "contacts":
        q = sa.select(CONTACTS.c.id, CONTACTS.c.email, CONTACTS.c.first_name, CONTACTS.c.last_name).where(
            CONTACTS.c.tenant_id == c.tenant_id).order_by(CONTACTS.c.id)
        rows = [(f"contact {i}", e, " ".join(x for x in (f, la) if x) or None,
                 {"first_name": f, "last_name": la, "email": e}) for i, e, f, la in s.execute(q)]
    elif source == "leads":
        q = sa.select(LEADS.c.id, LEADS.c.email, LEADS.c.name).where(LEADS.c.tenant_id == c.tenant_id).order_by(LEADS.c.id)
        rows = [(f"lead {i}", e, n, {"name": n, "email": e}) for i, e, n in s.execute(q)]
    else:
        raise accounts.MailError(f"unknown recipient source {source!r} (contacts or leads)")
    return _add_rows(s, c, rows)


def counts(s: Session, campaign_id: int) -> dict[str, int]:
    got = dict(s.execute(sa.select(R.status, sa.func.count()).where(R.campaign_id == campaign_id)
                         .group_by(R.status)).all())
    return {k: got.get(k, 0) for k in RECIPIENT_STATUSES}


# ---------------------------------------------------------------- control


def start(rt, campaign_id: int, at: dt.datetime | None = None) -> EmailCampaign:
    with rt.session() as s:
        enqueue, _undo = prepare_start(s, rt, campaign_id, at)
    enqueue()
    with rt.read_session() as s:
        return get_campaign(s, campaign_id)


def prepare_start(s: Session, rt, campaign_id: int, at: dt.datetime | None = None):
    """Mark a campaign sending (or scheduled) in ``s``; returns (enqueue, undo): enqueue
    its job once ``s`` committed, or undo the change when the job cannot be enqueued."""
    c = get_campaign(s, campaign_id)
    if c.status not in ("draft", "scheduled", "paused"):
        raise accounts.MailError(f"campaign {campaign_id} is {c.status}: cannot be sent")
    if not c.total_count:
        raise accounts.MailError(f"campaign {campaign_id} has no recipients")
    was = {"status": c.status, "scheduled_at": c.scheduled_at, "started_at": c.started_at,
           "batch_id": c.batch_id}
    new_batch = None
    if c.batch_id is None:
        c.batch_id = new_batch = str(uuid.uuid4())
        s.add(JobBatch(id=c.batch_id, name=f"campaign {c.id} {c.name}", kind="campaign", tenant_id=c.tenant_id,
                       total=c.total_count, pending=c.total_count, failed=0, failed_job_ids=[]))
    if at is not None and at > utcnow():
        c.status, c.scheduled_at = "scheduled", at
    else:
        c.status, c.started_at = "sending", c.started_at or utcnow()
    tenant_id, status = c.tenant_id, c.status
    s.flush()

    def enqueue() -> None:
        if status == "scheduled":
            rt.enqueue("SendEmailCampaignJob", campaign_id, eta=at, tenant_id=tenant_id)
        else:
            rt.enqueue("SendEmailCampaignJob", campaign_id, tenant_id=tenant_id)

    def undo() -> None:
        with rt.session() as s2:
            s2.execute(sa.update(EmailCampaign).where(EmailCampaign.id == campaign_id,
                                                      EmailCampaign.status == status).values(**was))
            if new_batch:
                s2.execute(sa.delete(JobBatch).where(JobBatch.id == new_batch))

    return enqueue, undo


def set_status(rt, campaign_id: int, action: str) -> None:
    with rt.session() as s:
        steps = prepare_status(s, rt, campaign_id, action)
    if steps:
        steps[0]()


def prepare_status(s: Session, rt, campaign_id: int, action: str):
    """Pause, resume or cancel a campaign in ``s``; for a resume returns (enqueue, undo)
    to run once ``s`` committed, else None."""
    allowed = {"pause": (("sending", "scheduled"), "paused"), "cancel": (("draft", "scheduled", "sending", "paused"),
                                                                          "cancelled")}
    c = get_campaign(s, campaign_id)
    if action == "resume":
        if c.status != "paused":
            raise accounts.MailError(f"campaign {campaign_id} is {c.status}, not paused")
        c.status = "sending"
        tenant_id = c.tenant_id
        s.flush()

        def undo() -> None:
            with rt.session() as s2:
                s2.execute(sa.update(EmailCampaign).where(EmailCampaign.id == campaign_id,
                                                          EmailCampaign.status == "sending").values(status="paused"))

        return (lambda: rt.enqueue("SendEmailCampaignJob", campaign_id, tenant_id=tenant_id)), undo
    before, after = allowed[action]
    if c.status not in before:
        raise accounts.MailError(f"campaign {campaign_id} is {c.status}: cannot {action}")
    c.status = after
    if after == "cancelled":
        c.finished_at = utcnow()
        if c.batch_id:
            s.execute(sa.update(JobBatch).where(JobBatch.id == c.batch_id).values(finished_at=utcnow()))
    return None


# ---------------------------------------------------------------- the runner


@CAPABILITY.job("SendEmailCampaignJob")
def send_email_campaign_job(campaign_id: int) -> None:
    """Send a campaign's pending recipients (resumable; never sends anybody twice)."""
    run_campaign(current(), campaign_id)


@CAPABILITY.periodic("mail:start-campaigns", cron="* * * * *",
                     description="Start scheduled campaigns that are due; resume campaigns whose runner died")
def start_campaigns() -> None:
    rt = current()
    now = utcnow()
    with rt.read_session() as s:
        due = s.execute(sa.select(EmailCampaign.id, EmailCampaign.tenant_id).where(sa.or_(
            sa.and_(EmailCampaign.status == "scheduled", EmailCampaign.scheduled_at <= now),
            sa.and_(EmailCampaign.status == "sending",
                    sa.or_(EmailCampaign.retry_at.is_(None), EmailCampaign.retry_at <= now))))).all()
    for cid, tid in due:
        lock = locks.holder_of(rt.Session, f"mail:campaign:{cid}")
        if lock is None or _holder_dead(rt, lock.holder):
            rt.enqueue("SendEmailCampaignJob", cid, tenant_id=tid)


def _holder_dead(rt, holder: str) -> bool:
    """The campaign lock's holder is ``<runner id>:<thread>``: is that runner stopped or silent?"""
    runner_id = holder.rpartition(":")[0]
    with rt.read_session() as s:
        row = s.get(Runner, runner_id)
    if row is None:  # not a registered runner (a test, a one-off process): only its lease expiring frees it
        return False
    if row.stopped_at is not None:
        return True
    silent = (utcnow() - row.heartbeat_at).total_seconds()
    return silent > rt.settings.runner.dead_after_s


def _take_lock(rt, lock: str, holder: str, lease: float) -> bool:
    if locks.acquire(rt.Session, lock, holder, lease):
        return True
    current_lock = locks.holder_of(rt.Session, lock)
    if current_lock is not None and current_lock.holder != holder and _holder_dead(rt, current_lock.holder):
        log.warning("campaign lock %s: taking over from dead runner %s", lock, current_lock.holder)
        locks.release(rt.Session, lock, current_lock.holder)
        return locks.acquire(rt.Session, lock, holder, lease)
    return False


def run_campaign(rt, campaign_id: int, stop_after: int | None = None) -> str:
    """Send until done, paused, cancelled or waiting for retries; returns why it stopped."""
    settings = _settings(rt)
    lock, holder = f"mail:campaign:{campaign_id}", f"{rt.runner_id}:{threading.get_ident()}"
    lease = 120.0
    if not _take_lock(rt, lock, holder, lease):
        return "already running"
    try:
        with rt.session() as s:
            c = get_campaign(s, campaign_id)
            if c.status == "scheduled" and c.scheduled_at and c.scheduled_at <= utcnow():
                c.status, c.started_at = "sending", c.started_at or utcnow()
            if c.status != "sending":
                return c.status
            s.execute(sa.update(R).where(R.campaign_id == campaign_id, R.status == "sending").values(
                status="uncertain", error="the runner stopped between handing this message to the server "
                                          "and recording its answer: check before resending"))
            acc = s.get(EmailAccount, c.account_id) if c.account_id else None
            if acc is None:
                c.status, c.error = "failed", "the sending account was deleted"
                return "failed"
            s.expunge(acc)
            subject_t, body_t, rate = c.subject, c.body_template, c.rate_per_minute or settings.rate_per_minute
        _, smtp_pw = accounts.passwords(settings, acc)
        m = mailer.Mailer(acc.smtp_host, acc.smtp_port, acc.smtp_security, acc.smtp_username or "", smtp_pw,
                          settings.timeout_s, from_address=acc.email)
        domain = acc.email.rpartition("@")[2] or "erpq.localhost"
        interval = 60.0 / rate if rate else 0.0
        sent_here = 0
        next_slot = time.monotonic()
        last_check = last_renew = time.monotonic()
        server_ok = False
        while True:
            now = utcnow()
            with rt.read_session() as s:
                chunk = s.execute(sa.select(R.id, R.email, R.name, R.data, R.attempts).where(
                    R.campaign_id == campaign_id, R.status == "pending",
                    sa.or_(R.next_attempt_at.is_(None), R.next_attempt_at <= now)).order_by(R.id)
                    .limit(settings.smtp_batch)).all()
            if not chunk:
                return _finish_or_wait(rt, campaign_id)
            done: list[dict] = []  # outcomes not yet written
            try:
                with m.connect() as conn, rt.engine.connect() as book:
                    if not server_ok:
                        server_ok = True
                        _server_ok(rt, campaign_id)
                    for rid, address, name, data, attempts in chunk:
                        if time.monotonic() - last_check > 0.5:
                            last_check = time.monotonic()
                            with rt.read_session() as s:
                                status = s.scalar(sa.select(EmailCampaign.status)
                                                  .where(EmailCampaign.id == campaign_id))
                            if status != "sending":
                                _write(rt, done, None, book)
                                _progress(rt, campaign_id)
                                return status
                        if time.monotonic() - last_renew > lease / 4:
                            last_renew = time.monotonic()
                            locks.renew(rt.Session, holder, lease)
                        if stop_after is not None and sent_here >= stop_after:
                            _write(rt, done, None, book)
                            return "stopped"
                        # previous outcomes + this one "sending", one commit, right before DATA
                        outcome = _send_one(m, conn, settings, campaign_id, domain, subject_t, body_t,
                                            rid, address, name, data or {}, attempts,
                                            before_data=lambda rid=rid, d=done, b=book: _write(rt, d, rid, b))
                        done.append(outcome)
                        sent_here += 1
                        if interval:
                            next_slot += interval
                            delay = next_slot - time.monotonic()
                            if delay > 0:
                                time.sleep(delay)
                            else:
                                next_slot = time.monotonic()
            except _ServerDown as exc:
                _write(rt, done, None)
                return _server_down(rt, settings, campaign_id, exc.error)
            except mailer.MailError as exc:  # connecting/logging in failed
                _write(rt, done, None)
                return _server_down(rt, settings, campaign_id, exc)
            _write(rt, done, None)
            _progress(rt, campaign_id)
    finally:
        locks.release(rt.Session, lock, holder)


class _ServerDown(Exception):
    """The server went away without answering for this recipient (before DATA)."""

    def __init__(self, error: mailer.MailError) -> None:
        super().__init__(str(error))
        self.error = error


def _server_ok(rt, campaign_id: int) -> None:
    with rt.session() as s:
        s.execute(sa.update(EmailCampaign).where(EmailCampaign.id == campaign_id,
                                                 EmailCampaign.server_failures > 0)
                  .values(server_failures=0, retry_at=None, error=None))


def _server_down(rt, settings, campaign_id: int, exc: mailer.MailError) -> str:
    delays = settings.server_retry_s or [60]
    with rt.session() as s:
        c = get_campaign(s, campaign_id)
        c.server_failures = n = (c.server_failures or 0) + 1
        c.retry_at = at = utcnow() + dt.timedelta(seconds=delays[min(n, len(delays)) - 1])
        c.error = f"{exc} (failure {n} in a row; next try at {at:%Y-%m-%d %H:%M:%S} UTC)"
        tenant_id = c.tenant_id
    _progress(rt, campaign_id)
    log.warning("campaign %s: SMTP server unavailable (%s); retrying at %s", campaign_id, exc, at)
    rt.enqueue("SendEmailCampaignJob", campaign_id, eta=at, tenant_id=tenant_id)
    return "waiting for the server"


def _send_one(m, conn, settings, campaign_id, domain, subject_t, body_t, rid, address, name, data, attempts,
              before_data=None):
    ctx = {**data, "email": address, "name": name or data.get("name") or ""}
    try:
        subject = mailer.render(subject_t, ctx)
        body = mailer.render(body_t, ctx)
    except mailer.TemplateError as exc:
        return dict(id=rid, status="failed", error=f"template: {exc}")
    token = mailer.message_id("unsub", campaign_id, address, domain)[1:-1].split("@")[0]
    unsub = [f"<mailto:unsubscribe@{domain}?subject=unsubscribe%20{campaign_id}>"]
    if settings.unsubscribe_url:
        unsub.insert(0, "<" + settings.unsubscribe_url.format(campaign=campaign_id, email=address, token=token) + ">")
    msg = mailer.build_message(m.from_address, address, subject, body,
                               message_id=mailer.message_id("campaign", campaign_id, address, domain),
                               headers={"List-Unsubscribe": ", ".join(unsub),
                                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    try:
        refused = conn.send(msg, to_addrs=[address], before_data=before_data)
        if refused:
            code, text = refused[address]
            raise (mailer.TransientMailError if 400 <= code < 500 else mailer.MailError)(
                f"{code} {text}", smtp_code=code, smtp_text=text)
    except mailer.MailError as exc:
        if exc.uncertain:
            return dict(id=rid, status="uncertain", attempts=attempts + 1,
                        error=f"the connection was lost after the message data was sent, before the "
                              f"server answered ({exc}): check before resending")
        if exc.transient and exc.smtp_code is None and not exc.refused:
            raise _ServerDown(exc) from None  # no answer at all: not this recipient's fault
        return _failed_or_retry(settings, rid, attempts, exc)
    return dict(id=rid, status="sent", attempts=attempts + 1, sent_at=utcnow(), error=None)


def _failed_or_retry(settings, rid: int, attempts: int, exc: mailer.MailError) -> dict:
    """4xx: back to pending with a back-off while retries remain; 5xx (or retries spent): failed."""
    delays = settings.retry_delays_s
    if exc.transient and attempts < len(delays):
        return dict(id=rid, status="pending", attempts=attempts + 1, error=_reply(exc),
                    next_attempt_at=utcnow() + dt.timedelta(seconds=delays[attempts]))
    return dict(id=rid, status="failed", attempts=attempts + 1, error=_reply(exc))


def _reply(exc: mailer.MailError) -> str:
    if exc.refused:
        code, text = next(iter(exc.refused.values()))
        return f"{code} {text}"
    return f"{exc.smtp_code} {exc.smtp_text}" if exc.smtp_code else str(exc)


def _write(rt, done: list[dict], sending_id: int | None, conn: sa.Connection | None = None) -> None:
    """Record the outcomes in ``done`` (then empty it) and mark ``sending_id`` sending, in one commit.

    This runs once per message: Core statements (the ORM session's bookkeeping
    cost more than the statements), on the batch's connection ``conn`` when
    given (no pool checkout and ping per message), and the usual case -- one
    outcome plus the next recipient -- as a single UPDATE (one round trip).
    """
    if not done and sending_id is None:
        return
    if conn is None:
        with rt.engine.connect() as own:
            return _write(rt, done, sending_id, own)
    t = R.__table__
    with conn.begin():
        if len(done) == 1 and sending_id is not None:
            values = dict(done[0])
            rid = values.pop("id")
            this = t.c.id == rid
            sets = {t.c[k]: sa.case((this, sa.literal(v, t.c[k].type)), else_=t.c[k])
                    for k, v in values.items() if k != "status"}
            sets[t.c.status] = sa.case((this, sa.literal(values["status"], t.c.status.type)), else_="sending")
            conn.execute(t.update().where(t.c.id.in_((rid, sending_id))).values(sets))
        else:
            for outcome in done:
                values = dict(outcome)
                rid = values.pop("id")
                conn.execute(t.update().where(t.c.id == rid).values(**values))
            if sending_id is not None:
                conn.execute(t.update().where(t.c.id == sending_id).values(status="sending"))
    done.clear()


def _progress(rt, campaign_id: int) -> None:
    with rt.session() as s:
        c = get_campaign(s, campaign_id)
        n = counts(s, campaign_id)
        c.sent_count, c.failed_count, c.uncertain_count = n["sent"], n["failed"], n["uncertain"]
        if c.batch_id:
            s.execute(sa.update(JobBatch).where(JobBatch.id == c.batch_id).values(
                total=c.total_count, pending=n["pending"] + n["sending"], failed=n["failed"] + n["uncertain"]))


def _finish_or_wait(rt, campaign_id: int) -> str:
    _progress(rt, campaign_id)
    with rt.session() as s:
        c = get_campaign(s, campaign_id)
        nxt = s.scalar(sa.select(sa.func.min(R.next_attempt_at)).where(R.campaign_id == campaign_id,
                                                                        R.status == "pending"))
        if nxt is not None:
            tenant_id = c.tenant_id
        else:
            c.status, c.finished_at = "sent", utcnow()
            if c.batch_id:
                s.execute(sa.update(JobBatch).where(JobBatch.id == c.batch_id).values(finished_at=utcnow()))
            return "sent"
    rt.enqueue("SendEmailCampaignJob", campaign_id, eta=nxt, tenant_id=tenant_id)
    return "waiting for retries"
