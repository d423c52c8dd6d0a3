"""Lottery posts in the content calendar: the lotteries feature's `lottery` post kind.

A calendar lottery is the lottery /lottery makes: created with a fresh secret seed, posted with
its Join button, entrant count and commitment, and drawn `draw_after` after it went out (the
`lottery:<id>` job of schedules/lottery.py, which also catches up after downtime). The same
conditions as /lottery may be set: min_points, checkins K/D, member, joined_after, keyword.

Exactly once: the lottery row carries the calendar delivery it was created for (UNIQUE), and is
created before the post, in its own transaction, as a reservation. A delivery that is tried
again finds its lottery: posted already → that message is the answer; not posted yet → the same
lottery is posted. So a retry, /postnow after an interrupted send, or two processes never make
two lotteries for one delivery. When Telegram refuses the post, the lottery nobody saw is
withdrawn (deleted) and a later attempt starts afresh; when Telegram does not answer (TimedOut)
it may be in the group, so the lottery stays open and draws at its time.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from telegram.error import TimedOut

from bot.lottery import (
    LOTTERY,
    MAX_CHECKIN_DAYS,
    MAX_HORIZON,
    MAX_KEYWORD,
    MAX_MIN_POINTS,
    MAX_PRIZE,
    MAX_WINNERS,
    MIN_LEAD,
    Conditions,
    Lottery,
    LotterySpec,
    State,
    create_lottery,
    normalize_keyword,
    set_message,
)
from bot.post_kinds import Invalid, Outgoing, PostKind, register_post_kind
from bot.timeparse import format_duration, local_to_utc
from schedules.lottery import (
    AnyApp,
    chat_settings,
    post_keyboard,
    render_post,
    runtime_of,
    schedule_draw,
    unschedule_draw,
)

log = logging.getLogger(__name__)

MAX_MEMBER = MAX_HORIZON * 10  # as /lottery's `member 30d`


def _prize(content: dict[str, Any]) -> str:
    return " ".join(str(content.get("prize") or "").split())


def validate(content: dict[str, Any]) -> list[str | Invalid]:
    """The lotteries feature's limits (those of /lottery), each placed at its key."""
    found: list[str | Invalid] = []
    prize = _prize(content)
    if not prize:
        found.append(Invalid("prize: is required", "prize"))
    elif len(prize) > MAX_PRIZE:
        found.append(Invalid(f"prize is too long: at most {MAX_PRIZE} characters", "prize"))
    if not 1 <= content.get("winners", 1) <= MAX_WINNERS:
        found.append(Invalid(f"winners: from 1 to {MAX_WINNERS}", "winners"))
    draw_after = timedelta(seconds=content.get("draw_after", MIN_LEAD.total_seconds()))
    if not MIN_LEAD <= draw_after <= MAX_HORIZON:
        found.append(
            Invalid(
                f"draw_after: from {format_duration(MIN_LEAD)} to {MAX_HORIZON.days} days",
                "draw_after",
            )
        )
    points = content.get("min_points")
    if points is not None and not 1 <= points <= MAX_MIN_POINTS:
        found.append(Invalid(f"min_points: from 1 to {MAX_MIN_POINTS}", "min_points"))
    if "checkins" in content:
        needed, days = content["checkins"]
        if not 1 <= days <= MAX_CHECKIN_DAYS or not 1 <= needed <= days:
            found.append(
                Invalid(
                    f"checkins: {needed}/{days} doesn't fit: K of the last D days, "
                    f"1 ≤ K ≤ D ≤ {MAX_CHECKIN_DAYS}",
                    "checkins",
                )
            )
    if content.get("member", 0) > MAX_MEMBER.total_seconds():
        found.append(Invalid(f"member: at most {MAX_MEMBER.days} days", "member"))
    if "keyword" in content:
        word = normalize_keyword(content["keyword"])
        if not word or word.startswith("/") or len(word) > MAX_KEYWORD:
            found.append(
                Invalid(f"keyword: 1 to {MAX_KEYWORD} characters, not starting with /", "keyword")
            )
    return found


def lottery_spec(content: dict[str, Any], *, now: datetime, tz: ZoneInfo) -> LotterySpec:
    """The lottery to open now; `joined_after` is a date in the post's time zone."""
    checkins = content.get("checkins")
    member = content.get("member")
    joined_day = date.fromisoformat(content["joined_after"]) if "joined_after" in content else None
    keyword = content.get("keyword")
    return LotterySpec(
        prize=_prize(content),
        winners=content["winners"],
        draw_at=now + timedelta(seconds=content["draw_after"]),
        conditions=Conditions(
            min_points=content.get("min_points"),
            checkins=(checkins[0], checkins[1]) if checkins else None,
            member_for=timedelta(seconds=member) if member else None,
            joined_after=local_to_utc(joined_day, time(0, 0), tz) if joined_day else None,
            joined_after_day=joined_day,
        ),
        keyword=normalize_keyword(keyword) if keyword else None,
    )


