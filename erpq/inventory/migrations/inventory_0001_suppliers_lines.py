"""inventory: suppliers, purchase order lines, max level and supplier on rules

Revision ID: inventory_0001
Revises: 0002
Create Date: 2026-12-01 10:30:00

Branches off core 0002 (down_revision), not depends_on: see invoicing_0001.
"""
import sqlalchemy as sa
from alembic import op

import erpq.db

revision = 'inventory_0001'
down_revision = '0002'
branch_labels = ('inventory',)
depends_on = None


def upgrade() -> None:
    op.create_table(
        'erp_suppliers',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('email', sa.String(length=255), nullable=True),
        sa.Column('created_at', erpq.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('tenant_id', 'name', name='uq_suppliers_tenant_name'),
    )
    with op.batch_alter_table('erp_suppliers', schema=None) as b:
        b.create_index(b.f('ix_erp_suppliers_tenant_id'), ['tenant_id'], unique=False)
    with op.batch_alter_table('erp_reorder_rules', schema=None) as b:
        b.add_column(sa.Column('supplier_id', sa.Integer(), nullable=True))
        b.add_column(sa.Column('max_quantity', sa.Numeric(precision=14, scale=3), nullable=True))
        b.add_column(sa.Column('last_order_id', sa.Integer(), nullable=True))
        b.create_foreign_key('fk_reorder_rules_supplier', 'erp_suppliers', ['supplier_id'], ['id'],
                             ondelete='SET NULL')
    with op.batch_alter_table('erp_purchase_orders', schema=None) as b:
        b.alter_column('product_id', existing_type=sa.Integer(), nullable=True)
        b.alter_column('quantity', existing_type=sa.Numeric(precision=14, scale=3), nullable=True)
        b.add_column(sa.Column('supplier_id', sa.Integer(), nullable=True))
        b.create_foreign_key('fk_purchase_orders_supplier', 'erp_suppliers', ['supplier_id'], ['id'],
                             ondelete='SET NULL')
    op.create_table(
        'erp_purchase_order_lines',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('product_id', sa.Integer(), nullable=False),
        sa.Column('reorder_rule_id', sa.Integer(), nullable=True),
        sa.Column('quantity', sa.Numeric(precision=14, scale=3), nullable=False),
        sa.Column('unit_cost', sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column('open_product_key', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['order_id'], ['erp_purchase_orders.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['product_id'], ['erp_products.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['reorder_rule_id'], ['erp_reorder_rules.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('open_product_key'),
    )
    with op.batch_alter_table('erp_purchase_order_lines', schema=None) as b:
        b.create_index(b.f('ix_erp_purchase_order_lines_order_id'), ['order_id'], unique=False)
        b.create_index(b.f('ix_erp_purchase_order_lines_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    op.drop_table('erp_purchase_order_lines')
    with op.batch_alter_table('erp_purchase_orders', schema=None) as b:
        b.drop_constraint('fk_purchase_orders_supplier', type_='foreignkey')
        b.drop_column('supplier_id')
    with op.batch_alter_table('erp_reorder_rules', schema=None) as b:
        b.drop_constraint('fk_reorder_rules_supplier', type_='foreignkey')
        b.drop_column('last_order_id')
        b.drop_column('max_quantity')
        b.drop_column('supplier_id')
    op.drop_table('erp_suppliers')
