"""What a calendar post can be, and how each kind is delivered: a small registry.

Built in: text, photo, document, video (a file under CONTENT_DIR or a URL) and copy (of an
existing message). Poll and lottery posts are part of the calendar format (validated here), but
their delivery belongs to the polls and lotteries features, which register their kinds with
`register_post_kind` (bot/polls_calendar.py, bot/lottery_calendar.py; bot.schema imports them,
and bot.app imports bot.schema). A kind registered without a deliverer is refused by
`calendar check` with a "not available yet" error.

A deliverer sends one post to one chat and returns the message id; it raises TelegramError on
failure (the scheduler classifies errors: retry, check, deactivate, follow a migration). A
kind's validator checks the content beyond the format (the feature's own limits); what it
returns is reported with the file and line of the key it names (`Invalid`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.constants import ParseMode

if TYPE_CHECKING:
    from telegram import Bot
    from telegram.ext import Application

    from bot.calendar_file import PostSpec
    from bot.services import Services


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One post on its way to one chat (a scheduled delivery, or an approval preview)."""

    app: Application[Any, Any, Any, Any, Any, Any]
    services: Services
    chat_id: int
    post: PostSpec
    content_dir: Path
    delivery_id: int | None  # None for previews
    preview: bool = False

    @property
    def bot(self) -> Bot:
        return self.app.bot

    @property
    def reply_markup(self) -> InlineKeyboardMarkup | None:
        return url_buttons(self.post.buttons)

    @property
    def common(self) -> dict[str, Any]:
        """Arguments every send method shares."""
        return {"disable_notification": self.post.silent, "reply_markup": self.reply_markup}


Deliver = Callable[[Outgoing], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A problem a kind's validator found: reported at `key` of the kind's block (the line of
    item `index` when the value is a list), or at the kind's own line without a key."""

    message: str
    key: str | None = None
    index: int | None = None


Validate = Callable[[dict[str, Any]], list[str | Invalid]]


@dataclass(frozen=True, slots=True)
class PostKind:
    """A kind of post: how to summarise it in one line and (once available) deliver it."""

    name: str
    summary: Callable[[dict[str, Any]], str]
    deliver: Deliver | None = None  # None: part of the format, not deliverable yet
    preview_as_post: bool = True  # approval previews show the post itself (else the summary)
    validate: Validate | None = None  # checks beyond the format's (the feature's limits)
    feature: str = ""  # which feature delivers it, for the "not available yet" error

    @property
    def available(self) -> bool:
        return self.deliver is not None


_KINDS: dict[str, PostKind] = {}


def register_post_kind(kind: PostKind) -> None:
    """Add or replace a kind (the polls and lotteries features plug theirs in this way)."""
    _KINDS[kind.name] = kind


def post_kind(name: str) -> PostKind | None:
    return _KINDS.get(name)


def kinds() -> dict[str, PostKind]:
    return dict(_KINDS)


def url_buttons(rows: list[list[dict[str, str]]]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b["text"], url=b["url"]) for b in row] for row in rows]
    )


def one_line(text: str, width: int = 60) -> str:
    """First line of a text without tags, shortened: for previews and lists (not escaped)."""
    from bot.telegram_html import check_telegram_html

    plain = check_telegram_html(text).visible.strip().splitlines()
    line = plain[0].strip() if plain else ""
    return line if len(line) <= width else line[: width - 1] + "…"


# --- built-in kinds --------------------------------------------------------------------------


async def _deliver_text(out: Outgoing) -> int:
    message = await out.bot.send_message(
        out.chat_id, out.post.content["text"], parse_mode=ParseMode.HTML, **out.common
    )
    return message.message_id


def _media_input(out: Outgoing) -> Any:
    content = out.post.content
    if content.get("local"):
        path = out.content_dir / content["media"]
        return InputFile(path.read_bytes(), filename=path.name)
    return content["media"]


def _media_deliverer(method: str) -> Deliver:
    async def deliver(out: Outgoing) -> int:
        caption = out.post.content.get("caption")
        send = getattr(out.bot, f"send_{method}")
        message = await send(
            out.chat_id,
            _media_input(out),
            caption=caption,
            parse_mode=ParseMode.HTML if caption else None,
            **out.common,
        )
        return message.message_id

    return deliver


async def _deliver_copy(out: Outgoing) -> int:
    content = out.post.content
    caption = content.get("caption")
    result = await out.bot.copy_message(
        out.chat_id,
        content["from_chat_id"],
        content["message_id"],
        caption=caption,
        parse_mode=ParseMode.HTML if caption else None,
        **out.common,
    )
    return result.message_id


def _media_summary(kind: str) -> Callable[[dict[str, Any]], str]:
    def summary(content: dict[str, Any]) -> str:
        caption = one_line(content.get("caption") or "", 40)
        name = Path(content["media"]).name if content.get("local") else content["media"]
        return f"{kind} {name}" + (f" — {caption}" if caption else "")

    return summary


def _poll_summary(content: dict[str, Any]) -> str:
    return f"poll: {content['question']} ({len(content['options'])} options)"


def _lottery_summary(content: dict[str, Any]) -> str:
    return f"lottery: {content['prize']} ({content['winners']} winners)"


register_post_kind(PostKind("text", lambda c: one_line(c["text"]), _deliver_text))
for _name in ("photo", "document", "video"):
    register_post_kind(PostKind(_name, _media_summary(_name), _media_deliverer(_name)))
register_post_kind(
    PostKind(
        "copy",
        lambda c: f"copy of message {c['message_id']} from {c['from_chat_id']}",
        _deliver_copy,
    )
)
# Known to the format; the polls and lotteries features replace these with their deliverers.
register_post_kind(PostKind("poll", _poll_summary, None, preview_as_post=False, feature="polls"))
register_post_kind(
    PostKind("lottery", _lottery_summary, None, preview_as_post=False, feature="lotteries")
)

__all__ = [
    "Deliver",
    "Invalid",
    "Outgoing",
    "PostKind",
    "kinds",
    "post_kind",
    "register_post_kind",
    "url_buttons",
]
