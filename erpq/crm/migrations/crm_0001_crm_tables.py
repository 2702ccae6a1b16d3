"""crm: sent-mail ledger, user preferences, workflow run bookkeeping, activity source keys

Revision ID: crm_0001
Revises: 0002 (core)
Create Date: 2026-11-30 10:00:00
"""
import sqlalchemy as sa
from alembic import op

import erpq.db

revision = "crm_0001"
# Branches off the core's 0002 (rather than ``depends_on``): with depends_on the
# database records only crm_0001 as its head while the script directory also
# lists 0002, and erpq.db's current == head check then never matches.
down_revision = "0002"
branch_labels = ("crm",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_sent_mail",
        sa.Column("message_id", sa.String(length=191), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("sent_at", erpq.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id"),
    )
    with op.batch_alter_table("crm_sent_mail") as b:
        b.create_index(b.f("ix_crm_sent_mail_tenant_id"), ["tenant_id"], unique=False)
        b.create_index(b.f("ix_crm_sent_mail_sent_at"), ["sent_at"], unique=False)
    op.create_table(
        "crm_user_preferences",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("crm_user_preferences") as b:
        b.create_index(b.f("ix_crm_user_preferences_tenant_id"), ["tenant_id"], unique=False)
    with op.batch_alter_table("activities") as b:
        b.add_column(sa.Column("source_key", sa.String(length=191), nullable=True))
        b.create_unique_constraint(b.f("uq_activities_source_key"), ["source_key"])
    with op.batch_alter_table("workflows") as b:
        b.add_column(sa.Column("match", sa.String(length=8), nullable=False, server_default="all"))
        b.add_column(sa.Column("updated_at", erpq.db.UTCDateTime(), nullable=True))
        b.create_unique_constraint("uq_workflows_tenant_name", ["tenant_id", "name"])
    with op.batch_alter_table("workflow_runs") as b:
        b.add_column(sa.Column("event_key", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("depth", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("steps_done", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("steps", sa.JSON(), nullable=True))
        b.create_unique_constraint("uq_workflow_runs_event", ["workflow_id", "event_key"])
    with op.batch_alter_table("workflow_instances") as b:
        b.add_column(sa.Column("job_id", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("claimed_at", erpq.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_instances") as b:
        b.drop_column("claimed_at")
        b.drop_column("job_id")
    with op.batch_alter_table("workflow_runs") as b:
        b.drop_constraint("uq_workflow_runs_event", type_="unique")
        b.drop_column("steps")
        b.drop_column("steps_done")
        b.drop_column("depth")
        b.drop_column("event_key")
    with op.batch_alter_table("workflows") as b:
        b.drop_constraint("uq_workflows_tenant_name", type_="unique")
        b.drop_column("updated_at")
        b.drop_column("match")
    with op.batch_alter_table("activities") as b:
        b.drop_constraint(b.f("uq_activities_source_key"), type_="unique")
        b.drop_column("source_key")
    op.drop_table("crm_user_preferences")
    op.drop_table("crm_sent_mail")
