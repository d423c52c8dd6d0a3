"""Approve / reject one occurrence of a calendar post: the single path the chat's approval
buttons and the dashboard both take, so both check the same rights and leave the same trace."""

from __future__ import annotations

import logging
from enum import StrEnum

from telegram import Bot

from bot import calendar as cal
from bot.services import Services

log = logging.getLogger(__name__)


class Decision(StrEnum):
    DONE = "done"
    STALE = "stale"  # unknown, already decided, another version, or past its time
    NOT_ALLOWED = "not_allowed"


async def decide_as(
    services: Services,
    bot: Bot,
    *,
    approval_id: int,
    digest_prefix: str,
    state: str,
    user_id: int,
    via: str,
) -> Decision:
    """Record `state` (approved | rejected | later) if `user_id` operates every group the
    occurrence goes to (owners: also occurrences planned for no group)."""
    async with services.db() as session:
        approval = await session.get(cal.CalendarApproval, approval_id)
        chats = await cal.approval_chats(session, approval) if approval else []
    if approval is None:
        return Decision.STALE
    for chat_id in chats:
        if not await services.operators.is_operator(bot, chat_id, user_id):
            return Decision.NOT_ALLOWED
    if not chats and user_id not in services.operators.owners:
        return Decision.NOT_ALLOWED
    async with services.db.begin() as session:
        decided = await cal.decide(
            session,
            approval_id,
            digest_prefix=digest_prefix,
            state=state,
            by=user_id,
            now=services.clock(),
        )
    if not decided:
        return Decision.STALE
    log.info(
        "calendar approval %s (post %s, due %s) %s by user %s via %s",
        approval_id,
        approval.post_id,
        approval.due_at.isoformat(),
        state,
        user_id,
        via,
    )
    return Decision.DONE
