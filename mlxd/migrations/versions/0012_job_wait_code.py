"""job wait code: why a queued job waits, as a code beside its message

The daemon writes "waiting: memory (...)" into a queued job's message; recovery and
``jobs list`` decided on that wording. The code (``reasons.Code``: wait_memory, wait_disk)
is what they read now; the message stays the words a person reads.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("wait_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
    # A job waiting when the catalog was upgraded says so in its message (the old way).
    op.execute(
        sa.text(
            "update job set wait_code = 'wait_memory' "
            "where status = 'queued' and message like 'waiting: memory%'"
        )
    )
    op.execute(
        sa.text(
            "update job set wait_code = 'wait_disk' "
            "where status = 'queued' and message like 'waiting: disk%'"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("wait_code")
