"""audit_log.command becomes text (a long equivalent command never refuses the audit row)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 17:25:00

Follows 0004 (idempotency keys, probes).
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('command', existing_type=sa.String(length=512), type_=sa.Text(),
                              existing_nullable=True)


def downgrade() -> None:
    op.execute(sa.text("UPDATE audit_log SET command = SUBSTR(command, 1, 512) "
                       "WHERE LENGTH(command) > 512"))
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.alter_column('command', existing_type=sa.Text(), type_=sa.String(length=512),
                              existing_nullable=True)
