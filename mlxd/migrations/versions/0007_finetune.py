"""fine-tuning: adapters, their step and evaluation rows, fine-tuning sweeps

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 11:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString
T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "finetunesweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("runs", sa.JSON(), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["model.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetunesweep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetunesweep_base_model_id"), ["base_model_id"])

    op.create_table(
        "adapter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", S(), nullable=False),
        sa.Column("path", S(), nullable=False),
        sa.Column("fine_tune_type", S(), nullable=False),
        sa.Column("status", S(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=True),
        sa.Column("base_model_name", S(), nullable=False),
        sa.Column("base_weights_sha256", S(), nullable=True),
        sa.Column("base_quantized", sa.Boolean(), nullable=False),
        sa.Column("data_path", S(), nullable=False),
        sa.Column("data_sha256", S(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("target_iterations", sa.Integer(), nullable=False),
        sa.Column("trainable_parameters", sa.Integer(), nullable=True),
        sa.Column("final_train_loss", sa.Float(), nullable=True),
        sa.Column("final_val_loss", sa.Float(), nullable=True),
        sa.Column("test_loss", sa.Float(), nullable=True),
        sa.Column("test_perplexity", sa.Float(), nullable=True),
        sa.Column("tokens_per_s", sa.Float(), nullable=True),
        sa.Column("iterations_per_s", sa.Float(), nullable=True),
        sa.Column("peak_memory_bytes", sa.Integer(), nullable=True),
        sa.Column("train_time_s", sa.Float(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.Column("updated_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["base_model_id"], ["model.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["sweep_id"], ["finetunesweep.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("adapter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapter_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_adapter_base_model_id"), ["base_model_id"])
        batch_op.create_index(batch_op.f("ix_adapter_job_id"), ["job_id"])
        batch_op.create_index(batch_op.f("ix_adapter_sweep_id"), ["sweep_id"])

    op.create_table(
        "finetunestep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("learning_rate", sa.Float(), nullable=False),
        sa.Column("iterations_per_s", sa.Float(), nullable=False),
        sa.Column("tokens_per_s", sa.Float(), nullable=False),
        sa.Column("trained_tokens", sa.Integer(), nullable=False),
        sa.Column("peak_memory_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapter.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetunestep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetunestep_adapter_id"), ["adapter_id"])
        batch_op.create_index(batch_op.f("ix_finetunestep_job_id"), ["job_id"])

    op.create_table(
        "finetuneeval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("split", S(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("perplexity", sa.Float(), nullable=False),
        sa.Column("eval_time_s", sa.Float(), nullable=True),
        sa.Column("created_at", T(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapter.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("finetuneeval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetuneeval_adapter_id"), ["adapter_id"])
        batch_op.create_index(batch_op.f("ix_finetuneeval_job_id"), ["job_id"])


def downgrade() -> None:
    for table in ("finetuneeval", "finetunestep", "adapter", "finetunesweep"):
        op.drop_table(table)
