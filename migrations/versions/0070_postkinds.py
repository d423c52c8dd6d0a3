"""calendar poll and lottery posts keyed by their delivery

A poll or lottery posted by the content calendar records the calendar delivery it was posted
for, UNIQUE, so a retried delivery finds it instead of posting a second one. It alters both
`poll` (0030_polls) and `lottery` (0060_lottery), so it follows both branches.

Revision ID: 0070_postkinds
Revises: 0030_polls, 0060_lottery
Create Date: 2026-11-25 12:54:24.686918
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0070_postkinds"
down_revision: str | Sequence[str] | None = ("0030_polls", "0060_lottery")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calendar_delivery_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_lottery_calendar_delivery_id"), ["calendar_delivery_id"], unique=True
        )

    with op.batch_alter_table("poll", schema=None) as batch_op:
        batch_op.add_column(sa.Column("calendar_delivery_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_poll_calendar_delivery_id"), ["calendar_delivery_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("poll", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_poll_calendar_delivery_id"))
        batch_op.drop_column("calendar_delivery_id")

    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lottery_calendar_delivery_id"))
        batch_op.drop_column("calendar_delivery_id")
