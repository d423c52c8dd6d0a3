"""lottery: when its announcement was handed to Telegram

A draw announcement whose process died (or whose send timed out) after the request left may
have been posted: `announcing_at` tells such an announcement from one never attempted, so a
later process publishes the result by editing the lottery post instead of posting it twice.

Revision ID: 0111_faults
Revises: 0080_merge
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0111_faults"
down_revision: str | Sequence[str] | None = "0080_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("announcing_at", bot.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.drop_column("announcing_at")
