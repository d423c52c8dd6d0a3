"""Sending to a chat with the failures Telegram reports handled in one place.

- ChatMigrated: the group became a supergroup; its rows move and the send is retried there.
- Forbidden: the bot was removed or blocked; the chat is marked inactive, nothing raises.
- RetryAfter (flood control, 429) is honoured by `ChatRateLimiter` (configured in bot.app)
  before we see it: only the chat that got it waits, other chats keep going.
- Connection errors and Telegram's 5xx (NetworkError) are retried with backoff
  (`retry_network`); a TimedOut is not: Telegram may have received and posted the message,
  so resending could post it twice (see docs/faults.md).
Every automatic send (greetings, schedules, digests) goes through `send_text`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
from telegram import Bot, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import AIORateLimiter

from bot.services import Services
from bot.text import split_message

log = logging.getLogger(__name__)

CHAT_GONE_ERRORS = ("chat not found", "group chat was deactivated", "bot was kicked")

# Waits before the 2nd, 3rd and 4th attempt of a send that failed in transport or with a 5xx.
RETRY_DELAYS: tuple[float, ...] = (1.0, 3.0, 10.0)
sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests replace it: no real waiting

T = TypeVar("T")


def not_sent(exc: BaseException) -> bool:
    """True when Telegram certainly did not act on the request, so sending again is safe.

    A NetworkError (connection refused or reset, Telegram's 5xx) is; a TimedOut is not —
    unless the request never left (no connection could be made or taken from the pool).
    A BadRequest (PTB's subclass of NetworkError) is not retried: it would fail again.
    """
    if isinstance(exc, TimedOut):
        return isinstance(exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout)
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def outcome_unknown(exc: BaseException) -> bool:
    """True when Telegram may have acted on a request that failed (it did not answer)."""
    return isinstance(exc, TimedOut) and not not_sent(exc)


async def retry_network(send: Callable[[], Awaitable[T]]) -> T:
    """Run `send`, retrying with backoff while it fails in a way that is safe to retry."""
    for delay in RETRY_DELAYS:
        try:
            return await send()
        except NetworkError as exc:
            if not not_sent(exc):
                raise
            log.warning("send failed (%s); retrying in %.0f s", exc.message, delay)
        await sleep(delay)
    return await send()


class ChatRateLimiter(AIORateLimiter):
    """PTB's AIORateLimiter, except that a RetryAfter holds only the chat that got it.

    AIORateLimiter pauses every request of the bot while it waits out a 429; Telegram's
    flood control is mostly per chat (20 messages a minute in a group), so one busy group
    would stall all the others. Here the request waits `retry_after` and is retried, and
    further requests to the same chat queue behind it; the global and per-group rates are
    still AIORateLimiter's.
    """

    def __init__(self, *, max_retries: int = 3) -> None:
        super().__init__(max_retries=max_retries)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._holds: dict[str, asyncio.Event] = {}

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        retries = rate_limit_args or self._max_retries
        chat_id = data.get("chat_id")
        key = str(chat_id) if chat_id is not None else None
        group: int | str | bool = False
        try:
            number = int(chat_id) if chat_id is not None else None
        except (TypeError, ValueError):
            number = None
        if number is not None and number < 0:
            group = number
        elif isinstance(chat_id, str) and number is None:
            group = chat_id  # @channelusername
        for attempt in range(retries + 1):
            while key is not None and key in self._holds:
                await self._holds[key].wait()
            try:
                return await self._run_request(
                    chat=chat_id is not None,
                    group=group,
                    allow_paid_broadcast=bool(data.get("allow_paid_broadcast", False)),
                    callback=callback,
                    args=args,
                    kwargs=kwargs,
                )
            except RetryAfter as exc:
                if attempt == retries:
                    log.warning("flood control on chat %s after %d retries", chat_id, retries)
                    raise
                wait = exc._retry_after.total_seconds() + 0.1  # noqa: SLF001
                log.info("flood control on chat %s: waiting %.1f s", chat_id, wait)
                hold = asyncio.Event()
                if key is not None:
                    self._holds[key] = hold
                try:
                    await self.sleep(wait)
                finally:
                    if key is not None and self._holds.get(key) is hold:
                        del self._holds[key]
                    hold.set()
        raise AssertionError("unreachable")  # pragma: no cover


async def send_text(
    bot: Bot, services: Services, chat_id: int, text: str, **kwargs: Any
) -> list[Message]:
    """Send HTML text (split to fit) to a chat; returns the messages sent ([] if it is gone)."""
    info = await services.chats.get(chat_id)
    if info is not None and not info.active:
        return []
    kwargs.setdefault("parse_mode", ParseMode.HTML)
    sent: list[Message] = []
    for part in split_message(text, markup=kwargs["parse_mode"] == ParseMode.HTML):
        message = await _send_one(bot, services, chat_id, part, kwargs)
        if message is None:
            break
        sent.append(message)
        chat_id = message.chat_id  # follows a migration that happened during the first part
    return sent


async def _send_one(
    bot: Bot, services: Services, chat_id: int, text: str, kwargs: dict[str, Any]
) -> Message | None:
    try:
        return await retry_network(lambda: bot.send_message(chat_id, text, **kwargs))
    except ChatMigrated as exc:
        await services.activity.flush()
        new_id = exc.new_chat_id
        await services.chats.migrate(chat_id, new_id)
        return await retry_network(lambda: bot.send_message(new_id, text, **kwargs))
    except Forbidden as exc:
        log.info("chat %s is closed to the bot (%s); deactivating", chat_id, exc.message)
        await services.chats.deactivate(chat_id, bot_status="kicked")
        return None
    except BadRequest as exc:
        if any(reason in exc.message.lower() for reason in CHAT_GONE_ERRORS):
            await services.chats.deactivate(chat_id, bot_status="left")
            return None
        raise
