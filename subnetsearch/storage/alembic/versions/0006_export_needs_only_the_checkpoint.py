"""what export needs besides the checkpoint: each calibrated evaluation's BN statistics and each
supernet's input preprocessing (size, channels, mean/std, class names)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.add_column(sa.Column("bn_state", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("ss_supernets") as batch:
        batch.add_column(sa.Column("preprocessing", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ss_supernets") as batch:
        batch.drop_column("preprocessing")
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.drop_column("bn_state")
