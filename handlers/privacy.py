"""/forgetme, /forget and /rememberme: erasing a member's data on request, and the opt-out.

Both erasures ask for a confirmation button first. Nothing in the button's data is trusted
but the request it names: the row's random token must match, the presser must be whoever
asked (for an operator's /forget: an operator of that group, still), the button works for
10 minutes, and the request is claimed (pending → done) in the erasure's own transaction, so
a second press finds it done.
"""

from __future__ import annotations

import logging

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update, User
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot import invites, privacy
from bot import moderation as mod
from bot.activity import SERVICE_ACCOUNTS
from bot.commands import Audience, CommandSpec
from bot.i18n import t
from bot.services import BotContext, Services, services_of
from bot.text import escape
from handlers import COMMANDS as COMMAND_GROUP
from handlers.common import (
    Target,
    operator_command,
    reply,
    reply_language,
    resolve_member,
    user_language,
)

log = logging.getLogger(__name__)

FEATURE = "privacy"
COMMANDS = [
    CommandSpec("forgetme", Audience.PRIVATE, FEATURE),
    CommandSpec("rememberme", Audience.PRIVATE, FEATURE),
    CommandSpec("forget", Audience.OPERATOR, FEATURE),
]
PREFIX = "forget:"
RELOAD_SECONDS = 60  # other processes' opt-outs are learnt within a minute
SWEEP_AFTER_SECONDS = 2 * RELOAD_SECONDS + 5  # …and their buffers flushed a second later
ANONYMOUS_ADMIN = 1087968824


def _buttons(lang: str, request: privacy.ErasureRequest) -> InlineKeyboardMarkup:
    data = f"{PREFIX}{request.id}:{request.token}"
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(t(lang, "privacy.confirm_button"), callback_data=data),
                InlineKeyboardButton(t(lang, "privacy.cancel_button"), callback_data=data + ":no"),
            ]
        ]
    )


# --- the member's own --------------------------------------------------------------------------


async def _private_asker(update: Update, context: BotContext) -> tuple[User, str] | None:
    """The member asking and their language; None (after saying so) outside a private chat:
    what concerns one person is not discussed in a group."""
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        return None
    if chat.type != ChatType.PRIVATE:
        lang = await reply_language(update, context)
        await reply(update, t(lang, "privacy.private_only", bot=context.bot.username))
        return None
    return user, await user_language(update, context)


