"""KPIs and digests: /stats (anyone), /kpi, /settarget, /targets and /digest (operators)."""

from __future__ import annotations

import re
from datetime import date, timedelta

from telegram import Update
from telegram.ext import Application, CommandHandler

from bot import invites
from bot.commands import Audience, CommandSpec
from bot.db import upsert
from bot.digest import (
    DESTINATIONS,
    WEEKDAYS,
    DigestSchedule,
    build_report,
    format_value,
    highlights,
    kpi_lines,
    metric_label,
    parse_hhmm,
    parse_weekday,
)
from bot.i18n import t
from bot.kpi import (
    achievement,
    clear_target,
    daily_kpis,
    day_snapshot,
    feature_metric_names,
    feature_metrics,
    known_metrics,
    local_today,
    parse_target,
    set_target,
    targets,
    top_contributors,
)
from bot.services import BotContext
from bot.text import escape
from bot.timeparse import parse_date
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import Target, group_info, is_group, operator_command, reply, user_language
from schedules import digest as digest_jobs

FEATURE = "kpi"
COMMANDS = [
    CommandSpec("stats", Audience.MEMBER, FEATURE),
    CommandSpec("kpi", Audience.OPERATOR, FEATURE),
    CommandSpec("settarget", Audience.OPERATOR, FEATURE),
    CommandSpec("targets", Audience.OPERATOR, FEATURE),
    CommandSpec("digest", Audience.OPERATOR, FEATURE),
]
MAX_PERIOD_DAYS = 366
_DAYS = re.compile(r"^(\d{1,3})\s*(d|days?|天)$", re.IGNORECASE)


async def stats(update: Update, context: BotContext) -> None:
    """/stats: today so far — messages, active members, check-ins, new members."""
    if not is_group(update):
        await reply(update, t(await user_language(update, context), "kpi.stats_in_group"))
        return
    info = await group_info(update, context)
    services = context.services
    await services.activity.flush()
    today = local_today(services.clock(), info.timezone)
    async with services.hot(write=False) as session:
        (row,) = await daily_kpis(session, info.id, today, today, today=today, tz=info.timezone)
    text = t(
        info.language,
        "kpi.stats",
        group=escape(info.title),
        date=today.isoformat(),
        messages=f"{row.messages:,}",
        active=f"{row.dau:,}",
        checkins=f"{row.checkins:,}",
        joins=f"{row.joins:,}",
    )
    if row.partial:
        text += "\n" + t(info.language, "kpi.partial_note")
    await reply(update, text)


def parse_period(args: list[str], today: date) -> tuple[date, date] | None:
    """`7d`/`30d`/`N d` (the last N complete days), `D1..D2` or `D1 D2`; default 7 days."""
    words = " ".join(args).strip()
    if not words:
        words = "7d"
    match = _DAYS.match(words)
    if match:
        days = int(match.group(1))
        if not 1 <= days <= MAX_PERIOD_DAYS:
            return None
        return today - timedelta(days=days), today - timedelta(days=1)
    parts = [p for p in re.split(r"\s*(?:\.\.|–|—|~|\s)\s*", words) if p]
    if len(parts) != 2:
        return None
    start, end = parse_date(parts[0]), parse_date(parts[1])
    if start is None or end is None or start > end or end > today:
        return None
    if (end - start).days + 1 > MAX_PERIOD_DAYS:
        return None
    return start, end


@operator_command
async def kpi(update: Update, context: BotContext, target: Target) -> None:
    """/kpi [7d|30d|D1..D2]: the KPI table of a period against the previous equal period."""
    info, lang = target.chat, target.lang
    services = context.services
    await services.activity.flush()
    today = local_today(services.clock(), info.timezone)
    period = parse_period(list(context.args or ()), today)
    if period is None:
        await reply(update, t(lang, "kpi.kpi_usage"))
        return
    start, end = period
    length = (end - start).days + 1
    async with services.db() as session:
        report = await build_report(
            session, info.id, "period", start, end, today=today, tz=info.timezone
        )
        top = await top_contributors(session, info.id, start, end, 5)
        sources = await invites.source_lines(session, info.id, start, end, today, lang)
    previous = report.comparisons[0][1]
    lines = [
        t(
            lang,
            "kpi.kpi_title",
            group=escape(info.title),
            start=start.isoformat(),
            end=end.isoformat(),
            days=length,
            pstart=previous.start.isoformat(),
            pend=previous.end.isoformat(),
        ),
        f"💡 {escape(highlights(report, lang))}",
        "",
        *kpi_lines(report, lang),
    ]
    if top:
        lines += ["", f"🏆 <b>{t(lang, 'kpi.section.contributors')}</b>"]
        lines += [
            t(lang, "kpi.contributor", rank=i, name=escape(c.name), count=c.messages)
            for i, c in enumerate(top, 1)
        ]
    if sources:
        lines += ["", *sources]
    if length > 1:
        lines += ["", f"<i>{t(lang, 'kpi.period_note')}</i>"]
    if report.current.partial:
        lines += [t(lang, "kpi.partial_note")]
    await reply(update, "\n".join(lines))


