"""The content calendar from the chat: /calendar, /schedule, /postnow, /skip, /pause, /resume,
and the Approve / Reject / Edit-later buttons under approval previews."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from telegram import Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot import calendar as cal
from bot.calendar_decisions import Decision, decide_as
from bot.calendar_file import PostSpec, Schedule
from bot.commands import Audience, CommandSpec
from bot.db import upsert
from bot.i18n import t
from bot.services import BotContext
from bot.text import escape
from bot.timeparse import parse_when
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import Target, operator_command, reply, user_language
from schedules import calendar as publishing

FEATURE = "calendar"
COMMANDS = [
    CommandSpec("calendar", Audience.OPERATOR, FEATURE),
    CommandSpec("schedule", Audience.OPERATOR, FEATURE),
    CommandSpec("postnow", Audience.OPERATOR, FEATURE),
    CommandSpec("skip", Audience.OPERATOR, FEATURE),
    CommandSpec("pause", Audience.OPERATOR, FEATURE),
    CommandSpec("resume", Audience.OPERATOR, FEATURE),
]
CALLBACK = re.compile(r"^cal:(ok|no|later):(\d+):([0-9a-f]{6,64})$")
DECISIONS = {"ok": "approved", "no": "rejected", "later": "later"}
MAX_PROBLEMS_SHOWN = 15


def _when(target: Target, moment: datetime) -> str:
    return moment.astimezone(target.chat.timezone).strftime("%Y-%m-%d %H:%M")


@operator_command
async def calendar_command(update: Update, context: BotContext, target: Target) -> None:
    """/calendar — the next posts here, with ids; /calendar reload — re-read the files."""
    args = [a.lower() for a in context.args or ()]
    if args and args[0] == "reload":
        await _reload(update, context, target)
        return
    if args:
        await reply(update, t(target.lang, "calendar.calendar_usage"))
        return
    services = context.services
    now = services.clock()
    async with services.db() as session:
        upcoming = await cal.upcoming(session, target.chat_id, now=now)
        attention = await cal.needing_attention(
            session, target.chat_id, since=now - timedelta(days=7)
        )
        paused = await cal.is_paused(session, target.chat_id)
    lines = [
        t(
            target.lang,
            "calendar.list_title",
            group=escape(target.chat.title),
            tz=target.chat.timezone.key,
        )
    ]
    if paused:
        lines.append(t(target.lang, "calendar.list_paused"))
    if not upcoming:
        lines.append(t(target.lang, "calendar.list_empty"))
    for delivery, post in upcoming:
        spec = PostSpec.from_json(post.spec)
        lines.append(
            t(
                target.lang,
                "calendar.list_item",
                id=delivery.id,
                when=_when(target, delivery.due_at),
                post=escape(_post_label(post)),
                summary=escape(spec.summary()),
            )
            + (t(target.lang, "calendar.list_needs_approval") if spec.approval else "")
        )
    if attention:
        lines.append("")
        lines.append(t(target.lang, "calendar.attention_title"))
        for delivery, post in attention:
            lines.append(
                t(
                    target.lang,
                    "calendar.attention_item",
                    id=delivery.id,
                    when=_when(target, delivery.due_at),
                    post=escape(_post_label(post)),
                    state=t(target.lang, f"calendar.state_{delivery.state}"),
                    error=escape(delivery.error or ""),
                )
            )
    lines.append("")
    lines.append(t(target.lang, "calendar.list_help"))
    await reply(update, "\n".join(lines))


def _post_label(post: cal.CalendarPost) -> str:
    return "/schedule" if post.key.startswith(cal.ONE_OFF_PREFIX) else post.key


async def _reload(update: Update, context: BotContext, target: Target) -> None:
    result = await publishing.reload_calendar(context.application)
    if result.problems:
        shown = [escape(str(p)) for p in result.problems[:MAX_PROBLEMS_SHOWN]]
        more = len(result.problems) - len(shown)
        text = t(target.lang, "calendar.reload_failed", count=len(result.problems))
        text += "\n" + "\n".join(f"• <code>{line}</code>" for line in shown)
        if more > 0:
            text += "\n" + t(target.lang, "calendar.reload_more", count=more)
        await reply(update, text)
        return
    sync, plan = result.sync, result.plan
    assert sync is not None and plan is not None
    text = t(
        target.lang,
        "calendar.reloaded",
        posts=result.posts,
        files=result.files,
        added=len(sync.added),
        changed=len(sync.changed),
        removed=len(sync.removed),
        planned=plan.planned,
        cancelled=plan.cancelled,
    )
    if plan.unknown_chats:
        text += "\n" + t(
            target.lang,
            "calendar.reload_unknown_chats",
            chats=", ".join(str(c) for c in sorted(plan.unknown_chats)),
        )
    await reply(update, text)


@operator_command
async def schedule_command(update: Update, context: BotContext, target: Target) -> None:
    """/schedule WHEN TEXT, or reply /schedule WHEN to a message to post a copy of it then."""
    message = update.effective_message
    assert message is not None
    services = context.services
    now = services.clock()
    words = list(context.args or ())
    parsed = parse_when(words, now=now, tz=target.chat.timezone)
    if parsed is None:
        await reply(update, t(target.lang, "calendar.schedule_usage"))
        return
    due_at, used = parsed
    if due_at <= now:
        await reply(update, t(target.lang, "calendar.schedule_past", when=_when(target, due_at)))
        return
    source = message.reply_to_message
    if source is not None and not source.forum_topic_created:
        kind = "copy"
        content = {"from_chat_id": source.chat_id, "message_id": source.message_id}
    else:
        body = _text_after(message.text or "", message.text_html or "", used + 1)
        if not body.strip():
            await reply(update, t(target.lang, "calendar.schedule_usage"))
            return
        kind, content = "text", {"text": body}
    spec = PostSpec(
        key="@once",
        targets=(target.chat_id,),
        target_names=(target.chat.title,),
        schedule=Schedule(tz="UTC", at=due_at.astimezone(UTC).replace(tzinfo=None)),
        kind=kind,
        content=content,
    )
    async with services.db.begin() as session:
        delivery = await cal.create_one_off(
            session, chat_id=target.chat_id, spec=spec, due_at=due_at, by=target.user_id, now=now
        )
    await publishing.schedule_jobs(context.application)
    await reply(
        update,
        t(
            target.lang,
            "calendar.scheduled_copy" if kind == "copy" else "calendar.scheduled",
            id=delivery.id,
            when=_when(target, due_at),
            tz=target.chat.timezone.key,
            group=escape(target.chat.title),
        ),
    )


def _text_after(plain: str, html_text: str, words: int) -> str:
    """The message after its first `words` words, formatting kept (HTML)."""
    match = re.match(rf"^\s*(?:\S+\s+){{{words}}}", plain + " ")
    if match is None:
        return ""
    prefix = plain[: match.end()] if match.end() <= len(plain) else plain
    prefix_html = escape(prefix)
    if html_text.startswith(prefix_html):
        return html_text[len(prefix_html) :]
    return escape(plain[len(prefix) :])  # formatting started inside the command: keep the words


@operator_command
async def postnow_command(update: Update, context: BotContext, target: Target) -> None:
    """/postnow ID — send one now; it counts as that occurrence."""
    ref = (context.args or [""])[0]
    if not ref:
        await reply(update, t(target.lang, "calendar.postnow_usage"))
        return
    services = context.services
    async with services.db.begin() as session:
        delivery = await cal.find_delivery(
            session, target.chat_id, ref, states=cal.SENDABLE_BY_HAND
        )
        if delivery is None and not ref.lstrip("#").isdigit():
            delivery = await _plan_next(session, target.chat_id, ref, now=services.clock())
    if delivery is None:
        await reply(update, t(target.lang, "calendar.not_found", ref=escape(ref)))
        return
    publishing.drop_job(context.application, f"delivery:{delivery.id}")
    state = await publishing.run_delivery(context.application, delivery.id, manual=True)  # type: ignore[arg-type]
    async with services.db() as session:
        row = await session.get(cal.CalendarDelivery, delivery.id, populate_existing=True)
    if state == cal.SENT:
        await reply(update, t(target.lang, "calendar.posted", id=delivery.id))
    else:
        error = escape(row.error or "") if row else ""
        await reply(update, t(target.lang, "calendar.post_failed", id=delivery.id, error=error))


async def _plan_next(
    session: AsyncSession, chat_id: int, key: str, *, now: datetime
) -> cal.CalendarDelivery | None:
    """/postnow for a post whose next occurrence is beyond the planned horizon."""
    post = await session.scalar(
        select(cal.CalendarPost).where(
            cal.CalendarPost.key == key,
            cal.CalendarPost.active.is_(True),
            cal.CalendarPost.enabled.is_(True),
        )
    )
    if post is None:
        return None
    spec = PostSpec.from_json(post.spec)
    if chat_id not in spec.targets:
        return None
    due_at = spec.schedule.next_after(now)
    if due_at is None:
        return None
    await upsert(
        session,
        cal.CalendarDelivery.__table__,  # type: ignore[attr-defined]
        [
            {
                "post_id": post.id,
                "chat_id": chat_id,
                "due_at": due_at,
                "state": cal.PENDING,
                "updated_at": now,
            }
        ],
        key=("post_id", "chat_id", "due_at"),
    )
    return await cal.find_delivery(session, chat_id, key, states=cal.SENDABLE_BY_HAND)


@operator_command
async def skip_command(update: Update, context: BotContext, target: Target) -> None:
    """/skip ID — skip one delivery (a post id: its next occurrence here)."""
    ref = (context.args or [""])[0]
    if not ref:
        await reply(update, t(target.lang, "calendar.skip_usage"))
        return
    services = context.services
    async with services.db.begin() as session:
        delivery = await cal.find_delivery(
            session, target.chat_id, ref, states=(cal.PENDING, cal.HELD)
        )
        skipped = delivery is not None and await cal.skip(
            session,
            delivery.id,
            by=target.user_id,
            now=services.clock(),  # type: ignore[arg-type]
        )
    if not skipped or delivery is None:
        await reply(update, t(target.lang, "calendar.not_found", ref=escape(ref)))
        return
    publishing.drop_job(context.application, f"delivery:{delivery.id}")
    await reply(
        update,
        t(target.lang, "calendar.skipped", id=delivery.id, when=_when(target, delivery.due_at)),
    )


async def _set_paused(update: Update, context: BotContext, target: Target, paused: bool) -> None:
    services = context.services
    async with services.db.begin() as session:
        await cal.set_paused(
            session, target.chat_id, paused=paused, by=target.user_id, now=services.clock()
        )
    key = "calendar.paused" if paused else "calendar.resumed"
    await reply(update, t(target.lang, key, group=escape(target.chat.title)))


@operator_command
async def pause_command(update: Update, context: BotContext, target: Target) -> None:
    """/pause — no calendar posts in this group until /resume (due ones are skipped)."""
    await _set_paused(update, context, target, True)


@operator_command
async def resume_command(update: Update, context: BotContext, target: Target) -> None:
    """/resume — posting to this group starts again."""
    await _set_paused(update, context, target, False)


async def approval_button(update: Update, context: BotContext) -> None:
    """Approve / Reject / Edit later: checked again here (rights, version, still open)."""
    query = update.callback_query
    assert query is not None
    lang = await user_language(update, context)
    match = CALLBACK.match(query.data or "")
    if match is None:
        await query.answer(t(lang, "calendar.decision_stale"), show_alert=True)
        return
    action, approval_id, digest = match.group(1), int(match.group(2)), match.group(3)
    user = query.from_user
    state = DECISIONS[action]
    decision = await decide_as(
        context.services,
        context.bot,
        approval_id=approval_id,
        digest_prefix=digest,
        state=state,
        user_id=user.id,
        via="chat",
    )
    if decision is not Decision.DONE:
        await query.answer(t(lang, f"calendar.decision_{decision}"), show_alert=True)
        return
    note = t(lang, f"calendar.decision_{state}", name=escape(user.full_name))
    await query.answer()
    message = query.message
    if message is not None and getattr(message, "text_html", None) is not None:
        await query.edit_message_text(f"{message.text_html}\n\n{note}", reply_markup=None)


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("calendar", calendar_command),
            CommandHandler("schedule", schedule_command),
            CommandHandler("postnow", postnow_command),
            CommandHandler("skip", skip_command),
            CommandHandler("pause", pause_command),
            CommandHandler("resume", resume_command),
            CallbackQueryHandler(approval_button, pattern=r"^cal:"),
        ],
        group=COMMAND_GROUP,
    )
