"""Ops section ``mail``: email accounts and their sync, synced emails, campaigns.

Records never carry a password. Actions are audited with their equivalent
``erpq`` command (no password in it either: ``account add`` reads passwords
from the environment or a prompt).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass

import sqlalchemy as sa

from ..models import Tenant
from ..ops import Conflict, Invalid, NotFound, OpsSection, Page, audited
from ..ops.base import _Record, text_search


@dataclass
class AccountInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    name: str
    email: str
    owner_user_id: int | None
    imap: str
    smtp: str
    folders: list[str]
    is_active: bool
    last_synced_at: dt.datetime | None
    messages: int
    last_error: str | None
    consecutive_failures: int
    backoff_until: dt.datetime | None
    backoff: str
    folder_states: dict


@dataclass
class EmailInfo(_Record):
    id: int
    account_id: int
    folder: str
    uid: int
    message_id: str | None
    from_address: str | None
    to_addresses: str | None
    cc_addresses: str | None
    subject: str | None
    sent_at: dt.datetime | None
    in_reply_to: str | None
    attachments: list
    contact_id: int | None
    lead_id: int | None


@dataclass
class SyncInfo(_Record):
    account_id: int
    email: str
    new: int
    skipped: str | None
    error: str | None
    seconds: float


@dataclass
class CheckInfo(_Record):
    check: str
    ok: bool
    detail: str


def _error(exc: Exception):
    text = str(exc)
    return NotFound(text) if text.startswith("unknown") else Invalid(text)


class _AccountOps(OpsSection):
    """``ops.mail``: accounts, sync, emails, campaigns."""

    @property
    def settings(self):
        return self.rt.settings.section("mailing")

    # ------------------------------------------------------------ accounts
    def accounts(self, tenant: str | int | None = None) -> list[AccountInfo]:
        return self.accounts_page(0, None, None, tenant=tenant).items

    def accounts_page(self, offset: int = 0, limit: int | None = 50, search: str | None = None,
                      tenant: str | int | None = None) -> Page:
        from . import accounts

        tid = self.ops.tenant_id(tenant) if tenant is not None else None
        with self._read() as s:
            rows, total = accounts.account_rows(s, tid, search, offset, limit)
            slugs = dict(s.execute(sa.select(Tenant.id, Tenant.slug)).all())
            items = [_account_info(r, slugs.get(r.account.tenant_id, "?")) for r in rows]
        return Page(items, total, offset, limit or total)

    def account(self, account_id: int) -> AccountInfo:
        for a in self.accounts_page(0, None, None).items:
            if a.id == account_id:
                return a
        raise NotFound(f"unknown email account {account_id}")

    @audited
    def add_account(self, tenant: str | int, email: str, *, imap_host: str, imap_password: str,
                    imap_port: int | None = None, imap_security: str = "tls", imap_username: str | None = None,
                    smtp_host: str | None = None, smtp_port: int | None = None, smtp_security: str = "starttls",
                    smtp_username: str | None = None, smtp_password: str | None = None,
                    folders: list[str] | None = None, name: str | None = None,
                    owner_user_id: int | None = None) -> AccountInfo:
        from . import accounts, secrets

        tid = self.ops.tenant_id(tenant)
        cmd = [f"erpq mail account add {shlex.quote(email)} --tenant {shlex.quote(str(tenant))}",
               f"--imap-host {shlex.quote(imap_host)}", f"--imap-security {imap_security}"]
        cmd += [f"--imap-port {imap_port}"] if imap_port else []
        cmd += [f"--smtp-host {shlex.quote(smtp_host)}"] if smtp_host else []
        cmd += [f"--smtp-port {smtp_port}"] if smtp_port else []
        cmd += [f"--smtp-security {smtp_security}"]
        cmd += [f"--folder {shlex.quote(f)}" for f in folders or []]
        self._act("mail.account.add", email, " ".join(cmd))
        try:
            with self._tx() as s:
                acc = accounts.add_account(
                    s, self.settings, tid, email, name=name, owner_user_id=owner_user_id, imap_host=imap_host,
                    imap_port=imap_port, imap_security=imap_security, imap_username=imap_username,
                    imap_password=imap_password, smtp_host=smtp_host, smtp_port=smtp_port,
                    smtp_security=smtp_security, smtp_username=smtp_username, smtp_password=smtp_password,
                    folders=folders)
                account_id = acc.id
        except (accounts.MailError, secrets.MailKeyError) as exc:
            raise Invalid(str(exc)) from None
        return self.account(account_id)

    def _set_active(self, account_id: int, active: bool) -> AccountInfo:
        from . import accounts

        verb = "enable" if active else "disable"
        self._act(f"mail.account.{verb}", str(account_id), f"erpq mail account {verb} {account_id}")
        try:
            with self._tx() as s:
                accounts.set_active(s, account_id, active)
        except accounts.MailError as exc:
            raise _error(exc) from None
        return self.account(account_id)

    @audited
    def disable_account(self, account_id: int) -> AccountInfo:
        return self._set_active(account_id, False)

    @audited
    def enable_account(self, account_id: int) -> AccountInfo:
        """Sync the account again (its failure count and back-off are cleared)."""
        return self._set_active(account_id, True)

    def test_account(self, account_id: int) -> list[CheckInfo]:
        """Log in to IMAP and SMTP; what worked and what did not."""
        from . import accounts

        with self.rt.read_session() as s:
            try:
                acc = accounts.get_account(s, account_id)
            except accounts.MailError as exc:
                raise _error(exc) from None
            s.expunge(acc)
        return [CheckInfo(*r) for r in accounts.test_account(self.settings, acc)]

    # ------------------------------------------------------------ sync
    @audited
    def sync(self, account_id: int | None = None) -> list[SyncInfo]:
        """Sync now, here: one account (even if backed off) or every due account."""
        from . import sync

        if account_id:
            self.account(account_id)
        self._act("mail.sync", str(account_id) if account_id else None,
                  "erpq mail sync" + (f" --account {account_id}" if account_id else ""))
        results: list = []

        def run() -> None:  # IMAP is no transaction: the sync runs once the audit row committed
            try:
                results.extend(sync.sync_accounts(self.rt, [account_id] if account_id else None,
                                                  force=bool(account_id)))
            except Exception as exc:
                raise _error(exc) from None

        self._after_commit(run, keep_audit=True)  # each account's sync records its own outcome
        return self._then(lambda: [SyncInfo(r.account_id, r.email, r.new, r.skipped, r.error, round(r.seconds, 4))
                                   for r in results])

    @audited
    def sync_account(self, account_id: int) -> str:
        """Queue a sync of one account now (the console's action); returns the job id."""
        self.account(account_id)
        import uuid

        self._act("mail.sync", str(account_id), f"erpq mail sync --account {account_id}")
        with self.rt.read_session() as s:
            from .models import EmailAccount

            tenant_id = s.scalar(sa.select(EmailAccount.tenant_id).where(EmailAccount.id == account_id))
        task_id = str(uuid.uuid4())
        self._after_commit(lambda: self.rt.enqueue("SyncEmailAccountJob", account_id, tenant_id=tenant_id,
                                                   task_id=task_id))
        return task_id

    def emails(self, account_id: int | None = None, search: str | None = None, offset: int = 0,
               limit: int = 50) -> Page:
        from .models import Email

        q = sa.select(Email)
        if account_id is not None:
            q = q.where(Email.account_id == account_id)
        if search:
            q = q.where(text_search((Email.subject, Email.from_address, Email.to_addresses, Email.message_id),
                                    search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(Email.id.desc()).offset(offset).limit(limit)).all()
            return Page([EmailInfo(e.id, e.account_id, e.folder, e.uid, e.message_id, e.from_address,
                                   e.to_addresses, e.cc_addresses, e.subject, e.sent_at, e.in_reply_to,
                                   list(e.attachments or []), e.contact_id, e.lead_id) for e in rows],
                        total, offset, limit)


@dataclass
class CampaignInfo(_Record):
    id: int
    tenant_id: int
    account_id: int | None
    name: str
    status: str
    scheduled_at: dt.datetime | None
    rate_per_minute: int | None
    total: int
    counts: dict
    progress: str
    eta: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    #: SMTP server unreachable this many times in a row; next try at retry_at.
    server_failures: int = 0
    retry_at: dt.datetime | None = None


@dataclass
class RecipientInfo(_Record):
    id: int
    email: str
    name: str | None
    status: str
    attempts: int
    error: str | None
    sent_at: dt.datetime | None


def _campaign_info(c, counts: dict, default_rate: int) -> CampaignInfo:
    done = counts["sent"] + counts["failed"] + counts["uncertain"]
    total = c.total_count or 0
    rate = c.rate_per_minute or default_rate
    left = counts["pending"] + counts["sending"]
    eta = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=left / rate)) if c.status == "sending" and rate else None
    return CampaignInfo(c.id, c.tenant_id, c.account_id, c.name, c.status, c.scheduled_at, rate, total, counts,
                        f"{100 * done // total if total else 0}%", eta, c.started_at, c.finished_at, c.error,
                        c.server_failures or 0, c.retry_at)


