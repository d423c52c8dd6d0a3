"""Join the feature branches of the schema into one head.

Revision ID: 0080_merge
Revises: 0010_moderation, 0040_calendar, 0050_kpi, 0070_postkinds
"""

from collections.abc import Sequence

revision: str = "0080_merge"
down_revision: str | Sequence[str] | None = (
    "0010_moderation",
    "0040_calendar",
    "0050_kpi",
    "0070_postkinds",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