@operator_command
async def settarget(update: Update, context: BotContext, target: Target) -> None:
    """/settarget METRIC VALUE (or `off`): a goal every report measures against."""
    args, lang = list(context.args or ()), target.lang
    usage = t(lang, "kpi.settarget_usage", metrics=", ".join(known_metrics()))
    if len(args) != 2:
        await reply(update, usage)
        return
    services = context.services
    metric = args[0].lower()
    if args[1].lower() in ("off", "none", "clear", "0"):
        if metric not in known_metrics():
            await reply(update, usage)
            return
        async with services.db.begin() as session:
            removed = await clear_target(session, target.chat_id, metric)
        key = "kpi.target_cleared" if removed else "kpi.target_none"
        await reply(update, t(lang, key, metric=metric_label(metric, lang)))
        return
    parsed = parse_target(metric, args[1])
    if parsed is None:
        await reply(update, t(lang, "kpi.target_invalid", value=escape(args[1])) + "\n" + usage)
        return
    metric, value = parsed
    async with services.db.begin() as session:
        await set_target(
            session, target.chat_id, metric, value, by=target.user_id, now=services.clock()
        )
    await reply(
        update,
        t(
            lang,
            "kpi.target_set",
            metric=metric_label(metric, lang),
            value=format_value(metric, value, lang),
        ),
    )


@operator_command
async def targets_command(update: Update, context: BotContext, target: Target) -> None:
    """/targets: the goals set, with yesterday's achievement (实际 / 目标)."""
    info, lang = target.chat, target.lang
    services = context.services
    today = local_today(services.clock(), info.timezone)
    yesterday = today - timedelta(days=1)
    async with services.db() as session:  # (replies go out after it: it holds a connection)
        goals = await targets(session, info.id)
        if goals:
            snapshot = await day_snapshot(
                session, info.id, yesterday, today=today, tz=info.timezone
            )
            if any(metric in feature_metric_names() for metric in goals):
                snapshot.values.update(
                    await feature_metrics(session, info.id, yesterday, yesterday, info.timezone)
                )
    if not goals:
        await reply(update, t(lang, "kpi.targets_none"))
        return
    lines = [t(lang, "kpi.targets_title", group=escape(info.title), day=yesterday.isoformat())]
    for metric, goal in goals.items():
        actual = snapshot.get(metric)
        reached = achievement(actual, goal)
        lines.append(
            t(
                lang,
                "kpi.target_line",
                metric=metric_label(metric, lang),
                target=format_value(metric, goal, lang),
                actual=format_value(metric, actual, lang),
                percent="—" if reached is None else f"{reached * 100:.0f}%",
            )
        )
    await reply(update, "\n".join(lines))


# --- /digest ------------------------------------------------------------------------------


async def _save_schedule(context: BotContext, chat_id: int, **values: object) -> DigestSchedule:
    services = context.services
    now = services.clock()
    table = DigestSchedule.__table__  # type: ignore[attr-defined]
    async with services.db.begin() as session:
        await upsert(
            session,
            table,
            [{"chat_id": chat_id, "updated_at": now, **values}],
            key=("chat_id",),
            update=lambda new: {"updated_at": new.updated_at, **{k: new[k] for k in values}},
        )
        schedule = await session.get(DigestSchedule, chat_id, populate_existing=True)
    assert schedule is not None
    await digest_jobs.reschedule(context.application, chat_id)
    return schedule


def _destination_text(lang: str, schedule: DigestSchedule | None) -> str:
    where = schedule.destination if schedule else "here"
    log_chat = schedule.log_chat_id if schedule else None
    return t(lang, f"kpi.destination.{where}", log=log_chat or "?")


