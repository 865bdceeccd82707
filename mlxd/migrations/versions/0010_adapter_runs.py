"""adapter runs: benchmark and quality rows measured with an unfused adapter

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# A run of base + adapter (unfused) names the adapter; NULL: the model alone, as before.
TABLES = ("benchrun", "qualityrun")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("adapter_id", sa.Integer(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_adapter_id"), ["adapter_id"])
            batch_op.create_foreign_key(
                f"fk_{table}_adapter_id_adapter", "adapter", ["adapter_id"], ["id"]
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_adapter_id_adapter", type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_adapter_id"))
            batch_op.drop_column("adapter_id")
