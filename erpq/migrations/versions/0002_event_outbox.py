"""event outbox: events written in the emitter's transaction

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 17:40:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import erpq.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'event_outbox',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', erpq.db.UTCDateTime(), nullable=False),
        sa.Column('claimed_at', erpq.db.UTCDateTime(), nullable=True),
        sa.Column('dispatched_at', erpq.db.UTCDateTime(), nullable=True),
        sa.Column('error', sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb'), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('event_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_event_outbox_status_id', ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_event_outbox_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('event_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_outbox_tenant_id'))
        batch_op.drop_index('ix_event_outbox_status_id')
    op.drop_table('event_outbox')
