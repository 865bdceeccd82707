"""api users: the team server's users, roles and token hashes

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apiuser",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("token_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("apiuser", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apiuser_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_apiuser_token_sha256"), ["token_sha256"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("apiuser", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apiuser_token_sha256"))
        batch_op.drop_index(batch_op.f("ix_apiuser_name"))
    op.drop_table("apiuser")
