"""mail: account security/owner/folders/backoff, per-folder sync state, richer emails, campaign totals

Revision ID: mail_0001
Revises:
Create Date: 2026-11-30 10:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import erpq.db

revision = "mail_0001"
down_revision = None
branch_labels = ("mail",)
depends_on = "0002"

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("email_accounts") as b:
        b.add_column(sa.Column("owner_user_id", sa.Integer(), nullable=True))
        b.add_column(sa.Column("imap_security", sa.String(16), nullable=False, server_default="tls"))
        b.add_column(sa.Column("smtp_security", sa.String(16), nullable=False, server_default="starttls"))
        b.add_column(sa.Column("smtp_username", sa.String(255), nullable=True))
        b.add_column(sa.Column("smtp_password_encrypted", sa.Text(), nullable=True))
        b.add_column(sa.Column("folders", sa.JSON(), nullable=True))
        b.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("backoff_until", erpq.db.UTCDateTime(), nullable=True))
    op.create_table(
        "email_folder_states",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("last_synced_at", erpq.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["email_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "folder", name="uq_email_folder_state"),
    )
    with op.batch_alter_table("email_folder_states") as b:
        b.create_index(b.f("ix_email_folder_states_account_id"), ["account_id"], unique=False)
    with op.batch_alter_table("emails") as b:
        b.add_column(sa.Column("cc_addresses", sa.Text(), nullable=True))
        b.add_column(sa.Column("body_html", LongText, nullable=True))
        b.add_column(sa.Column("attachments", sa.JSON(), nullable=True))
        b.add_column(sa.Column("in_reply_to", sa.String(998), nullable=True))
        b.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        b.add_column(sa.Column("contact_id", sa.Integer(), nullable=True))
        b.add_column(sa.Column("lead_id", sa.Integer(), nullable=True))
        b.create_index(b.f("ix_emails_contact_id"), ["contact_id"], unique=False)
        b.create_index(b.f("ix_emails_lead_id"), ["lead_id"], unique=False)
    with op.batch_alter_table("email_campaigns") as b:
        b.add_column(sa.Column("total_count", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("uncertain_count", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("email_campaign_recipients") as b:
        b.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("next_attempt_at", erpq.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_campaign_recipients") as b:
        b.drop_column("next_attempt_at")
        b.drop_column("attempts")
    with op.batch_alter_table("email_campaigns") as b:
        for c in ("error", "uncertain_count", "total_count"):
            b.drop_column(c)
    with op.batch_alter_table("emails") as b:
        b.drop_index(b.f("ix_emails_lead_id"))
        b.drop_index(b.f("ix_emails_contact_id"))
        for c in ("lead_id", "contact_id", "fingerprint", "in_reply_to", "attachments", "body_html", "cc_addresses"):
            b.drop_column(c)
    op.drop_table("email_folder_states")
    with op.batch_alter_table("email_accounts") as b:
        for c in ("backoff_until", "consecutive_failures", "folders", "smtp_password_encrypted", "smtp_username",
                  "smtp_security", "imap_security", "owner_user_id"):
            b.drop_column(c)
