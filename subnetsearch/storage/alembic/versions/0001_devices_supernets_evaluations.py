"""devices, supernets, evaluations

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("location", sa.String(16), nullable=False),
        sa.Column("protocol", sa.JSON, nullable=False),
        sa.Column("energy", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ss_supernets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("arch", sa.JSON, nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("checkpoint_path", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ss_evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("supernet_id", sa.Integer, sa.ForeignKey("ss_supernets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("mode_id", sa.String(16), nullable=False),
        sa.Column("mode_json", sa.Text, nullable=False),
        sa.Column("settings_key", sa.String(64), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=False),
        sa.Column("loss", sa.Float, nullable=False),
        sa.Column("macs", sa.BigInteger, nullable=False),
        sa.Column("params", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("latency", sa.JSON, nullable=True),
        sa.Column("energy_mj", sa.Float, nullable=False),
        sa.Column("energy_source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("supernet_id", "device_id", "mode_id", "settings_key", name="uq_evaluation"),
    )


def downgrade() -> None:
    op.drop_table("ss_evaluations")
    op.drop_table("ss_supernets")
    op.drop_table("ss_devices")
