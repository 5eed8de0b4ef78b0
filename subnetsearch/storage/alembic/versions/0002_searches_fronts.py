"""searches, fronts (and fronts computed for evaluations stored before this revision)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_searches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("supernet_id", sa.Integer, sa.ForeignKey("ss_supernets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "ss_fronts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("supernet_id", sa.Integer, sa.ForeignKey("ss_supernets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("settings_key", sa.String(64), nullable=False),
        sa.Column("objectives", sa.String(64), nullable=False),
        sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("ss_evaluations.id", ondelete="CASCADE"), nullable=False),
        sa.UniqueConstraint("objectives", "evaluation_id", name="uq_front_member"),
    )
    op.create_index("ix_fronts_lookup", "ss_fronts", ["device_id", "objectives", "supernet_id", "settings_key"])
    from subnetsearch.storage._fronts import rebuild_fronts

    rebuild_fronts(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_fronts_lookup", "ss_fronts")
    op.drop_table("ss_fronts")
    op.drop_table("ss_searches")
