"""Who is drifting and when the group is awake: /segment and /heatmap (operators)."""

from __future__ import annotations

from datetime import timedelta

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import Application, CommandHandler

from bot import heatmap as heat
from bot import segments as seg
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.kpi import local_today
from bot.sending import send_text
from bot.services import BotContext
from bot.text import MAX_CAPTION_UTF16, escape, utf16_len
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import Target, operator_command, reply

FEATURE = "segments"
COMMANDS = [
    CommandSpec("segment", Audience.OPERATOR, FEATURE),
    CommandSpec("heatmap", Audience.OPERATOR, FEATURE),
]
MAX_LISTED = 300  # members listed by /segment NAME (a few messages); the rest are counted
SETTING_EXAMPLES = {"new_days": 7, "core_days": 4, "core_window": 7, "casual_days": 14}


@operator_command
async def segment(update: Update, context: BotContext, target: Target) -> None:
    """/segment [NAME | set KEY N | reset]: counts, one segment's members, or thresholds."""
    args = [a.lower() for a in context.args or ()]
    named = seg.parse_segment(args[0]) if len(args) == 1 else None
    if not args:
        await _overview(update, context, target)
    elif args[0] in ("set", "设置") and len(args) == 3:
        await _set(update, context, target, args[1], args[2])
    elif args in (["reset"], ["重置"]):
        async with context.services.db.begin() as session:
            await seg.save_thresholds(
                session, target.chat_id, seg.DEFAULTS, now=context.services.clock()
            )
        await reply(update, t(target.lang, "segments.reset"))
    elif named is not None:
        await _list(update, context, target, named)
    elif len(args) == 1 and args[0] not in ("set", "设置"):
        await reply(
            update,
            t(target.lang, "segments.bad_name", value=escape(args[0]))
            + "\n\n"
            + t(target.lang, "segments.usage"),
        )
    else:
        await reply(update, t(target.lang, "segments.usage"))


async def _overview(update: Update, context: BotContext, target: Target) -> None:
    info, lang = target.chat, target.lang
    services = context.services
    await services.activity.flush()
    today = local_today(services.clock(), info.timezone)
    before = today - timedelta(days=7)
    async with services.db() as session:
        limits = await seg.thresholds(session, info.id)
        placed = await seg.segment_members(
            session, info.id, (today, before), tz=info.timezone, today=today, limits=limits
        )
    now, then = placed[today].counts(), placed[before].counts()
    lines = [
        t(
            lang,
            "segments.overview_title",
            group=escape(info.title or str(info.id)),
            date=today.isoformat(),
            before=before.isoformat(),
        )
    ]
    for name in seg.SEGMENTS:
        lines.append(
            t(
                lang,
                "segments.overview_line",
                name=t(lang, f"segments.name.{name}"),
                count=now[name],
                change=f"({seg.movement(now[name], then[name])})",
            )
        )
    lines += ["", t(lang, "segments.rules_title"), seg.rules_text(lang, limits), ""]
    lines.append(t(lang, "segments.overview_hint"))
    await reply(update, "\n".join(lines))


async def _list(update: Update, context: BotContext, target: Target, name: str) -> None:
    info, lang = target.chat, target.lang
    services = context.services
    await services.activity.flush()
    today = local_today(services.clock(), info.timezone)
    async with services.db() as session:
        placed = await seg.segment_members(
            session, info.id, (today,), tz=info.timezone, today=today
        )
    members = placed[today].of(name)
    label = t(lang, f"segments.name.{name}")
    if not members:
        await reply(update, t(lang, "segments.list_none", name=label))
        return
    lines = [
        t(
            lang,
            "segments.list_title",
            name=label,
            group=escape(info.title or str(info.id)),
            date=today.isoformat(),
            count=len(members),
        )
    ]
    for member in members[:MAX_LISTED]:
        values = {"name": escape(member.name or "?"), "id": member.user_id}
        if member.last_active is not None:
            line = t(lang, "segments.list_line", date=member.last_active.isoformat(), **values)
        elif member.joined is not None:
            line = t(lang, "segments.list_line_never", date=member.joined.isoformat(), **values)
        else:
            line = t(lang, "segments.list_line_unknown", **values)
        lines.append(line)
    if len(members) > MAX_LISTED:
        lines.append(t(lang, "segments.list_more", count=len(members) - MAX_LISTED))
    message = update.effective_message
    assert message is not None
    await send_text(context.bot, services, message.chat_id, "\n".join(lines))


async def _set(update: Update, context: BotContext, target: Target, key: str, raw: str) -> None:
    lang = target.lang
    services = context.services
    try:
        value = int(raw)
    except ValueError:
        value = -1
    async with services.db.begin() as session:
        current = await seg.thresholds(session, target.chat_id)
        changed = seg.with_setting(current, key, value)
        if isinstance(changed, seg.Thresholds):
            await seg.save_thresholds(session, target.chat_id, changed, now=services.clock())
    if changed == "unknown":
        await reply(update, t(lang, "segments.bad_setting", value=escape(key)))
    elif changed == "range":
        name = seg.SETTING_ALIASES.get(key, key)
        low, high = seg.LIMITS[name]
        short = next(k for k, v in seg.SETTING_ALIASES.items() if v == name)
        example = SETTING_EXAMPLES.get(name, 30)
        await reply(
            update,
            t(lang, "segments.bad_range", key=short, low=low, high=high, example=example),
        )
    elif changed == "core_window":
        await reply(update, t(lang, "segments.bad_core_window", window=current.core_window))
    elif changed == "casual_window":
        await reply(update, t(lang, "segments.bad_casual_window", window=current.core_window))
    else:
        assert isinstance(changed, seg.Thresholds)
        await reply(
            update,
            t(lang, "segments.saved") + "\n\n" + seg.rules_text(lang, changed),
        )


@operator_command
async def heatmap_command(update: Update, context: BotContext, target: Target) -> None:
    """/heatmap: messages by weekday × hour over the last 4 weeks, as a picture."""
    info, lang = target.chat, target.lang
    services = context.services
    await services.activity.flush()
    today = local_today(services.clock(), info.timezone)
    first, last = heat.default_window(today)
    async with services.db() as session:
        found = await heat.heatmap(session, info.id, info.timezone, first, last)
    if not found.total:
        await reply(
            update,
            t(lang, "segments.heatmap_empty", start=first.isoformat(), end=last.isoformat()),
        )
        return
    title, zone = info.title or str(info.id), info.timezone.key
    png = await heat.render_heatmap_async(heat.picture(lang, title, zone, found))
    caption = heat.caption(lang, title, zone, found)
    if not info.sees_all_messages:
        caption += "\n" + t(lang, "segments.heatmap_partial")
    if utf16_len(caption) > MAX_CAPTION_UTF16:
        caption = caption.split("\n", 1)[0]
    message = update.effective_message
    assert message is not None
    await context.bot.send_photo(
        message.chat_id, photo=png, caption=caption, parse_mode=ParseMode.HTML
    )


def register(app: Application) -> None:
    app.add_handlers(
        [CommandHandler("segment", segment), CommandHandler("heatmap", heatmap_command)],
        group=COMMAND_GROUP,
    )


__all__ = ["COMMANDS", "register"]
