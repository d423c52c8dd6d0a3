"""The content calendar's KPIs and digest section: posts sent, failed and missed.

Counted from the delivery records (`calendar_delivery`, one row per planned send of a post to
a group), each on the chat-local day it was *due* (a post due at 23:50 and sent late at 00:10
counts on the day it was planned for), by the state it has now:

- sent: `sent` (also when an operator sent it later with /postnow);
- failed: `failed` (Telegram refused it, or every retry failed) and `unknown` (Telegram did
  not answer, or the process stopped mid-send: it may not be in the group);
- missed: `missed` (the bot was down past the post's grace) and `held` (it needed approval
  and had none at its time).

Skipped (/skip, /pause, rejected) and cancelled deliveries were operators' decisions and are
not counted; pending and sending ones are not settled yet. Registered through bot.schema.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import calendar as cal
from bot.calendar_file import PostSpec
from bot.digest import DigestContext, register_section
from bot.i18n import t
from bot.kpi import FeatureValue, register_metrics, utc_bounds
from bot.text import escape

OUTCOMES = {
    cal.SENT: "content_sent",
    cal.FAILED: "content_failed",
    cal.UNKNOWN: "content_failed",
    cal.MISSED: "content_missed",
    cal.HELD: "content_missed",
}
METRICS = ("content_sent", "content_failed", "content_missed")
NOT_SENT = [state for state, metric in OUTCOMES.items() if metric != "content_sent"]
LISTED = 10  # failed / missed posts named in a digest section, each kind


def _in_period(chat_id: int, start: date, end: date, tz: ZoneInfo) -> list[object]:
    low, high = utc_bounds(start, end, tz)
    return [
        cal.CalendarDelivery.chat_id == chat_id,
        cal.CalendarDelivery.due_at >= low,
        cal.CalendarDelivery.due_at < high,
    ]


async def content_metrics(
    session: AsyncSession, chat_id: int, start: date, end: date, tz: ZoneInfo
) -> dict[str, FeatureValue]:
    """content_sent / content_failed / content_missed of the days start..end."""
    rows = await session.execute(
        select(cal.CalendarDelivery.state, func.count())
        .where(
            *_in_period(chat_id, start, end, tz), cal.CalendarDelivery.state.in_(list(OUTCOMES))
        )
        .group_by(cal.CalendarDelivery.state)
    )
    values: dict[str, FeatureValue] = dict.fromkeys(METRICS, 0)
    for state, count in rows:
        values[OUTCOMES[state]] += int(count)  # type: ignore[operator]
    return values


async def content_section(ctx: DigestContext) -> list[str]:
    """Sent / failed / missed counts, and which posts failed or were missed (key, time, what,
    why), so operators can /postnow or fix them."""
    values = await content_metrics(ctx.session, ctx.chat_id, ctx.start, ctx.end, ctx.tz)
    if not any(values.values()):
        return []
    lang = ctx.lang
    lines = [
        "🗓 <b>"
        + t(lang, "kpi.section.content")
        + "</b>: "
        + t(
            lang,
            "kpi.content.counts",
            sent=values["content_sent"],
            failed=values["content_failed"],
            missed=values["content_missed"],
        )
    ]
    rows = (
        await ctx.session.execute(
            select(cal.CalendarDelivery, cal.CalendarPost)
            .join(cal.CalendarPost, cal.CalendarPost.id == cal.CalendarDelivery.post_id)
            .where(
                *_in_period(ctx.chat_id, ctx.start, ctx.end, ctx.tz),
                cal.CalendarDelivery.state.in_(NOT_SENT),
            )
            .order_by(cal.CalendarDelivery.due_at, cal.CalendarDelivery.id)
        )
    ).all()
    for metric in METRICS[1:]:
        found = [(d, p) for d, p in rows if OUTCOMES[d.state] == metric]
        for delivery, post in found[:LISTED]:
            when = delivery.due_at.astimezone(ctx.tz)
            lines.append(
                t(
                    lang,
                    f"kpi.content.{metric}",
                    key=escape(post.key),
                    time=when.strftime("%H:%M" if ctx.start == ctx.end else "%m-%d %H:%M"),
                    summary=escape(PostSpec.from_json(post.spec).summary()),
                    number=delivery.id,
                    state=t(lang, f"kpi.content.state.{delivery.state}"),
                    reason=escape((delivery.error or "").strip()[:120]),
                )
            )
        if len(found) > LISTED:
            lines.append(t(lang, "kpi.and_more_items", count=len(found) - LISTED))
    return lines


register_metrics("content", METRICS, content_metrics, ceilings=METRICS[1:])
register_section("content", content_section)
