"""latency lookup tables per device and supernet

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_latency_tables",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("supernet_id", sa.Integer, sa.ForeignKey("ss_supernets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("table", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("device_id", "supernet_id", name="uq_latency_table"),
    )


def downgrade() -> None:
    op.drop_table("ss_latency_tables")
