"""a device's roofline (measured peak MAC rate and memory bandwidth)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_devices") as batch:
        batch.add_column(sa.Column("roofline", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ss_devices") as batch:
        batch.drop_column("roofline")
