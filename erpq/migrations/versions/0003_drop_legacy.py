"""drop legacy state: webhook deliveries left 'delivering', runners.jobs_done

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 17:30:00

Rows in the old 'delivering' state (earlier versions counted the attempt when
they claimed it) become 'failed' and due now with that attempt given back: the
retry task counts a lost job as an attempt when it hands it to a new job.
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    op.execute(sa.text("UPDATE erp_webhook_deliveries SET status = 'failed', next_retry_at = :now, "
                       "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                       "error = COALESCE(error, 'interrupted by an upgrade') WHERE status = 'delivering'")
               .bindparams(now=now))
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_column('jobs_done')


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('jobs_done', sa.Integer(), nullable=False, server_default='0'))
