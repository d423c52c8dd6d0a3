"""Polls, quizzes and surveys (投票 / 问卷).

Operators create native polls with /poll and surveys with /survey, close them with /closepoll
and see them with /polls. Members' answers arrive as `poll_answer` updates and count as
participation; Telegram's tallies arrive as `poll` updates. Closing on time lives in
schedules/polls.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from telegram import Update, User
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, PollAnswerHandler, PollHandler, filters

from bot import polls
from bot.activity import is_countable_user, local_day
from bot.chats import ChatInfo
from bot.commands import Audience, CommandSpec
from bot.driver_session import Executor
from bot.i18n import t
from bot.polls import PollInputError
from bot.sending import send_text
from bot.services import BotContext
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers import TRACKING
from handlers.common import Target, operator_command, reply
from schedules.polls import cancel_close, close, schedule_close

FEATURE = "polls"
COMMANDS = [
    CommandSpec("poll", Audience.OPERATOR, FEATURE),
    CommandSpec("survey", Audience.OPERATOR, FEATURE),
    CommandSpec("closepoll", Audience.OPERATOR, FEATURE),
    CommandSpec("polls", Audience.OPERATOR, FEATURE),
    CommandSpec("quizpoints", Audience.OPERATOR, FEATURE),
]
MAX_QUIZ_POINTS = 1000
_CLOSE_ID = re.compile(r"#?(s)?(\d+)", re.IGNORECASE)


def _error_text(lang: str, exc: PollInputError, usage_key: str) -> str:
    """What was wrong (user text escaped), then the usage with examples."""
    values = {k: escape(v) if isinstance(v, str) else v for k, v in exc.values.items()}
    text = t(lang, f"polls.error.{exc.key}", **values)
    if "question" in values:
        text = t(lang, "polls.error_in_question", number=values["question"], problem=text)
    return f"{text}\n\n{t(lang, usage_key)}"


def _when(target: Target, moment: datetime) -> str:
    zone = target.chat.timezone
    return f"{moment.astimezone(zone).strftime('%Y-%m-%d %H:%M')} ({zone.key})"


# --- /poll -----------------------------------------------------------------------------------


@operator_command
async def poll_command(update: Update, context: BotContext, target: Target) -> None:
    """/poll [anonymous] [multi] [quiz=N] [close=WHEN] Question? | option | option …"""
    services, lang = context.services, target.lang
    body = polls.command_body(update.effective_message.text)  # type: ignore[union-attr]
    if not body.strip():
        await reply(update, t(lang, "polls.usage_poll"))
        return
    try:
        spec = polls.parse_poll(body, now=services.clock(), tz=target.chat.timezone)
    except PollInputError as exc:
        await reply(update, _error_text(lang, exc, "polls.usage_poll"))
        return
    try:
        row = await polls.publish_poll(
            context.bot, services, target.chat_id, spec, created_by=target.user_id
        )
    except TelegramError as exc:
        await reply(update, t(lang, "polls.send_failed", error=escape(exc.message)))
        return
    if row is None:
        await reply(update, t(lang, "polls.chat_closed"))
        return
    if row.close_at is not None and context.job_queue is not None:
        schedule_close(context.job_queue, "poll", row.id, row.close_at)  # type: ignore[arg-type]
    key = "polls.created_closes" if row.close_at else "polls.created_open"
    when = _when(target, row.close_at) if row.close_at else ""
    await reply(update, t(lang, key, id=row.id, when=when))


# --- /survey ---------------------------------------------------------------------------------


@operator_command
async def survey_command(update: Update, context: BotContext, target: Target) -> None:
    """/survey [close=WHEN] Title, then one question per line (poll syntax)."""
    services, lang = context.services, target.lang
    body = polls.command_body(update.effective_message.text)  # type: ignore[union-attr]
    if not body.strip():
        await reply(update, t(lang, "polls.usage_survey"))
        return
    now = services.clock()
    try:
        spec = polls.parse_survey(body, now=now, tz=target.chat.timezone)
    except PollInputError as exc:
        await reply(update, _error_text(lang, exc, "polls.usage_survey"))
        return
    closes = (
        t(lang, "polls.survey_header_closes", when=_when(target, spec.close_at))
        if spec.close_at
        else ""
    )
    header = t(
        lang,
        "polls.survey_header",
        title=escape(spec.title),
        count=len(spec.questions),
        closes=closes,
    )
    try:
        sent = await send_text(context.bot, services, target.chat_id, header)
    except TelegramError as exc:
        await reply(update, t(lang, "polls.send_failed", error=escape(exc.message)))
        return
    if not sent:
        await reply(update, t(lang, "polls.chat_closed"))
        return
    async with services.db.begin() as session:
        survey = polls.Survey(
            chat_id=sent[0].chat_id,
            title=spec.title,
            header_message_id=sent[0].message_id,
            created_by=target.user_id,
            created_at=now,
            close_at=spec.close_at,
        )
        session.add(survey)
        await session.flush()
        survey_id = survey.id
    assert survey_id is not None
    ids: list[int] = []
    for position, question in enumerate(spec.questions):
        try:
            row = await polls.publish_poll(
                context.bot,
                services,
                survey.chat_id,
                question,
                created_by=target.user_id,
                survey_id=survey_id,
                position=position,
                close_at=spec.close_at,
            )
        except TelegramError as exc:
            await reply(update, t(lang, "polls.send_failed", error=escape(exc.message)))
            break
        if row is None:
            break
        ids.append(row.id)  # type: ignore[arg-type]
    if not ids:  # nothing reached the group: there is nothing to close or summarise
        async with services.db.begin() as session:
            await polls.mark_closed(
                session, "survey", survey_id, now=services.clock(), summary_message_id=None
            )
        return
    if spec.close_at is not None and context.job_queue is not None:
        schedule_close(context.job_queue, "survey", survey_id, spec.close_at)
    key = "polls.survey_created_closes" if spec.close_at else "polls.survey_created_open"
    await reply(
        update,
        t(
            lang,
            key,
            id=survey_id,
            sent=len(ids),
            count=len(spec.questions),
            polls=", ".join(f"#{i}" for i in ids),
            when=_when(target, spec.close_at) if spec.close_at else "",
        ),
    )


# --- /closepoll ------------------------------------------------------------------------------


@operator_command
async def closepoll_command(update: Update, context: BotContext, target: Target) -> None:
    """/closepoll ID — close a poll now (a survey's question closes the whole survey)."""
    services, lang = context.services, target.lang
    match = _CLOSE_ID.fullmatch(context.args[0]) if context.args else None
    if match is None:
        await reply(update, t(lang, "polls.closepoll_usage"))
        return
    kind: polls.Kind = "survey" if match.group(1) else "poll"
    row_id = int(match.group(2))
    async with services.db() as session:
        row = await session.get(polls.Survey if kind == "survey" else polls.Poll, row_id)
        if isinstance(row, polls.Poll) and row.survey_id is not None:
            kind, row_id = "survey", row.survey_id
            row = await session.get(polls.Survey, row_id)
    label = f"S{row_id}" if kind == "survey" else f"#{row_id}"
    if row is None or row.chat_id != target.chat_id:
        await reply(update, t(lang, "polls.closepoll_not_found", id=escape(context.args[0])))
        return
    if row.state == "closed":
        await reply(update, t(lang, "polls.closepoll_already", id=label))
        return
    if await close(context.application, kind, row_id):
        if context.job_queue is not None:
            cancel_close(context.job_queue, kind, row_id)
        if target.private:
            await reply(
                update,
                t(lang, "polls.closepoll_done", id=label, group=escape(target.chat.title)),
            )
        return
    async with services.db() as session:
        row = await session.get(type(row), row_id)
    key = "polls.closepoll_already" if row and row.state == "closed" else "polls.closepoll_busy"
    await reply(update, t(lang, key, id=label))


# --- /polls ----------------------------------------------------------------------------------


@operator_command
async def polls_command(update: Update, context: BotContext, target: Target) -> None:
    """/polls — open polls and surveys, and the latest closed ones, with their results."""
    services = context.services
    tz = target.chat.timezone
    async with services.db() as session:
        listing = await polls.list_polls(session, target.chat_id, tz=tz, now=services.clock())
    await reply(update, polls.render_listing(target.lang, listing, tz))


# --- /quizpoints -----------------------------------------------------------------------------


@operator_command
async def quizpoints_command(update: Update, context: BotContext, target: Target) -> None:
    """/quizpoints N — points for a right quiz answer (0 = off); without N, show it."""
    services, lang = context.services, target.lang
    if not context.args:
        async with services.db() as session:
            points = await polls.quiz_points_setting(session, target.chat_id)
        key = "polls.quizpoints_current" if points else "polls.quizpoints_off"
        await reply(update, t(lang, key, points=points))
        return
    raw = context.args[0]
    if not raw.isdigit() or int(raw) > MAX_QUIZ_POINTS:
        await reply(update, t(lang, "polls.quizpoints_usage", limit=MAX_QUIZ_POINTS))
        return
    async with services.db.begin() as session:
        await polls.set_quiz_points(session, target.chat_id, int(raw))
    key = "polls.quizpoints_set" if int(raw) else "polls.quizpoints_off"
    await reply(update, t(lang, key, points=int(raw)))


# --- votes and tallies -----------------------------------------------------------------------


async def on_poll_answer(update: Update, context: BotContext) -> None:
    """A member voted, changed their vote or retracted it (non-anonymous polls only).

    poll_answer updates carry no chat: the chat comes from the stored poll; answers to polls
    this bot did not send are ignored. The day is the chat-local day the answer arrived.
    """
    answer = update.poll_answer
    user = answer.user if answer else None
    if answer is None or user is None or not is_countable_user(user.id, user.is_bot):
        return  # voted as a chat (voter_chat), or not a person
    services = context.services
    async with services.hot() as session:
        ref = await polls.find_poll(session, answer.poll_id)
        if ref is None or services.opt_outs.excluded(ref.chat_id, user.id):
            return  # not our poll, or the voter asked to be forgotten (bot.privacy)
        # Nearly always the group's settings are cached: one transaction finds the poll and
        # records the vote. (Not on a miss: reading them takes the database connection.)
        info = services.chats.cached(ref.chat_id)
        if info is not None:
            await _record(session, services.clock(), info, ref, user, answer.option_ids)
            return
    info = await services.chats.get(ref.chat_id)
    if info is None:
        return
    async with services.hot() as session:
        await _record(session, services.clock(), info, ref, user, answer.option_ids)


async def _record(
    session: Executor,
    now: datetime,
    info: ChatInfo,
    ref: polls.PollRef,
    user: User,
    option_ids: Sequence[int],
) -> None:
    await polls.record_vote(
        session,
        poll_id=ref.id,
        user_id=user.id,
        name=user.full_name,
        username=user.username,
        option_ids=list(option_ids),
        now=now,
        day=local_day(now, info.timezone),
    )


async def on_poll(update: Update, context: BotContext) -> None:
    """Telegram's new counts for one of our polls (the final ones once it is closed)."""
    poll = update.poll
    if poll is None:
        return
    async with context.services.db.begin() as session:
        ref = await polls.find_poll(session, poll.id)
        if ref is None:
            return
        counts, voters = polls.tally_of(poll)
        await polls.record_tally(
            session, poll_id=ref.id, counts=counts, total_voters=voters, final=poll.is_closed
        )


def register(app: Application) -> None:
    # Votes and tallies are tracking: they run before commands, like message counting.
    app.add_handlers(
        [PollAnswerHandler(on_poll_answer), PollHandler(on_poll)],
        group=TRACKING,
    )
    # New messages only: editing a /poll must not post a second poll.
    new = filters.UpdateType.MESSAGE
    app.add_handlers(
        [
            CommandHandler("poll", poll_command, filters=new),
            CommandHandler("survey", survey_command, filters=new),
            CommandHandler("closepoll", closepoll_command, filters=new),
            CommandHandler("polls", polls_command),
            CommandHandler("quizpoints", quizpoints_command, filters=new),
        ],
        group=COMMAND_GROUP,
    )
