"""Join the growth, scale, faults, privacy and dashboard branches of the schema into one head.

Revision ID: 0200_merge
Revises: 0101_segments, 0102_campaigns, 0110_scale, 0111_faults, 0120_privacy
"""

from collections.abc import Sequence

revision: str = "0200_merge"
down_revision: str | Sequence[str] | None = (
    "0101_segments",
    "0102_campaigns",
    "0110_scale",
    "0111_faults",
    "0120_privacy",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
