"""model quant_method and quant_options: learned quantization's lineage

A model quantized by AWQ, GPTQ, DWQ or dynamic bit allocation records the method and its
options, with the calibration text's sha256, token count, samples and length. NULL on older
rows means round-to-nearest (rtn).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quant_method", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("quant_options", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_column("quant_options")
        batch_op.drop_column("quant_method")
