"""finetune rows once: one step row per (adapter, iteration), one eval row per split too

A run resumed from a checkpoint trains the iterations after it again; their reports used to
be stored a second time (42 step rows for 40 iterations). The newest row of each key is kept.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 15:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = (
    ("finetunestep", "ux_finetunestep_adapter_iteration", ("adapter_id", "iteration")),
    (
        "finetuneeval",
        "ux_finetuneeval_adapter_split_iteration",
        ("adapter_id", "split", "iteration"),
    ),
)


def upgrade() -> None:
    for table, name, columns in INDEXES:
        keys = ", ".join(columns)
        # Keep the newest row of each key (the run that trained those steps last).
        op.execute(
            sa.text(
                f"delete from {table} where id not in (select max(id) from {table} group by {keys})"
            )
        )
        op.create_index(name, table, list(columns), unique=True)


def downgrade() -> None:
    for table, name, _ in INDEXES:
        op.drop_index(name, table_name=table)
