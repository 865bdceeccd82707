"""generation workloads: batch and serving bench modes, speculative decoding, prompt caches

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:10:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FLOATS = (
    "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "itl_p50_s", "itl_p95_s", "itl_p99_s",
    "request_tps_mean", "acceptance_rate", "draft_speedup", "ttft_cached_s_mean",
)  # fmt: skip
INTS = (
    "concurrency", "requests", "errors", "draft_model_id", "num_draft_tokens",
    "prompt_cache_id", "cached_tokens",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "promptcache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("model_fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("num_tokens", sa.Integer(), nullable=False),
        sa.Column("kv_bits", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("text_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_by_job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["created_by_job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["model_id"], ["model.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("promptcache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promptcache_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_promptcache_model_id"), ["model_id"], unique=False)

    with op.batch_alter_table("benchrun", schema=None) as batch_op:
        # Every run before this revision streamed one prompt (or mlx-lm's batch): "generate".
        batch_op.add_column(
            sa.Column(
                "mode",
                sqlmodel.sql.sqltypes.AutoString(),
                nullable=False,
                server_default="generate",
            )
        )
        for name in INTS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
        for name in FLOATS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("benchrun", schema=None) as batch_op:
        for name in (*FLOATS, *INTS, "mode"):
            batch_op.drop_column(name)
    with op.batch_alter_table("promptcache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promptcache_model_id"))
        batch_op.drop_index(batch_op.f("ix_promptcache_name"))
    op.drop_table("promptcache")
