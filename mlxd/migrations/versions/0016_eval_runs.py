"""eval runs: task accuracy per model, with every item's answer

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-04 22:10:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString
T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "evalrun",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=True),
        sa.Column("base_run_id", sa.Integer(), nullable=True),
        sa.Column("system_id", sa.Integer(), nullable=True),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("protocol", S(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("accuracy_low", sa.Float(), nullable=True),
        sa.Column("accuracy_high", sa.Float(), nullable=True),
        sa.Column("base_accuracy", sa.Float(), nullable=True),
        sa.Column("accuracy_drop", sa.Float(), nullable=True),
        sa.Column("shots", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("item_limit", sa.Integer(), nullable=True),
        sa.Column("synthetic", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"]),
        sa.ForeignKeyConstraint(["base_model_id"], ["model.id"]),
        sa.ForeignKeyConstraint(["base_run_id"], ["evalrun.id"]),
        sa.ForeignKeyConstraint(["system_id"], ["system.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("evalrun", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evalrun_job_id"), ["job_id"])
        batch_op.create_index(batch_op.f("ix_evalrun_model_id"), ["model_id"])
        batch_op.create_index(batch_op.f("ix_evalrun_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_evalrun_protocol"), ["protocol"])

    op.create_table(
        "evalitem",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("task", S(), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("correct_norm", sa.Boolean(), nullable=True),
        sa.Column("output", S(), nullable=False),
        sa.Column("expected", S(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["evalrun.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("evalitem", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evalitem_run_id"), ["run_id"])


def downgrade() -> None:
    op.drop_table("evalitem")
    op.drop_table("evalrun")
