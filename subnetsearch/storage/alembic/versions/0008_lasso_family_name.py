"""the non-uniform channel family has one name, lasso: supernets stored as width-cifar-resnet are
listed as lasso-cifar-resnet (their architecture, and so their checkpoints' hashes, keep the name
they were written with)

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE ss_supernets SET family = 'lasso-cifar-resnet' WHERE family = 'width-cifar-resnet'")


def downgrade() -> None:
    op.execute("UPDATE ss_supernets SET family = 'width-cifar-resnet' WHERE family = 'lasso-cifar-resnet' "
               "AND CAST(arch AS TEXT) LIKE '%\"width-cifar-resnet\"%'")
