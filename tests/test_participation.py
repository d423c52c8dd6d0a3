"""mark_participation: the roster row and the day's flag, in two upserts (bot/activity.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from bot.activity import mark_participation
from bot.models import ChatDay, DailyActivity, Member
from tests.conftest import both_databases

CHAT = -1001000000077
T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
DAY = date(2026, 11, 3)


async def mark(tg, kind: str, when: datetime, name: str = "Ann", username: str | None = None):
    async with tg.services.db.begin() as session:
        await mark_participation(
            session,
            chat_id=CHAT,
            user_id=5,
            name=name,
            username=username,
            when=when,
            day=DAY,
            kind=kind,
        )


@both_databases
async def test_roster_and_flags(tg):
    await tg.services.chats.ensure(CHAT, type="supergroup", title="G")
    await mark(tg, "checked_in", T0)
    await mark(tg, "poll_answered", T0 - timedelta(hours=1), name="Ann B", username="annb")
    await mark(tg, "checked_in", T0 + timedelta(minutes=5))  # again: idempotent
    async with tg.db() as session:
        member = await session.get(Member, (CHAT, 5))
        row = await session.get(DailyActivity, (CHAT, 5, DAY))
        totals = (
            await session.execute(select(ChatDay).where(ChatDay.chat_id == CHAT))
        ).scalar_one()
    assert (member.display_name, member.username, member.status) == ("Ann", None, "member")
    assert member.first_seen == T0  # the roster row is made once, by the first event
    assert member.last_active == T0 + timedelta(minutes=5)  # never moved back by the older one
    assert (row.messages, row.checked_in, row.poll_answered, row.lottery_entered) == (
        0,
        True,
        True,
        False,
    )
    assert (totals.checkins, totals.participants, totals.active, totals.messages) == (1, 1, 1, 0)
