"""The polls feature's KPIs and digest section: polls closed and their turnout.

A poll counts on the chat-local day it was closed; a survey counts once (as one poll), on the
day it was closed. Turnout follows the polls feature's definition (README "Polls and
surveys"): voters ÷ the members active (DESIGN §4) on any day from the day the poll was posted
to the day it closed, both included, never fewer than the voters; a survey's voters are the
members who answered at least one of its questions. Over a period, turnout pools the polls
closed in it: Σ voters ÷ Σ active members (so a big poll weighs more than a small one); None
when no poll closed. Reports are made after the closing day is over, so the active members of
the whole closing day count (the summary posted at closing time counted those seen so far).
Registered through bot.schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.digest import DigestContext, register_section
from bot.i18n import t
from bot.kpi import FeatureValue, ratio, register_metrics, utc_bounds
from bot.polls import (
    Poll,
    Survey,
    active_members,
    counts_of,
    percent,
    period_days,
    poll_options,
    survey_result,
)
from bot.text import escape

LISTED = 10  # polls named in a digest section


@dataclass(frozen=True, slots=True)
class ClosedPoll:
    """A poll or survey closed in the period, with its turnout's parts."""

    title: str
    survey: bool
    closed_at: datetime
    voters: int
    active: int  # never fewer than the voters


async def closed_polls(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> list[ClosedPoll]:
    """Polls (outside surveys) and surveys closed on the days start..end, oldest first."""
    low, high = utc_bounds(start, end, tz)
    found: list[ClosedPoll] = []
    polls = await session.scalars(
        select(Poll).where(
            Poll.chat_id == chat_id,
            Poll.survey_id.is_(None),
            Poll.state == "closed",
            Poll.closed_at >= low,
            Poll.closed_at < high,
        )
    )
    for poll in polls:
        assert poll.closed_at is not None
        voters = poll.total_voters  # Telegram's count; else the recorded votes
        if voters is None:
            _, voters = await counts_of(session, poll, await poll_options(session, poll.id))  # type: ignore[arg-type]
        first, last = period_days(poll.created_at, poll.closed_at, tz)
        active = max(await active_members(session, chat_id, first, last), voters)
        found.append(ClosedPoll(poll.question, False, poll.closed_at, voters, active))
    surveys = await session.scalars(
        select(Survey).where(
            Survey.chat_id == chat_id,
            Survey.state == "closed",
            Survey.closed_at >= low,
            Survey.closed_at < high,
        )
    )
    for survey in surveys:
        assert survey.closed_at is not None
        result = await survey_result(session, survey, tz=tz, until=survey.closed_at)
        found.append(
            ClosedPoll(survey.title, True, survey.closed_at, result.respondents, result.active)
        )
    found.sort(key=lambda p: p.closed_at)
    return found


async def poll_metrics(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> dict[str, FeatureValue]:
    """polls_closed and poll_turnout (pooled) of the days start..end."""
    closed = await closed_polls(session, chat_id, start, end, tz)
    active = sum(p.active for p in closed)
    return {
        "polls_closed": len(closed),
        "poll_turnout": ratio(sum(p.voters for p in closed), active) if active else None,
    }


async def polls_section(ctx: DigestContext) -> list[str]:
    """Each poll closed in the period with its voters and turnout (questions escaped)."""
    closed = await closed_polls(ctx.session, ctx.chat_id, ctx.start, ctx.end, ctx.tz)
    if not closed:
        return []
    lang = ctx.lang
    lines = [f"🗳 <b>{t(lang, 'kpi.polls.title', count=len(closed))}</b>"]
    for poll in closed[:LISTED]:
        lines.append(
            t(
                lang,
                "kpi.polls.survey_line" if poll.survey else "kpi.polls.line",
                title=escape(poll.title),
                voters=poll.voters,
                active=poll.active,
                percent=percent(poll.voters, poll.active),
            )
        )
    if len(closed) > LISTED:
        lines.append(t(lang, "kpi.and_more_items", count=len(closed) - LISTED))
    return lines


register_metrics("polls", ("polls_closed", "poll_turnout"), poll_metrics, ratios=["poll_turnout"])
register_section("polls", polls_section)
