"""runtime: idempotency keys, health probes, lateness of periodic runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 18:00:00
"""
import sqlalchemy as sa
from alembic import op

import erpq.db

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_keys',
        sa.Column('key', sa.String(length=191), nullable=False),
        sa.Column('task_name', sa.String(length=128), nullable=False),
        sa.Column('task_id', sa.String(length=64), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=True),
        sa.Column('created_at', erpq.db.UTCDateTime(), nullable=False),
        sa.Column('finished_at', erpq.db.UTCDateTime(), nullable=True),
        sa.Column('expires_at', erpq.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('job_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_keys_expires_at'), ['expires_at'], unique=False)
    op.create_table(
        'health_probes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('task_id', sa.String(length=64), nullable=False),
        sa.Column('enqueued_at', erpq.db.UTCDateTime(), nullable=False),
        sa.Column('started_at', erpq.db.UTCDateTime(), nullable=True),
        sa.Column('finished_at', erpq.db.UTCDateTime(), nullable=True),
        sa.Column('wait_s', sa.Float(), nullable=True),
        sa.Column('run_s', sa.Float(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('runner', sa.String(length=128), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('task_id'),
    )
    with op.batch_alter_table('health_probes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_health_probes_enqueued_at'), ['enqueued_at'], unique=False)
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('late_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_column('late_s')
    with op.batch_alter_table('health_probes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_health_probes_enqueued_at'))
    op.drop_table('health_probes')
    with op.batch_alter_table('job_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_keys_expires_at'))
    op.drop_table('job_keys')
