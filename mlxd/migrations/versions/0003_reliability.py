"""reliability: child start time, interruptions, crashes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 11:15:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pid_started_at', sa.Float(), nullable=True))
        # Existing jobs were never interrupted or crashed as far as we know.
        batch_op.add_column(sa.Column('interruptions', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('crashes', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('crash_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('crash_reason')
        batch_op.drop_column('crashes')
        batch_op.drop_column('interruptions')
        batch_op.drop_column('pid_started_at')
