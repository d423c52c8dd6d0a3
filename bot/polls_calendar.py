"""Poll posts in the content calendar: the polls feature's `poll` post kind.

A calendar poll is checked against the same limits as /poll (`bot.polls.poll_problems`), each
problem reported with the line of the key it concerns, and delivered like /poll: sendPoll, the
poll stored with its options (so votes, tallies and quiz points work as for any poll), and its
close scheduled at `close_after` after it went out (stopPoll and the summary, by
schedules/polls.py).

Exactly once: the poll row carries the calendar delivery it was posted for (UNIQUE). A delivery
that is tried again — after a failure, or by /postnow after an interrupted send — first looks
for its poll and, when it was posted, answers with that message instead of posting another.
Should two attempts ever race past that check, the one that loses the UNIQUE insert withdraws
its message (deleteMessage) and answers with the winner's.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from telegram.error import TelegramError

from bot import polls
from bot.post_kinds import Invalid, Outgoing, PostKind, register_post_kind
from bot.timeparse import format_duration
from schedules.polls import schedule_close

log = logging.getLogger(__name__)

MIN_CLOSE_AFTER = timedelta(minutes=1)

# How /poll's problems read in a calendar file, and which key of the poll block they concern.
_MESSAGES: dict[str, tuple[str, str]] = {
    "question_missing": ("question", "question: is required"),
    "question_long": (
        "question",
        "question is too long: {length} characters, Telegram allows {limit}",
    ),
    "too_few_options": ("options", "options: at least {minimum} answers, there are {count}"),
    "too_many_options": ("options", "options: at most {limit} answers, there are {count}"),
    "option_empty": ("options", "option {number} is empty"),
    "option_long": (
        "options",
        "option {number} is too long: {length} characters, Telegram allows {limit}",
    ),
    "option_twice": ("options", "option {number} repeats {option!r}"),
    "quiz_out_of_range": (
        "quiz",
        "quiz: {number} names no option: counted from 1, there are {count}",
    ),
    "quiz_multi": ("quiz", "a quiz has one right answer, so it can't be multi"),
    "explanation_without_quiz": ("explanation", "explanation: goes with quiz:"),
    "explanation_long": (
        "explanation",
        "explanation is too long: {length} characters, Telegram allows {limit}",
    ),
}


def validate(content: dict[str, Any]) -> list[str | Invalid]:
    """The polls feature's limits, each problem placed at its key (an option at its line)."""
    quiz = content.get("quiz")
    found: list[str | Invalid] = []
    for problem in polls.poll_problems(
        content["question"],
        content["options"],
        multiple=content["multi"],
        quiz=None if quiz is None else quiz + 1,
        explanation=content.get("explanation"),
    ):
        key, template = _MESSAGES.get(problem.key, ("", problem.key.replace("_", " ")))
        number = problem.values.get("number")
        index = number - 1 if key == "options" and isinstance(number, int) else None
        found.append(Invalid(template.format(**problem.values), key or None, index))
    close_after = content.get("close_after")
    if close_after is not None and close_after < MIN_CLOSE_AFTER.total_seconds():
        found.append(
            Invalid(f"close_after: at least {format_duration(MIN_CLOSE_AFTER)}", "close_after")
        )
    return found


def poll_spec(content: dict[str, Any]) -> polls.PollSpec:
    return polls.PollSpec(
        question=content["question"],
        options=tuple(content["options"]),
        anonymous=content["anonymous"],
        multiple=content["multi"],
        correct_option=content.get("quiz"),
        explanation=content.get("explanation") or None,
    )


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(content: dict[str, Any]) -> str:
    """One line (plain text): `quiz: Question? [a / b ✓ / c] (closes 2h after posting)`."""
    quiz = content.get("quiz")
    options = " / ".join(
        _shorten(option, 24) + (" ✓" if index == quiz else "")
        for index, option in enumerate(content["options"])
    )
    notes = [
        note
        for flag, note in (
            (content.get("multi"), "multiple answers"),
            (content.get("anonymous"), "anonymous"),
        )
        if flag
    ]
    if content.get("close_after"):
        after = format_duration(timedelta(seconds=content["close_after"]))
        notes.append(f"closes {after} after posting")
    else:
        notes.append("open until /closepoll")
    kind = "quiz" if quiz is not None else "poll"
    return f"{kind}: {_shorten(content['question'], 60)} [{options}] ({', '.join(notes)})"


async def _poll_of(out: Outgoing) -> polls.Poll | None:
    async with out.services.db() as session:
        return await session.scalar(
            select(polls.Poll).where(polls.Poll.calendar_delivery_id == out.delivery_id)
        )


async def deliver(out: Outgoing) -> int:
    """Post the poll (once per delivery), store it, and schedule its close."""
    if out.delivery_id is None:  # previews show the summary (preview_as_post=False)
        raise LookupError("a poll is only posted by a calendar delivery")
    existing = await _poll_of(out)
    if existing is not None:
        log.info("delivery %s: poll %s was already posted", out.delivery_id, existing.id)
        return existing.message_id
    services = out.services
    spec = poll_spec(out.post.content)
    # Errors go to the scheduler, which classifies them (retry, check, deactivate, migrate).
    message = await out.bot.send_poll(
        out.chat_id, **polls.send_kwargs(spec), disable_notification=out.post.silent
    )
    now = services.clock()
    close_after = out.post.content.get("close_after")
    close_at = now + timedelta(seconds=close_after) if close_after else None
    try:
        async with services.db.begin() as session:
            poll = await polls.record_poll(
                session,
                chat_id=message.chat_id,
                message=message,
                spec=spec,
                created_by=out.bot.id,
                now=now,
                close_at=close_at,
                calendar_delivery_id=out.delivery_id,
            )
    except IntegrityError:
        winner = await _poll_of(out)
        if winner is None:
            raise
        log.warning("delivery %s was posted twice at once; withdrawing the copy", out.delivery_id)
        with contextlib.suppress(TelegramError):
            await out.bot.delete_message(message.chat_id, message.message_id)
        return winner.message_id
    if close_at is not None and out.app.job_queue is not None:
        schedule_close(out.app.job_queue, "poll", poll.id, close_at)  # type: ignore[arg-type]
    return message.message_id


register_post_kind(
    PostKind(
        "poll",
        summary,
        deliver,
        preview_as_post=False,  # a preview poll would be a real poll: reviewers see the summary
        validate=validate,
        feature="polls",
    )
)
