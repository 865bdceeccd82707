"""job lease: the lease the attempt's holder promised

Another host judged a running job by its own MLXD_LEASE_TIMEOUT_S. A CLI running a job in
the foreground with a longer lease than a daemon's (it renews less often) was taken back
while it worked. The claimer now writes its lease on the row; others judge by it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 19:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("lease_s")
