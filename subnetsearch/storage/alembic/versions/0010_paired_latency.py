"""paired latency per realized graph, device noise profiles, per-image correctness of evaluations

Evaluations stored before this revision keep their latency as it was measured (alone in its window,
without a reference): their `latency` JSON has no "paired" entry, which readers show as "unpaired".

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ss_latency_graphs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("protocol_key", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("ratios", sa.JSON, nullable=False),
        sa.Column("reference_ms", sa.JSON, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("device_id", "protocol_key", "reference", "digest", name="uq_latency_graph"),
    )
    with op.batch_alter_table("ss_devices") as batch:
        batch.add_column(sa.Column("noise", sa.JSON, nullable=True))
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.add_column(sa.Column("correct", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("accuracy_samples", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ss_evaluations") as batch:
        batch.drop_column("accuracy_samples")
        batch.drop_column("correct")
    with op.batch_alter_table("ss_devices") as batch:
        batch.drop_column("noise")
    op.drop_table("ss_latency_graphs")
