"""member segments' thresholds and the hourly message counts of the activity heat map

`chat_hour` (messages per chat and UTC hour) is written by the activity flush from now on;
hours before this migration are not known (the daily rollups do not hold them), so a
group's heat map fills up over its first four weeks. `segment_settings` holds a group's own
segment thresholds (no row = the defaults).

Revision ID: 0101_segments
Revises: 0080_merge
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0101_segments"
down_revision: str | Sequence[str] | None = "0080_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_hour",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("hour_start", bot.db.UTCDateTime(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["chat_id"], ["chat.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chat_id", "hour_start"),
    )
    op.create_table(
        "segment_settings",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("new_days", sa.Integer(), nullable=False),
        sa.Column("core_days", sa.Integer(), nullable=False),
        sa.Column("core_window", sa.Integer(), nullable=False),
        sa.Column("casual_days", sa.Integer(), nullable=False),
        sa.Column("risk_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", bot.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["chat_id"], ["chat.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chat_id"),
    )


def downgrade() -> None:
    op.drop_table("segment_settings")
    op.drop_table("chat_hour")
