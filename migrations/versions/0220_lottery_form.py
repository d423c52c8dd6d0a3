"""lottery form: the guided /lottery's answers in progress (bot.lottery_form)

Revision ID: 0220_lottery_form
Revises: 0210_update_inbox
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import bot.db

revision: str = "0220_lottery_form"
down_revision: str | Sequence[str] | None = "0210_update_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lottery_form",
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=True),
        sa.Column("prize", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("winners", sa.Integer(), nullable=True),
        sa.Column("draw", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("expires_at", bot.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )


def downgrade() -> None:
    op.drop_table("lottery_form")
