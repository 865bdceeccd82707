"""job logs in the catalog, for jobs that ran on another host

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "joblog",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("joblog", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_joblog_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("joblog", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_joblog_job_id"))
    op.drop_table("joblog")
