"""several processes: heartbeats, the update log, the lottery claimant

`bot_process` holds each running process's heartbeat, so a claim held by a process that
stopped can be taken over; `update_seen` the ids of recently received updates (webhook
redeliveries are handled once); `lottery.claimed_by` names the process that drew, and
`poll.claimed_by` / `survey.claimed_by` the closing process, and
`newcomer.claimed_by` / `acted_at` the process that failed a join check and when it acted.

Revision ID: 0110_scale
Revises: 0080_merge
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0110_scale"
down_revision: str | Sequence[str] | None = "0080_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_process",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("started_at", bot.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", bot.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_bot_process_seen_at", "bot_process", ["seen_at"])
    op.create_table(
        "update_seen",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seen_at", bot.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("update_id"),
    )
    op.create_index("ix_update_seen_seen_at", "update_seen", ["seen_at"])
    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
    for table in ("poll", "survey"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
    with op.batch_alter_table("newcomer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("acted_at", bot.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    for table in ("survey", "poll"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("claimed_by")
    with op.batch_alter_table("newcomer", schema=None) as batch_op:
        batch_op.drop_column("acted_at")
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("lottery", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
    op.drop_index("ix_update_seen_seen_at", table_name="update_seen")
    op.drop_table("update_seen")
    op.drop_index("ix_bot_process_seen_at", table_name="bot_process")
    op.drop_table("bot_process")
