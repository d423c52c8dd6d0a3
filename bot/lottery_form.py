"""The guided form behind a bare `/lottery`: prize, then winners, then when it draws.

Its answers are kept in the database (`lottery_form`), not in memory, so the steps may reach
any process and survive a restart; a form lives `FORM_TTL` and is deleted when it is
finished or cancelled. The choices offered are a few common ones; the one-line command
(`/lottery PRIZE | winners N | draw …`) remains for everything else, and the form ends in the
same `parse_spec` as that command, so both make the same lottery.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Column, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from bot.lottery import MAX_PRIZE
from bot.models import utc_column

FORM_TTL = timedelta(minutes=15)
WINNER_CHOICES = (1, 2, 3, 5, 10)
# choice key → the `parse_spec` option it stands for
DRAW_CHOICES = {
    "1h": "draw in 1h",
    "6h": "draw in 6h",
    "24h": "draw in 24h",
    "3d": "draw in 3d",
    "n50": "draw at 50 entries",
    "n100": "draw at 100 entries",
}


class LotteryForm(SQLModel, table=True):
    """An operator's lottery form in progress."""

    __tablename__ = "lottery_form"

    token: str = Field(primary_key=True, max_length=16)  # in the buttons' callback data
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # where it is filled in
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the operator
    group_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the lottery's group
    prompt_id: int | None = Field(default=None, sa_column=Column(BigInteger))  # reply to this
    prize: str | None = Field(default=None, max_length=MAX_PRIZE)
    winners: int | None = Field(default=None)
    draw: str | None = Field(default=None, max_length=8)  # a DRAW_CHOICES key
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))


def clean_prize(text: str) -> str:
    """The prize as typed, on one line; `|` would start an option of the command, so it goes."""
    return " ".join(text.replace("|", "/").split())


def spec_text(form: LotteryForm) -> str:
    """The one-line command the form's answers amount to (for `parse_spec`)."""
    return f"{form.prize} | winners {form.winners} | {DRAW_CHOICES[form.draw or '']}"


async def start(
    session: AsyncSession, *, chat_id: int, user_id: int, group_id: int, now: datetime
) -> LotteryForm:
    """A new form (the operator's earlier unfinished one in this chat is dropped)."""
    await session.execute(
        delete(LotteryForm).where(
            LotteryForm.chat_id == chat_id,  # type: ignore[arg-type]
            LotteryForm.user_id == user_id,  # type: ignore[arg-type]
        )
    )
    await session.execute(delete(LotteryForm).where(LotteryForm.expires_at < now))  # type: ignore[arg-type]
    form = LotteryForm(
        token=secrets.token_urlsafe(9),
        chat_id=chat_id,
        user_id=user_id,
        group_id=group_id,
        expires_at=now + FORM_TTL,
    )
    session.add(form)
    return form


async def by_token(session: AsyncSession, token: str, *, now: datetime) -> LotteryForm | None:
    form = await session.get(LotteryForm, token[:16])
    return form if form is not None and form.expires_at > now else None


async def awaiting_prize(
    session: AsyncSession, *, chat_id: int, user_id: int, reply_to: int, now: datetime
) -> LotteryForm | None:
    """The form whose prize question this message answers, if any."""
    return (
        await session.scalars(
            select(LotteryForm).where(
                LotteryForm.chat_id == chat_id,  # type: ignore[arg-type]
                LotteryForm.user_id == user_id,  # type: ignore[arg-type]
                LotteryForm.prompt_id == reply_to,  # type: ignore[arg-type]
                LotteryForm.expires_at > now,  # type: ignore[arg-type]
            )
        )
    ).first()


async def finish(session: AsyncSession, token: str) -> bool:
    """Delete the form (started or cancelled); False when it was already gone."""
    result = await session.execute(delete(LotteryForm).where(LotteryForm.token == token))  # type: ignore[arg-type]
    return bool(result.rowcount)


async def answer(session: AsyncSession, token: str, *, now: datetime, **values: object) -> None:
    """Record answers (prize, winners, draw) on the form, if it is still open."""
    await session.execute(
        update(LotteryForm)
        .where(LotteryForm.token == token, LotteryForm.expires_at > now)  # type: ignore[arg-type]
        .values(**values)
    )
