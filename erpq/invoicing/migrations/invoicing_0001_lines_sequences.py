"""invoicing: template schedule and failure columns, invoice lines, number sequences

Revision ID: invoicing_0001
Revises: 0002
Create Date: 2026-12-01 10:00:00

The branch starts from core 0002 (down_revision) rather than from nothing with
depends_on = "0002": with depends_on, Alembic records only this branch's head in
alembic_version, so erpq.db.current_revision() never equals head_revision() and
Runtime refuses a server database as out of date.
"""
import sqlalchemy as sa
from alembic import op

import erpq.db

revision = 'invoicing_0001'
down_revision = '0002'  # branches off core 0002 (see the module doc)
branch_labels = ('invoicing',)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('erp_recurring_invoices', schema=None) as b:
        b.add_column(sa.Column('anchor_day', sa.Integer(), nullable=True))
        b.add_column(sa.Column('payment_terms_days', sa.Integer(), server_default='14', nullable=False))
        b.add_column(sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False))
        b.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        b.add_column(sa.Column('paused_at', erpq.db.UTCDateTime(), nullable=True))
        b.add_column(sa.Column('paused_reason', sa.String(length=512), nullable=True))
        b.add_column(sa.Column('ended_reason', sa.String(length=255), nullable=True))
        b.create_index('ix_recurring_invoices_due', ['is_active', 'next_date'], unique=False)
    with op.batch_alter_table('erp_invoices', schema=None) as b:
        b.alter_column('lines', existing_type=sa.JSON(), nullable=True)
        b.add_column(sa.Column('period_end', sa.Date(), nullable=True))
        b.add_column(sa.Column('subtotal', sa.Numeric(precision=14, scale=2), server_default='0', nullable=False))
        b.add_column(sa.Column('tax_total', sa.Numeric(precision=14, scale=2), server_default='0', nullable=False))
        b.create_index('ix_invoices_created_at', ['created_at'], unique=False)
    op.create_table(
        'erp_invoice_lines',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('invoice_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('description', sa.String(length=255), nullable=False),
        sa.Column('quantity', sa.Numeric(precision=14, scale=3), nullable=False),
        sa.Column('unit_price', sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column('tax_rate', sa.Numeric(precision=6, scale=3), nullable=False),
        sa.Column('net', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column('tax', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column('total', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.ForeignKeyConstraint(['invoice_id'], ['erp_invoices.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('invoice_id', 'position', name='uq_invoice_lines_position'),
    )
    with op.batch_alter_table('erp_invoice_lines', schema=None) as b:
        b.create_index(b.f('ix_erp_invoice_lines_tenant_id'), ['tenant_id'], unique=False)
    op.create_table(
        'erp_invoice_sequences',
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('last_value', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id', 'year'),
    )


def downgrade() -> None:
    op.drop_table('erp_invoice_sequences')
    op.drop_table('erp_invoice_lines')
    with op.batch_alter_table('erp_invoices', schema=None) as b:
        b.drop_index('ix_invoices_created_at')
        b.drop_column('tax_total')
        b.drop_column('subtotal')
        b.drop_column('period_end')
        b.alter_column('lines', existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table('erp_recurring_invoices', schema=None) as b:
        b.drop_index('ix_recurring_invoices_due')
        for c in ('ended_reason', 'paused_reason', 'paused_at', 'last_error', 'consecutive_failures',
                  'payment_terms_days', 'anchor_day'):
            b.drop_column(c)