def _status(lang: str, schedule: DigestSchedule | None, zone: str) -> str:
    daily = schedule.daily_at if schedule else None
    weekly = (
        f"{t(lang, f'kpi.weekday.{schedule.weekly_day}')} {schedule.weekly_at}"
        if schedule and schedule.weekly_at and schedule.weekly_day is not None
        else None
    )
    return t(
        lang,
        "kpi.digest_status",
        daily=daily or t(lang, "kpi.off"),
        weekly=weekly or t(lang, "kpi.off"),
        zone=zone,
        destination=_destination_text(lang, schedule),
    )


@operator_command
async def digest(update: Update, context: BotContext, target: Target) -> None:
    """/digest HH:MM | now | off | here|private|log [CHAT] | weekly DAY HH:MM | weekly off."""
    args = [a.lower() for a in context.args or ()]
    info, lang = target.chat, target.lang
    services = context.services
    zone = info.timezone.key
    usage = t(lang, "kpi.digest_usage")
    async with services.db() as session:
        current = await session.get(DigestSchedule, info.id)
    if not args:
        await reply(update, _status(lang, current, zone) + "\n\n" + usage)
        return
    command = args[0]
    if command == "now":
        today = local_today(services.clock(), info.timezone)
        try:
            await digest_jobs.deliver(
                context.bot, services, info.id, "daily", today - timedelta(days=1)
            )
        except digest_jobs.Undeliverable:
            await reply(update, t(lang, "kpi.digest_failed"))
            return
        if (current.destination if current else "here") != "here" or target.private:
            await reply(
                update, t(lang, "kpi.digest_sent", destination=_destination_text(lang, current))
            )
        return
    if command == "off" and len(args) == 1:
        await _save_schedule(context, info.id, daily_at=None, weekly_at=None, weekly_day=None)
        await reply(update, t(lang, "kpi.digest_off"))
        return
    if command in DESTINATIONS:
        await _set_destination(update, context, target, command, args[1:], current)
        return
    if command == "weekly":
        await _set_weekly(update, context, target, args[1:])
        return
    at = parse_hhmm(command) if len(args) == 1 else None
    if at is None:
        await reply(update, t(lang, "kpi.digest_bad", value=escape(" ".join(args))) + "\n" + usage)
        return
    schedule = await _save_schedule(context, info.id, daily_at=at.strftime("%H:%M"))
    await reply(
        update,
        t(
            lang,
            "kpi.digest_daily_set",
            time=schedule.daily_at,
            zone=zone,
            destination=_destination_text(lang, schedule),
        ),
    )


async def _set_destination(
    update: Update,
    context: BotContext,
    target: Target,
    where: str,
    rest: list[str],
    current: DigestSchedule | None,
) -> None:
    lang = target.lang
    values: dict[str, object] = {"destination": where}
    if where == "log":
        if rest:
            try:
                values["log_chat_id"] = int(rest[0])
            except ValueError:
                await reply(update, t(lang, "kpi.digest_log_usage"))
                return
        elif current is None or current.log_chat_id is None:
            await reply(update, t(lang, "kpi.digest_log_usage"))
            return
    schedule = await _save_schedule(context, target.chat_id, **values)
    await reply(
        update,
        t(lang, "kpi.digest_destination_set", destination=_destination_text(lang, schedule)),
    )


async def _set_weekly(
    update: Update, context: BotContext, target: Target, rest: list[str]
) -> None:
    lang = target.lang
    if rest == ["off"]:
        await _save_schedule(context, target.chat_id, weekly_at=None, weekly_day=None)
        await reply(update, t(lang, "kpi.digest_weekly_off"))
        return
    day = parse_weekday(rest[0]) if len(rest) == 2 else None
    at = parse_hhmm(rest[1]) if len(rest) == 2 else None
    if day is None or at is None:
        await reply(update, t(lang, "kpi.digest_weekly_usage", days=" ".join(WEEKDAYS)))
        return
    schedule = await _save_schedule(
        context, target.chat_id, weekly_day=day, weekly_at=at.strftime("%H:%M")
    )
    await reply(
        update,
        t(
            lang,
            "kpi.digest_weekly_set",
            weekday=t(lang, f"kpi.weekday.{day}"),
            time=schedule.weekly_at,
            zone=target.chat.timezone.key,
            destination=_destination_text(lang, schedule),
        ),
    )


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("stats", stats),
            CommandHandler("kpi", kpi),
            CommandHandler("settarget", settarget),
            CommandHandler("targets", targets_command),
            CommandHandler("digest", digest),
        ],
        group=COMMAND_GROUP,
    )


__all__ = ["COMMANDS", "parse_period", "register"]
