"""per-sample cost profile of input-dependent modes (dynamic inference)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.add_column(sa.Column("cost_profile", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.drop_column("cost_profile")