async def forgetme(update: Update, context: BotContext) -> None:
    """/forgetme: explain what will be erased, with a confirmation button (private chat only)."""
    asker = await _private_asker(update, context)
    if asker is None:
        return
    user, lang = asker
    services = context.services
    async with services.db.begin() as session:
        request = await privacy.create_request(
            session, requested_by=user.id, subject_id=user.id, chat_id=None, now=services.clock()
        )
    minutes = int(privacy.CONFIRM_TIME.total_seconds() // 60)
    await reply(
        update, t(lang, "privacy.explain", minutes=minutes), reply_markup=_buttons(lang, request)
    )


async def rememberme(update: Update, context: BotContext) -> None:
    """/rememberme: lift the opt-out, so activity is recorded again from now on."""
    asker = await _private_asker(update, context)
    if asker is None:
        return
    user, lang = asker
    services = context.services
    async with services.db.begin() as session:
        removed = await privacy.remove_opt_outs(session, services.opt_outs.digest(user.id))
    services.opt_outs.remove(user.id)
    await reply(update, t(lang, "privacy.remembered" if removed else "privacy.not_opted_out"))


# --- an operator's, for a member ---------------------------------------------------------------


@operator_command
async def forget(update: Update, context: BotContext, target: Target) -> None:
    """/forget @user (or as a reply): erase a member's data in this group, after confirmation."""
    lang = target.lang
    args = list(context.args or [])
    member, _ = await resolve_member(update, context, target.chat_id, args)
    if member is None:
        if args:
            await reply(update, t(lang, "privacy.forget_unknown", user=escape(args[0])))
        else:
            await reply(update, t(lang, "privacy.forget_usage"))
        return
    if member.sender_chat_id is not None or member.is_bot or member.user_id in SERVICE_ACCOUNTS:
        await reply(update, t(lang, "privacy.forget_not_person"))
        return
    if member.user_id <= 0:
        await reply(update, t(lang, "privacy.forget_already"))
        return
    services = context.services
    async with services.db.begin() as session:
        request = await privacy.create_request(
            session,
            requested_by=target.user_id,
            subject_id=member.user_id,
            chat_id=target.chat_id,
            now=services.clock(),
        )
    minutes = int(privacy.CONFIRM_TIME.total_seconds() // 60)
    await reply(
        update,
        t(
            lang,
            "privacy.forget_explain",
            name=member.label,
            group=escape(target.chat.title),
            minutes=minutes,
        ),
        reply_markup=_buttons(lang, request),
    )


# --- the button --------------------------------------------------------------------------------


async def _answer(update: Update, text: str | None = None, *, alert: bool = False) -> None:
    query = update.callback_query
    assert query is not None
    try:
        await query.answer(text, show_alert=alert)
    except TelegramError as exc:
        log.info("could not answer an erasure button: %s", exc)


async def _edit(update: Update, text: str) -> None:
    query = update.callback_query
    assert query is not None
    try:
        await query.edit_message_text(text)
    except TelegramError as exc:
        log.info("could not edit an erasure prompt: %s", exc)


async def pressed(update: Update, context: BotContext) -> None:
    """Confirm (or cancel) an erasure: only its requester, only while fresh, only once."""
    query = update.callback_query
    assert query is not None
    services = context.services
    raw = (query.data or "")[len(PREFIX) :]
    parts = raw.split(":")
    presser = query.from_user.id
    lang = await reply_language(update, context)
    if len(parts) not in (2, 3) or not parts[0].isdigit() or parts[2:] not in ([], ["no"]):
        await _answer(update, t(lang, "privacy.expired"), alert=True)
        return
    request_id, token, cancel = int(parts[0]), parts[1], parts[2:] == ["no"]
    async with services.db() as session:
        request = await session.get(privacy.ErasureRequest, request_id)
    if request is None or request.token != token:
        await _answer(update, t(lang, "privacy.expired"), alert=True)
        return
    if request.state == "done":
        await _answer(update, t(lang, "privacy.already_done"))
        return
    scope = request.chat_id
    # An anonymous administrator asked as the group: any operator of it may confirm.
    asker = request.requested_by
    if scope is not None and asker == ANONYMOUS_ADMIN:
        asker = presser
    if scope is not None and not await services.operators.is_operator(context.bot, scope, presser):
        await _answer(update, t(lang, "privacy.not_yours"), alert=True)
        return
    if asker != presser:
        await _answer(update, t(lang, "privacy.not_yours"), alert=True)
        return
    if cancel:
        async with services.db.begin() as session:
            cancelled = await privacy.cancel_request(
                session, request_id, token, request.requested_by
            )
        await _answer(update, None if cancelled else t(lang, "privacy.expired"))
        if cancelled:
            await _edit(update, t(lang, "privacy.cancelled"))
        return
    await _confirm(update, context, request, asker, lang)


async def _confirm(
    update: Update,
    context: BotContext,
    request: privacy.ErasureRequest,
    asker: int,
    lang: str,
) -> None:
    services = context.services
    query = update.callback_query
    assert query is not None and request.id is not None
    subject, scope = request.subject_id, request.chat_id
    if subject is None:  # already done (its id was cleared)
        await _answer(update, t(lang, "privacy.already_done"))
        return
    # Stop recording them first, then write what is buffered, so the erasure sees it all.
    services.opt_outs.add(subject, scope)
    try:
        await services.activity.flush()
        now = services.clock()
        async with services.db.begin() as session:
            claim = await privacy.claim_request(
                session, request.id, request.token, request.requested_by, now
            )
            if claim.status is privacy.Claim.OK:
                done = await privacy.erase(
                    session, subject, chat_ids=None if scope is None else {scope}
                )
                await privacy.record_opt_out(
                    session, services.opt_outs.digest(subject), scope, now
                )
                if scope is not None:
                    # Asked by an anonymous administrator: whoever confirmed stays anonymous.
                    anonymous = request.requested_by == ANONYMOUS_ADMIN
                    await mod.log_entry(
                        session,
                        chat_id=scope,
                        now=now,
                        action="forget",
                        actor_id=None if anonymous else asker,
                        actor_name=(
                            t(lang, "moderation.anonymous_admin")
                            if anonymous
                            else query.from_user.full_name
                        ),
                        target_id=done.pseudonym(scope),
                        target_name="",
                    )
    except Exception:
        await _reload(services_of(context.application))
        raise
    if claim.status is not privacy.Claim.OK:
        if claim.status is not privacy.Claim.DONE:
            await _reload(services_of(context.application))
        key = "privacy.already_done" if claim.status is privacy.Claim.DONE else "privacy.expired"
        await _answer(update, t(lang, key), alert=claim.status is not privacy.Claim.DONE)
        return
    if context.job_queue is not None:
        # Other processes learn the opt-out within RELOAD_SECONDS; whatever they recorded
        # meanwhile is folded into the same pseudonyms then. The id stays in memory only.
        context.job_queue.run_once(
            _sweep,
            when=SWEEP_AFTER_SECONDS,
            data=(subject, scope, dict(done.chats)),
            name=f"privacy:sweep:{request.id}",
        )
    await _revoke_own_links(context, done.chats)
    log.info(
        "erased a member's data (%s groups, %s rows pseudonymised, %s deleted)",
        len(done.chats),
        done.pseudonymised,
        done.deleted,
    )
    await _answer(update)
    await _edit(update, t(lang, "privacy.done" if scope is None else "privacy.forget_done"))


async def _revoke_own_links(context: BotContext, pseudonyms: dict[int, int]) -> None:
    """Revoke the erased member's own invite links (/myinvite): Telegram names them for the
    member. Their joins stay attributed to the pseudonym; a failure is logged, not fatal."""
    services = context.services
    async with services.db() as session:
        links = await invites.own_links_of_pseudonyms(session, pseudonyms)
    for link in links:
        assert link.id is not None
        try:
            await context.bot.revoke_chat_invite_link(link.chat_id, link.url)
        except TelegramError as exc:
            log.warning("could not revoke an erased member's link in %s: %s", link.chat_id, exc)
            continue
        async with services.db.begin() as session:
            await invites.mark_revoked(session, link.id, services.clock())


async def _sweep(context: BotContext) -> None:
    """Erase again what other processes recorded before they learnt of the opt-out."""
    assert context.job is not None
    subject, scope, pseudonyms = context.job.data  # type: ignore[misc]
    services = context.services
    if not services.opt_outs.excluded(scope, subject):
        return  # they opted back in meanwhile: what is recorded now is wanted
    await services.activity.flush()
    async with services.db.begin() as session:
        await privacy.erase(
            session,
            subject,
            chat_ids=None if scope is None else {scope},
            pseudonyms=pseudonyms,
        )


# --- wiring ------------------------------------------------------------------------------------


async def _reload(services: Services) -> None:
    async with services.db() as session:
        services.opt_outs.replace(await privacy.load_opt_outs(session))


async def _reload_job(context: BotContext) -> None:
    await _reload(context.services)


async def on_startup(app: Application) -> None:
    """Load the opt-outs, and reload them every minute (other processes add some)."""
    await _reload(services_of(app))
    if app.job_queue is not None:
        app.job_queue.run_repeating(
            _reload_job, interval=RELOAD_SECONDS, first=RELOAD_SECONDS, name="privacy:reload"
        )


def register(app: Application) -> None:
    app.add_handlers(
        [
            CommandHandler("forgetme", forgetme),
            CommandHandler("rememberme", rememberme),
            CommandHandler("forget", forget),
            CallbackQueryHandler(pressed, pattern=f"^{PREFIX}"),
        ],
        group=COMMAND_GROUP,
    )


__all__ = ["register", "COMMANDS", "on_startup"]
