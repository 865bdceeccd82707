"""downloads: hub snapshots and their files

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hubsnapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("revision", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("commit_sha", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("endpoint", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("cache_dir", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("total_bytes", sa.Integer(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("is_mlx", sa.Boolean(), nullable=False),
        sa.Column("pulled_by_job_id", sa.Integer(), nullable=True),
        sa.Column("verified_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"]),
        sa.ForeignKeyConstraint(["pulled_by_job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hubsnapshot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hubsnapshot_model_id"), ["model_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_hubsnapshot_repo_id"), ["repo_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_hubsnapshot_commit_sha"), ["commit_sha"], unique=False)

    op.create_table(
        "hubfile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("lfs", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["hubsnapshot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hubfile", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hubfile_snapshot_id"), ["snapshot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hubfile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hubfile_snapshot_id"))
    op.drop_table("hubfile")
    with op.batch_alter_table("hubsnapshot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hubsnapshot_commit_sha"))
        batch_op.drop_index(batch_op.f("ix_hubsnapshot_repo_id"))
        batch_op.drop_index(batch_op.f("ix_hubsnapshot_model_id"))
    op.drop_table("hubsnapshot")
