"""bench: a rotating KV cache size per point, combined prompt+generation tok/s

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:15:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('benchrun', schema=None) as batch_op:
        # None: the cache grows with the context (mlx-lm's default); N: a rotating cache of N.
        batch_op.add_column(sa.Column('max_kv_size', sa.Integer(), nullable=True))
        # (prompt + generated tokens) / total time of a trial: llama-bench's pp+tg figure.
        batch_op.add_column(sa.Column('combined_tps_mean', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('combined_tps_std', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('combined_tps_ci95', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('benchrun', schema=None) as batch_op:
        batch_op.drop_column('combined_tps_ci95')
        batch_op.drop_column('combined_tps_std')
        batch_op.drop_column('combined_tps_mean')
        batch_op.drop_column('max_kv_size')
