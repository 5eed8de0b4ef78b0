"""training-time searches (clipped-Lasso lambda/a, DDI skip targets) are searches too: their
objectives are accuracy and MACs, so they belong to no device

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_searches") as batch:
        batch.alter_column("device_id", existing_type=sa.Integer, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM ss_searches WHERE device_id IS NULL")
    with op.batch_alter_table("ss_searches") as batch:
        batch.alter_column("device_id", existing_type=sa.Integer, nullable=False)