class _CampaignOps:
    def campaigns_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        from . import campaigns
        from .models import EmailCampaign

        q = sa.select(EmailCampaign)
        if search:
            q = q.where(text_search((EmailCampaign.name, EmailCampaign.status), search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(EmailCampaign.id.desc()).offset(offset).limit(limit)).all()
            items = [_campaign_info(c, campaigns.counts(s, c.id), self.settings.rate_per_minute) for c in rows]
        return Page(items, total, offset, limit)

    def campaign(self, campaign_id: int) -> CampaignInfo:
        from . import campaigns

        with self._read() as s:
            try:
                c = campaigns.get_campaign(s, campaign_id)
            except campaigns.accounts.MailError as exc:
                raise _error(exc) from None
            return _campaign_info(c, campaigns.counts(s, c.id), self.settings.rate_per_minute)

    def recipients(self, campaign_id: int, status: str | None = None, offset: int = 0, limit: int = 50) -> Page:
        from .models import EmailCampaignRecipient as R

        q = sa.select(R).where(R.campaign_id == campaign_id)
        if status:
            q = q.where(R.status == status)
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(R.id).offset(offset).limit(limit)).all()
            return Page([RecipientInfo(r.id, r.email, r.name, r.status, r.attempts or 0, r.error, r.sent_at)
                         for r in rows], total, offset, limit)

    @audited
    def create_campaign(self, tenant, account_id: int, name: str, subject: str, body: str,
                        rate_per_minute: int | None = None) -> CampaignInfo:
        from . import campaigns

        tid = self.ops.tenant_id(tenant)
        self._act("mail.campaign.create", name, f"erpq campaign create --tenant {shlex.quote(str(tenant))} "
                  f"--account {account_id} --name {shlex.quote(name)} --subject {shlex.quote(subject)} --body-file ...")
        try:
            with self._tx() as s:
                cid = campaigns.create_campaign(s, tid, account_id, name, subject, body, rate_per_minute).id
        except campaigns.accounts.MailError as exc:
            raise _error(exc) from None
        return self.campaign(cid)

    @audited
    def add_recipients(self, campaign_id: int, csv_path: str | None = None, source: str | None = None):
        """Add from a CSV file (an ``email`` column) or the tenant's ``contacts``/``leads``;
        returns (added, duplicates skipped, [(row, reason)] refused)."""
        from . import campaigns

        self._act("mail.campaign.add-recipients", str(campaign_id), f"erpq campaign add-recipients {campaign_id} "
                  + (f"--csv {shlex.quote(csv_path)}" if csv_path else f"--from {source}"))
        try:
            with self._tx() as s:
                if csv_path:
                    return campaigns.add_recipients_csv(s, campaign_id, csv_path)
                return campaigns.add_recipients_from(s, campaign_id, source or "contacts")
        except campaigns.accounts.MailError as exc:
            raise _error(exc) from None

    @audited
    def send(self, campaign_id: int, at: dt.datetime | None = None) -> CampaignInfo:
        from . import campaigns

        verb = f"schedule {campaign_id} --at {at.isoformat()}" if at else f"send {campaign_id}"
        self._act("mail.campaign." + verb.split()[0], str(campaign_id), f"erpq campaign {verb}")
        try:
            with self._tx() as s:
                enqueue, undo = campaigns.prepare_start(s, self.rt, campaign_id, at)
        except campaigns.accounts.MailError as exc:
            raise _error(exc) from None
        self._after_commit(enqueue, undo)
        return self._then(lambda: self.campaign(campaign_id))

    def _control(self, campaign_id: int, action: str) -> CampaignInfo:
        from . import campaigns

        self._act(f"mail.campaign.{action}", str(campaign_id), f"erpq campaign {action} {campaign_id}")
        try:
            with self._tx() as s:
                steps = campaigns.prepare_status(s, self.rt, campaign_id, action)
        except campaigns.accounts.MailError as exc:
            raise (_error(exc) if str(exc).startswith("unknown") else Conflict(str(exc))) from None
        if steps:
            self._after_commit(*steps)
        return self.campaign(campaign_id)

    @audited
    def pause(self, campaign_id: int) -> CampaignInfo:
        return self._control(campaign_id, "pause")

    @audited
    def resume(self, campaign_id: int) -> CampaignInfo:
        return self._control(campaign_id, "resume")

    @audited
    def cancel(self, campaign_id: int) -> CampaignInfo:
        return self._control(campaign_id, "cancel")


def _account_info(r, slug: str) -> AccountInfo:
    from . import accounts

    a = r.account
    return AccountInfo(
        a.id, a.tenant_id, slug, a.name, a.email, a.owner_user_id,
        f"{a.imap_host}:{a.imap_port} {a.imap_security}", f"{a.smtp_host}:{a.smtp_port} {a.smtp_security}",
        accounts.folders_of(a), a.is_active, a.last_synced_at, r.messages, a.last_error,
        a.consecutive_failures or 0, a.backoff_until, accounts.backoff_state(a), r.folders)


class MailOps(_CampaignOps, _AccountOps):
    """``ops.mail``: email accounts and their sync, synced emails, campaigns."""