def summary(content: dict[str, Any]) -> str:
    """One line (plain text): `lottery: Prize (3 winners, draws 2d after posting; …)`."""
    winners = content["winners"]
    after = format_duration(timedelta(seconds=content["draw_after"]))
    parts = [f"{winners} winner{'s' if winners != 1 else ''}", f"draws {after} after posting"]
    conditions = []
    if content.get("min_points"):
        conditions.append(f"min {content['min_points']} points")
    if content.get("checkins"):
        conditions.append("check-ins {}/{}".format(*content["checkins"]))
    if content.get("member"):
        conditions.append(f"member {format_duration(timedelta(seconds=content['member']))}")
    if content.get("joined_after"):
        conditions.append(f"joined after {content['joined_after']}")
    if content.get("keyword"):
        conditions.append(f"keyword {normalize_keyword(content['keyword'])}")
    text = ", ".join(parts) + ("; " + ", ".join(conditions) if conditions else "")
    return f"lottery: {_prize(content)} ({text})"


async def lottery_of_delivery(session: AsyncSession, delivery_id: int) -> Lottery | None:
    return await session.scalar(
        select(Lottery)
        .where(LOTTERY.c.calendar_delivery_id == delivery_id)
        .execution_options(populate_existing=True)
    )


async def _reserve(out: Outgoing, delivery_id: int) -> Lottery:
    """This delivery's lottery: the one an earlier attempt created, or a new one (committed)."""
    services = out.services
    try:
        async with services.db.begin() as session:
            existing = await lottery_of_delivery(session, delivery_id)
            if existing is not None:
                return existing
            now = services.clock()
            spec = lottery_spec(out.post.content, now=now, tz=ZoneInfo(out.post.schedule.tz))
            return await create_lottery(
                session,
                chat_id=out.chat_id,
                spec=spec,
                seed=runtime_of(out.app).seed_source(),
                created_by=None,
                now=now,
                calendar_delivery_id=delivery_id,
            )
    except IntegrityError:  # another attempt at the same delivery created it just now
        async with services.db() as session:
            existing = await lottery_of_delivery(session, delivery_id)
        if existing is None:
            raise
        return existing


def _arm(app: AnyApp, lottery: Lottery, chat_id: int) -> None:
    """The draw job and the keyword, as /lottery sets them up after posting."""
    assert lottery.id is not None
    if lottery.draw_at is not None:
        schedule_draw(app, lottery.id, lottery.draw_at)
    if lottery.keyword:
        runtime_of(app).keywords.add(chat_id, lottery.keyword, lottery.id)


async def _withdraw(app: AnyApp, out: Outgoing, lottery_id: int) -> None:
    """Telegram refused the post: remove the lottery nobody saw (a retry makes a new one)."""
    async with out.services.db.begin() as session:
        await session.execute(
            delete(LOTTERY).where(
                LOTTERY.c.id == lottery_id,
                LOTTERY.c.message_id.is_(None),
                LOTTERY.c.entry_count == 0,
                LOTTERY.c.state == State.OPEN.value,
            )
        )
    unschedule_draw(app, lottery_id)
    runtime_of(app).keywords.discard(lottery_id)


async def deliver(out: Outgoing) -> int:
    """Open the lottery (once per delivery), post it with its Join button, schedule the draw."""
    if out.delivery_id is None:  # previews show the summary (preview_as_post=False)
        raise LookupError("a lottery is only posted by a calendar delivery")
    lottery = await _reserve(out, out.delivery_id)
    assert lottery.id is not None
    if lottery.message_id is not None:
        log.info("delivery %s: lottery %s was already posted", out.delivery_id, lottery.id)
        return lottery.message_id
    if lottery.state != State.OPEN:
        raise LookupError(
            f"lottery #{lottery.id} was {lottery.state} before its post went out "
            "(its draw time passed while the post was being retried)"
        )
    lang, tz = await chat_settings(out.services, out.chat_id)
    try:
        message = await out.bot.send_message(
            out.chat_id,
            render_post(lottery, lang, tz),
            reply_markup=post_keyboard(lottery, lang),
            disable_notification=out.post.silent,
        )
    except TimedOut:
        _arm(out.app, lottery, out.chat_id)  # it may be in the group: it draws at its time
        raise
    except Exception:
        await _withdraw(out.app, out, lottery.id)
        raise
    async with out.services.db.begin() as session:
        await set_message(session, lottery.id, message.message_id)
    _arm(out.app, lottery, message.chat_id)
    log.info("delivery %s: lottery %s posted", out.delivery_id, lottery.id)
    return message.message_id


register_post_kind(
    PostKind(
        "lottery",
        summary,
        deliver,
        preview_as_post=False,  # a preview would be a real lottery: reviewers see the summary
        validate=validate,
        feature="lotteries",
    )
)
