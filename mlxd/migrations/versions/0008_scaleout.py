"""scale-out: job pools, the host holding a model's files, machines

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = "0007"
branch_labels = None
depends_on = None


def _wide_integer_columns(bind):
    """(table, column) of the integer columns that hold byte counts or parameter counts:
    SQLite's INTEGER is 64-bit, PostgreSQL's is 32-bit (2 GiB, a 2B-parameter model)."""
    inspector = sa.inspect(bind)
    for table in inspector.get_table_names():
        for col in inspector.get_columns(table):
            name = col['name']
            wide = '_bytes' in name or name == 'num_parameters'
            if wide and isinstance(col['type'], sa.Integer) and not isinstance(col['type'], sa.BigInteger):
                yield table, name


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        for table, column in list(_wide_integer_columns(bind)):
            op.alter_column(table, column, type_=sa.BigInteger())
    with op.batch_alter_table('job', schema=None) as batch_op:
        # Jobs submitted before pools existed wait in the default pool.
        batch_op.add_column(sa.Column('pool', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default='default'))
        batch_op.create_index(batch_op.f('ix_job_pool'), ['pool'], unique=False)
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f('ix_model_host'), ['host'], unique=False)
    op.create_table(
        'machine',
        sa.Column('host_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('hostname', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('pools', sa.JSON(), nullable=False),
        sa.Column('facts', sa.JSON(), nullable=False),
        sa.Column('daemon_pid', sa.Integer(), nullable=True),
        sa.Column('workers', sa.Integer(), nullable=False),
        sa.Column('mlxd_version', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('heartbeat_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('stopped_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('host_id'),
    )


def downgrade() -> None:
    op.drop_table('machine')
    with op.batch_alter_table('model', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_host'))
        batch_op.drop_column('host')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_pool'))
        batch_op.drop_column('pool')
