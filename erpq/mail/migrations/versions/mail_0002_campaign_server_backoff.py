"""mail: campaigns back off from an SMTP server that cannot be reached (server_failures, retry_at)

Revision ID: mail_0002
Revises: mail_0001
Create Date: 2026-11-29 17:30:00
"""
import sqlalchemy as sa
from alembic import op

import erpq.db

revision = "mail_0002"
down_revision = "mail_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_campaigns") as b:
        b.add_column(sa.Column("server_failures", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("retry_at", erpq.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_campaigns") as b:
        b.drop_column("retry_at")
        b.drop_column("server_failures")
