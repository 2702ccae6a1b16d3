"""The mail capability's tables.

The first columns of each class are those of the core migration 0001 (kept
identical); everything added since lives in this capability's Alembic branch
(``erpq/mail/migrations``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, JSONType, LongText, utcnow

# column helpers shared with the core tables
from ..models import Str, _id, _tenant


class EmailAccount(Base):
    __tablename__ = "email_accounts"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    email: Mapped[str] = mapped_column(Str(255))
    imap_host: Mapped[str | None] = mapped_column(Str(255))
    imap_port: Mapped[int | None] = mapped_column(sa.Integer)
    imap_ssl: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    smtp_host: Mapped[str | None] = mapped_column(Str(255))
    smtp_port: Mapped[int | None] = mapped_column(sa.Integer)
    smtp_starttls: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The IMAP user name.
    username: Mapped[str | None] = mapped_column(Str(255))
    #: The IMAP password, Fernet-encrypted.
    password_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    folder: Mapped[str] = mapped_column(Str(255), default="INBOX")
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_synced_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- mail_0001
    owner_user_id: Mapped[int | None] = mapped_column(sa.Integer)
    imap_security: Mapped[str] = mapped_column(Str(16), default="tls")  # none | starttls | tls
    smtp_security: Mapped[str] = mapped_column(Str(16), default="starttls")
    smtp_username: Mapped[str | None] = mapped_column(Str(255))
    smtp_password_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    folders: Mapped[Any | None] = mapped_column(JSONType)  # list of folder names; None: ["INBOX"]
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    backoff_until: Mapped[dt.datetime | None]


class EmailFolderState(Base):
    """Per account and folder: the UIDVALIDITY seen and the last UID committed."""

    __tablename__ = "email_folder_states"
    __table_args__ = (sa.UniqueConstraint("account_id", "folder", name="uq_email_folder_state"),)

    id: Mapped[int] = _id()
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("email_accounts.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(Str(255))
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_synced_at: Mapped[dt.datetime | None]


class Email(Base):
    __tablename__ = "emails"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "folder", "uidvalidity", "uid", name="uq_emails_account_uid"),
    )

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("email_accounts.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(Str(255), default="INBOX")
    uidvalidity: Mapped[int] = mapped_column(sa.BigInteger)
    uid: Mapped[int] = mapped_column(sa.BigInteger)
    message_id: Mapped[str | None] = mapped_column(Str(255), index=True)
    from_address: Mapped[str | None] = mapped_column(Str(255))
    to_addresses: Mapped[str | None] = mapped_column(sa.Text)
    subject: Mapped[str | None] = mapped_column(Str(998))
    body_text: Mapped[str | None] = mapped_column(LongText)
    sent_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- mail_0001
    cc_addresses: Mapped[str | None] = mapped_column(sa.Text)
    body_html: Mapped[str | None] = mapped_column(LongText)
    attachments: Mapped[Any | None] = mapped_column(JSONType)  # [{"name":..., "size":...}]
    in_reply_to: Mapped[str | None] = mapped_column(Str(998))
    #: For matching a message again after a UIDVALIDITY reset when it has no Message-ID.
    fingerprint: Mapped[str | None] = mapped_column(Str(64))
    contact_id: Mapped[int | None] = mapped_column(sa.Integer, index=True)
    lead_id: Mapped[int | None] = mapped_column(sa.Integer, index=True)


class EmailCampaign(Base):
    __tablename__ = "email_campaigns"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("email_accounts.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(Str(255))
    #: The subject template.
    subject: Mapped[str] = mapped_column(Str(998))
    body_template: Mapped[str] = mapped_column(LongText)
    # draft scheduled sending paused sent cancelled failed
    status: Mapped[str] = mapped_column(Str(16), default="draft")
    scheduled_at: Mapped[dt.datetime | None]
    rate_per_minute: Mapped[int | None] = mapped_column(sa.Integer)
    batch_id: Mapped[str | None] = mapped_column(Str(36))
    sent_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- mail_0001
    total_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    uncertain_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # ---- mail_0002: an SMTP server that cannot be reached is retried with a back-off
    server_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    retry_at: Mapped[dt.datetime | None]


class EmailCampaignRecipient(Base):
    __tablename__ = "email_campaign_recipients"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "email", name="uq_campaign_recipient"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("email_campaigns.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(Str(255))
    name: Mapped[str | None] = mapped_column(Str(255))
    #: The recipient's fields, available to the templates.
    data: Mapped[Any | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending sending sent failed uncertain
    error: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[dt.datetime | None]
    # ---- mail_0001
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None]
