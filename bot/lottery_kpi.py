"""The lotteries feature's KPIs and digest section: entries and draws.

- lottery_entries(D): entries (one per member and lottery) made on chat-local day D, in any of
  the group's lotteries — the same moments that mark the member's participation that day;
- lotteries_drawn(D): the group's lotteries drawn on D (the draw's claim; cancelled lotteries
  are never drawn).

The digest section lists the lotteries drawn in the period: prize, entrants and winners (names
escaped; rerolled winners included). Registered through bot.schema.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.digest import DigestContext, register_section
from bot.i18n import t
from bot.kpi import FeatureValue, register_metrics, utc_bounds
from bot.lottery import ENTRY, LOTTERY, State, load_outcome
from bot.text import escape

LISTED = 10  # lotteries named in a digest section
WINNERS_LISTED = 10  # winners named per lottery

DRAWN = (State.DRAWING.value, State.DRAWN.value)


async def lottery_metrics(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> dict[str, FeatureValue]:
    low, high = utc_bounds(start, end, tz)
    entries = await session.scalar(
        select(func.count())
        .select_from(ENTRY.join(LOTTERY, LOTTERY.c.id == ENTRY.c.lottery_id))
        .where(
            LOTTERY.c.chat_id == chat_id,
            ENTRY.c.entered_at >= low,
            ENTRY.c.entered_at < high,
        )
    )
    drawn = await session.scalar(select(func.count()).where(*_drawn_in(chat_id, start, end, tz)))
    return {"lottery_entries": int(entries or 0), "lotteries_drawn": int(drawn or 0)}


def _drawn_in(chat_id: int, start: date, end: date, tz: ZoneInfo) -> list[object]:
    low, high = utc_bounds(start, end, tz)
    return [
        LOTTERY.c.chat_id == chat_id,
        LOTTERY.c.state.in_(DRAWN),
        LOTTERY.c.drawn_at >= low,
        LOTTERY.c.drawn_at < high,
    ]


async def lotteries_section(ctx: DigestContext) -> list[str]:
    """Lotteries drawn in the period: prize, entrants, winners (escaped)."""
    ids = list(
        await ctx.session.scalars(
            select(LOTTERY.c.id)
            .where(*_drawn_in(ctx.chat_id, ctx.start, ctx.end, ctx.tz))
            .order_by(LOTTERY.c.drawn_at, LOTTERY.c.id)
        )
    )
    if not ids:
        return []
    lang = ctx.lang
    lines = [f"🎁 <b>{t(lang, 'kpi.lotteries.title', count=len(ids))}</b>"]
    for lottery_id in ids[:LISTED]:
        outcome = await load_outcome(ctx.session, lottery_id)
        assert outcome is not None
        names = [escape(p.name or str(p.user_id)) for p in outcome.winners]
        shown = ", ".join(names[:WINNERS_LISTED])
        if len(names) > WINNERS_LISTED:
            shown += " " + t(lang, "kpi.and_more", count=len(names) - WINNERS_LISTED)
        lines.append(
            t(
                lang,
                "kpi.lotteries.line",
                id=lottery_id,
                prize=escape(outcome.lottery.prize),
                entrants=outcome.entrants,
                winners=shown or t(lang, "kpi.lotteries.nobody"),
            )
        )
    if len(ids) > LISTED:
        lines.append(t(lang, "kpi.and_more_items", count=len(ids) - LISTED))
    return lines


register_metrics("lotteries", ("lottery_entries", "lotteries_drawn"), lottery_metrics)
register_section("lotteries", lotteries_section)
