"""measured energy (RAPL) next to the modelled one

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.add_column(sa.Column("energy_measured_mj", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.drop_column("energy_measured_mj")
