"""Polls, quizzes and surveys: creation, votes, tallies, closing exactly once, summaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from telegram import Update

from bot import polls
from bot.app import build_app
from bot.models import DailyActivity
from bot.polls import Poll, PollOption, PollVote, Survey
from schedules import polls as schedule
from tests import factories as f
from tests.conftest import both_databases

GROUP = f.group(-1001000000001, "Poll <Group>")
OTHER = f.group(-1001000000002, "Other")
GID = GROUP["id"]
ADMIN = f.user(10, "Ada")
ALICE = f.user(1, "Alice")
BOB = f.user(2, "Bob")
CAROL = f.user(3, "Carol")
DAVE = f.user(4, "Dave")
EVE = f.user(5, "Eve")


async def setup_group(tg, chat=GROUP) -> None:
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    tg.api.clear()


async def command(tg, text: str, *, sender=ADMIN, chat=GROUP) -> str:
    """Send a command; returns the bot's last reply text."""
    before = len(tg.api.of("sendMessage"))
    await tg.feed(f.message(chat, sender, text, date=tg.now()))
    sent = tg.api.of("sendMessage")[before:]
    return sent[-1].params["text"] if sent else ""


async def all_polls(tg) -> list[Poll]:
    async with tg.db() as session:
        return list(await session.scalars(select(Poll).order_by(Poll.id)))


async def last_poll(tg) -> Poll:
    return (await all_polls(tg))[-1]


async def votes(tg, poll: Poll) -> dict[int, str]:
    async with tg.db() as session:
        rows = await session.scalars(select(PollVote).where(PollVote.poll_id == poll.id))
        return {row.user_id: row.option_ids for row in rows}


async def vote(tg, poll: Poll, voter: dict[str, Any], options: list[int]) -> None:
    """What Telegram sends when a member votes: poll_answer (not anonymous) and the new poll."""
    state = tg.api.vote(poll.telegram_poll_id, voter["id"], options)
    if not poll.anonymous:
        await tg.feed(f.poll_answer(poll.telegram_poll_id, voter, options))
    await tg.feed(f.poll_state(state))


def summaries(tg, marker: str = "Results of poll") -> list[str]:
    return [text for text in tg.api.sent_texts(GID) if marker in text]


def close_job(app, kind: str, row_id: int):
    jobs = app.job_queue.get_jobs_by_name(schedule.job_name(kind, row_id))
    assert len(jobs) == 1, jobs
    return jobs[0]


# --- creation -----------------------------------------------------------------------------------


async def test_plain_poll_is_sent_not_anonymous_and_stored(tg):
    await setup_group(tg)
    reply = await command(tg, "/poll Lunch today? | Noodles | Rice | Salad")
    params = tg.api.of("sendPoll")[0].params
    assert params["chat_id"] == GID and params["question"] == "Lunch today?"
    assert [o["text"] for o in params["options"]] == ["Noodles", "Rice", "Salad"]
    assert params["is_anonymous"] is False  # so participation can be measured
    assert "type" not in params and "allows_multiple_answers" not in params
    assert not any("parse_mode" in key for key in params)  # plain text, whatever Defaults say
    poll = await last_poll(tg)
    assert (poll.chat_id, poll.question, poll.kind, poll.state) == (
        GID,
        "Lunch today?",
        "regular",
        "open",
    )
    assert poll.telegram_poll_id in tg.api.polls and poll.close_at is None
    assert f"/closepoll {poll.id}" in reply
    async with tg.db() as session:
        options = list(
            await session.scalars(select(PollOption).where(PollOption.poll_id == poll.id))
        )
    assert [(o.position, o.text, o.persistent_id) for o in options] == [
        (0, "Noodles", "opt-0"),
        (1, "Rice", "opt-1"),
        (2, "Salad", "opt-2"),
    ]
    assert not tg.app.job_queue.get_jobs_by_name(schedule.job_name("poll", poll.id))


async def test_every_flag(tg):
    await setup_group(tg)
    reply = await command(tg, "/poll anonymous multi close=2h Which days? | Mon | Wed | Fri")
    params = tg.api.of("sendPoll")[-1].params
    assert params["is_anonymous"] is True and params["allows_multiple_answers"] is True
    poll = await last_poll(tg)
    assert poll.anonymous and poll.multiple and poll.close_at == tg.now() + timedelta(hours=2)
    assert close_job(tg.app, "poll", poll.id).job.trigger.run_date == poll.close_at
    assert "2026-11-25 14:00 (UTC)" in reply

    await tg.feed(f.message(GROUP, ADMIN, "/settimezone Asia/Shanghai", date=tg.now()))
    await command(
        tg, "/poll quiz=2 close=2026-12-24 20:00 2 + 2 = ? | 3 | 4 | 5 | explain: 2 + 2 is 4"
    )
    params = tg.api.of("sendPoll")[-1].params
    assert params["type"] == "quiz" and params["correct_option_ids"] == [1]
    assert params["explanation"] == "2 + 2 is 4" and params["question"] == "2 + 2 = ?"
    assert [o["text"] for o in params["options"]] == ["3", "4", "5"]
    quiz = await last_poll(tg)
    assert quiz.kind == "quiz" and quiz.correct_option == 1
    assert quiz.close_at == datetime(2026, 12, 24, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai


async def test_friendly_aliases_and_one_option_per_line(tg):
    await setup_group(tg)
    await command(tg, "/poll 匿名 多选 截止=30m 去哪？｜海边｜山里")
    params = tg.api.of("sendPoll")[-1].params
    assert params["is_anonymous"] and params["allows_multiple_answers"]
    assert params["question"] == "去哪？" and [o["text"] for o in params["options"]] == [
        "海边",
        "山里",
    ]
    await command(tg, "/poll@community_test_bot Tea or coffee?\nTea\nCoffee\n")
    params = tg.api.of("sendPoll")[-1].params
    assert params["question"] == "Tea or coffee?"
    assert [o["text"] for o in params["options"]] == ["Tea", "Coffee"]


@pytest.mark.parametrize(
    "question",
    ["Quiz: what is 2 + 2?", "Close the office on Friday?", "Anonymous feedback welcome?", "x=1?"],
)
async def test_questions_that_start_like_a_flag(tg, question):
    await setup_group(tg)
    await command(tg, f"/poll {question} | yes | no")
    params = tg.api.of("sendPoll")[-1].params
    assert params["question"] == question and params["is_anonymous"] is False


async def test_flags_with_a_colon(tg):
    await setup_group(tg)
    await command(tg, "/poll quiz:2 截止：1h Q? | a | b")
    params = tg.api.of("sendPoll")[-1].params
    assert params["correct_option_ids"] == [1]
    assert (await last_poll(tg)).close_at == tg.now() + timedelta(hours=1)


BAD_POLLS = [
    ("/poll", "Create a poll"),
    ("/poll Lunch? | Noodles", "at least 2 options"),
    ("/poll Q? | " + " | ".join(str(i) for i in range(13)), "Too many options: 13"),
    ("/poll " + "x" * 301 + " | a | b", "question is too long: 301"),
    ("/poll Q? | a | " + "y" * 101, "Option 2 is too long: 101"),
    ("/poll Q? | a | | b", "Option 2 is empty"),
    ("/poll Q? | Tea | tea", "appears twice"),
    ("/poll quiz Q? | a | b", "A quiz needs its right answer"),
    ("/poll quiz=x Q? | a | b", "A quiz needs its right answer"),
    ("/poll quiz=3 Q? | a | b", "<code>quiz=3</code> names no option"),
    ("/poll quiz=0 Q? | a | b", "<code>quiz=0</code> names no option"),
    ("/poll multi quiz=1 Q? | a | b", "can't be used with"),
    ("/poll Q? | a | b | explain: why", "only for quizzes"),
    ("/poll quiz=1 Q? | a | b | explain: " + "z" * 201, "explanation is too long: 201"),
    ("/poll close=2020-01-01 10:00 Q? | a | b", "has already passed"),
    ("/poll close=soon Q? | a | b", "can't read the closing time"),
    ("/poll close Q? | a | b", "Say when to close"),
    ("/poll quizz=2 Q? | a | b", "I don't know the setting <code>quizz=2</code>"),
    ("/poll | a | b", "needs a question"),
    ("/poll anonymous | a | b", "needs a question"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_POLLS)
async def test_bad_input_is_explained_with_an_example(tg, text, problem):
    await setup_group(tg)
    reply = await command(tg, text)
    assert problem in reply
    assert "Examples:" in reply and "/poll close=2h Lunch today?" in reply
    assert not tg.api.of("sendPoll") and not await all_polls(tg)


async def test_twelve_options_are_telegrams_limit(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | " + " | ".join(f"o{i}" for i in range(12)))
    assert len(tg.api.of("sendPoll")[0].params["options"]) == 12


async def test_errors_in_chinese_groups_and_user_text_escaped(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now()))
    reply = await command(tg, "/poll Q? | <b> | <B>")
    assert "选项“&lt;B&gt;”重复了" in reply and "示例" in reply


async def test_members_cannot_create_polls(tg):
    await setup_group(tg)
    reply = await command(tg, "/poll Q? | a | b", sender=ALICE)
    assert "operators" in reply and not tg.api.of("sendPoll")


async def test_editing_a_poll_command_does_not_post_another(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | a | b")
    await tg.feed(f.edited(GROUP, ADMIN, "/poll Q2? | a | b", date=tg.now(), edit_date=tg.now()))
    assert len(tg.api.of("sendPoll")) == 1


async def test_poll_from_a_private_chat_goes_to_the_picked_group(tg):
    await setup_group(tg)
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GID}", chat=chat, date=tg.now()))
    reply = await command(tg, "/poll Q? | a | b", chat=chat)
    assert tg.api.of("sendPoll")[0].params["chat_id"] == GID
    assert tg.api.of("sendMessage")[-1].params["chat_id"] == ADMIN["id"] and "#" in reply


# --- votes and tallies ---------------------------------------------------------------------------


async def activity(tg, chat_id: int = GID) -> dict[tuple[int, date], DailyActivity]:
    await tg.flush()
    async with tg.db() as session:
        rows = await session.scalars(select(DailyActivity).where(DailyActivity.chat_id == chat_id))
        return {(row.user_id, row.day): row for row in rows}


async def test_votes_changes_and_retractions(tg):
    await setup_group(tg)
    await command(tg, "/poll Lunch? | Noodles | Rice")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0])
    await vote(tg, poll, BOB, [1])
    await vote(tg, poll, CAROL, [0])
    assert await votes(tg, poll) == {1: "0", 2: "1", 3: "0"}
    await vote(tg, poll, ALICE, [1])  # changed
    await vote(tg, poll, CAROL, [])  # retracted
    assert await votes(tg, poll) == {1: "1", 2: "1"}
    async with tg.db() as session:
        stored = await session.get(Poll, poll.id)
        counts = [o.voter_count for o in await polls.poll_options(session, poll.id)]
    assert stored.total_voters == 2 and counts == [0, 2]  # Telegram's tally
    today = tg.now().date()
    rows = await activity(tg)
    # Every voter took part today, the one who retracted too.
    assert all(rows[(user["id"], today)].poll_answered for user in (ALICE, BOB, CAROL))
    assert not rows[(ADMIN["id"], today)].poll_answered


async def test_participation_lands_on_the_chat_local_day(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/settimezone Asia/Shanghai", date=tg.now()))
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    tg.clock.set(datetime(2026, 11, 25, 17, 30, tzinfo=UTC))  # 01:30 on the 26th in Shanghai
    await vote(tg, poll, ALICE, [0])
    assert (await activity(tg))[(ALICE["id"], date(2026, 11, 26))].poll_answered


async def test_a_vote_is_recorded_when_the_groups_settings_are_not_cached(tg):
    """The vote then takes a second transaction, after the settings were read (timezone)."""
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/settimezone Asia/Shanghai", date=tg.now()))
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    tg.clock.set(datetime(2026, 11, 25, 17, 30, tzinfo=UTC))  # 01:30 on the 26th in Shanghai
    tg.services.chats.invalidate(GID)
    await vote(tg, poll, ALICE, [1])
    assert await votes(tg, poll) == {ALICE["id"]: "1"}
    assert (await activity(tg))[(ALICE["id"], date(2026, 11, 26))].poll_answered


async def test_answers_to_polls_the_bot_did_not_send_are_ignored(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    await tg.feed(f.poll_answer("123456", ALICE, [0]))
    foreign = dict(tg.api.polls[poll.telegram_poll_id]["poll"], id="123456", total_voter_count=9)
    await tg.feed(f.poll_state(foreign))
    # A vote cast as a channel/anonymous admin (voter_chat) is not a member's vote.
    await tg.feed(f.poll_answer(poll.telegram_poll_id, ALICE, [0], voter_chat=GROUP))
    async with tg.db() as session:
        assert not (await session.scalars(select(PollVote))).all()
        assert (await session.get(Poll, poll.id)).total_voters is None
    assert not any(row.poll_answered for row in (await activity(tg)).values())


async def test_anonymous_polls_are_counted_from_telegrams_tallies_only(tg):
    await setup_group(tg)
    await command(tg, "/poll anonymous Secret? | Yes | No")
    poll = await last_poll(tg)
    for voter, options in ((ALICE, [0]), (BOB, [0]), (CAROL, [1])):
        await vote(tg, poll, voter, options)  # Telegram sends only `poll` updates
    assert await votes(tg, poll) == {}
    assert not any(row.poll_answered for row in (await activity(tg)).values())
    await command(tg, f"/closepoll {poll.id}")
    [summary] = summaries(tg)
    assert "67% · 2 — Yes" in summary and "33% · 1 — No" in summary
    assert "Voters: 3" in summary and "counts only" in summary
    # Active members: Ada (her commands) — fewer than the voters, so the voters count.
    assert "turnout 100% of 3 active members" in summary


async def test_a_stale_tally_does_not_overwrite_the_final_one(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0])
    stale = tg.api.polls[poll.telegram_poll_id]["poll"] | {"total_voter_count": 0}
    await command(tg, f"/closepoll {poll.id}")
    await tg.feed(f.poll_state(stale))
    async with tg.db() as session:
        stored = await session.get(Poll, poll.id)
    assert stored.tally_final and stored.total_voters == 1


# --- closing ------------------------------------------------------------------------------------


async def test_closes_on_time_exactly_once(tg):
    await setup_group(tg)
    await command(tg, "/poll close=2h Lunch? | Noodles | Rice")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [1])
    job = close_job(tg.app, "poll", poll.id)
    tg.clock.advance(hours=2)
    await job.run(tg.app)
    await job.run(tg.app)  # a second firing (or a second process) finds it claimed
    stops = tg.api.of("stopPoll")
    assert len(stops) == 1
    assert stops[0].params == {"chat_id": GID, "message_id": poll.message_id}
    [summary] = summaries(tg)
    call = [c for c in tg.api.of("sendMessage") if "Results" in c.params["text"]][0]
    assert call.params["reply_parameters"]["message_id"] == poll.message_id
    assert "100% · 1 — Rice" in summary
    async with tg.db() as session:
        stored = await session.get(Poll, poll.id)
    assert stored.state == "closed" and stored.closed_at == tg.now()
    assert stored.summary_message_id is not None and stored.tally_final
    reply = await command(tg, f"/closepoll {poll.id}")
    assert "already closed" in reply
    assert len(tg.api.of("stopPoll")) == 1 and len(summaries(tg)) == 1


async def restarted(settings, engine, tg):
    """A second process on the same database and Bot API (the first one crashed)."""
    app = build_app(
        settings,
        engine=engine,
        request=tg.api,
        clock=tg.clock,
        rate_limiter=False,
        concurrent=False,
    )
    errors: list[BaseException] = []

    async def collect(update: object, context: Any) -> None:
        errors.append(context.error)

    app.add_error_handler(collect)
    return app, errors


@both_databases
async def test_a_close_due_during_downtime_runs_at_start_up_once(tg, settings, engine):
    await setup_group(tg)
    await command(tg, "/poll close=1h Q? | a | b")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0])
    tg.clock.advance(hours=5)  # the bot was down when the poll was due
    first, errors_1 = await restarted(settings, engine, tg)
    second, errors_2 = await restarted(settings, engine, tg)
    async with first, second:
        await schedule.on_startup(first)
        await schedule.on_startup(second)
        job_1, job_2 = close_job(first, "poll", poll.id), close_job(second, "poll", poll.id)
        assert job_1.job.trigger.run_date <= tg.now()  # due: runs as soon as jobs start
        assert job_1.job.misfire_grace_time is None  # never skipped for being late
        await job_1.run(first)
        await job_2.run(second)
    await close_job(tg.app, "poll", poll.id).run(tg.app)  # the old process's job, if it woke
    assert not errors_1 and not errors_2
    assert len(tg.api.of("stopPoll")) == 1 and len(summaries(tg)) == 1
    assert "100% · 1 — a" in summaries(tg)[0]


async def test_an_abandoned_close_is_retried_after_the_lease_without_stopping_twice(
    tg, settings, engine
):
    await setup_group(tg)
    await command(tg, "/poll close=1h Q? | a | b")
    poll = await last_poll(tg)
    tg.clock.advance(hours=1)
    # A process claimed the close, stopped the poll, and died before posting the summary.
    async with tg.services.db.begin() as session:
        assert await polls.claim_close(
            session, "poll", poll.id, now=tg.now(), lease=schedule.LEASE
        )
        await polls.mark_stopped(session, poll.id, now=tg.now())
    assert not await schedule.close(tg.app, "poll", poll.id)  # claimed by the dead process
    app, errors = await restarted(settings, engine, tg)
    async with app:
        await schedule.on_startup(app)
        job = close_job(app, "poll", poll.id)
        assert job.job.trigger.run_date == tg.now() + schedule.LEASE
        tg.clock.advance(minutes=5)
        await job.run(app)
    assert not errors
    assert not tg.api.of("stopPoll") and len(summaries(tg)) == 1


async def test_telegram_failure_is_retried_later(tg):
    await setup_group(tg)
    await command(tg, "/poll close=1h Q? | a | b")
    poll = await last_poll(tg)
    tg.clock.advance(hours=1)
    tg.api.fail("stopPoll", 502, "Bad Gateway")
    assert not await schedule.close(tg.app, "poll", poll.id)
    assert not summaries(tg)
    retry = close_job(tg.app, "poll", poll.id)
    assert retry.job.trigger.run_date == tg.now() + schedule.LEASE
    tg.clock.advance(minutes=5)
    await retry.run(tg.app)
    assert len(tg.api.of("stopPoll")) == 2 and len(summaries(tg)) == 1


async def test_a_poll_telegram_already_closed_still_gets_its_summary(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [1])
    tg.api.fail("stopPoll", 400, "Bad Request: poll has already been closed")
    await command(tg, f"/closepoll {poll.id}")
    [summary] = summaries(tg)
    assert "100% · 1 — b" in summary  # from the last tally Telegram sent


async def test_closepoll_closes_early_and_cancels_the_schedule(tg):
    await setup_group(tg)
    await command(tg, "/poll close=1d Q? | a | b")
    poll = await last_poll(tg)
    job = close_job(tg.app, "poll", poll.id)
    reply = await command(tg, f"/closepoll #{poll.id}")
    assert "Results of poll" in reply  # the summary is the answer in the group
    assert len(tg.api.of("stopPoll")) == 1 and len(summaries(tg)) == 1
    assert job.removed
    assert not await schedule.close(tg.app, "poll", poll.id)
    assert len(tg.api.of("stopPoll")) == 1 and len(summaries(tg)) == 1


async def test_closepoll_bad_ids(tg):
    await setup_group(tg)
    await setup_group(tg, OTHER)
    await command(tg, "/poll Q? | a | b", chat=OTHER)
    elsewhere = await last_poll(tg)
    assert "Example" in await command(tg, "/closepoll")
    assert "Example" in await command(tg, "/closepoll lunch")
    assert "no poll 999" in await command(tg, "/closepoll 999")
    assert f"no poll {elsewhere.id}" in await command(tg, f"/closepoll {elsewhere.id}")
    assert "Only the group's operators" in await command(tg, "/closepoll 1", sender=ALICE)
    assert not tg.api.of("stopPoll")


async def test_closepoll_from_a_private_chat_says_where_the_results_are(tg):
    await setup_group(tg)
    await command(tg, "/poll Q? | a | b")
    poll = await last_poll(tg)
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GID}", chat=chat, date=tg.now()))
    reply = await command(tg, f"/closepoll {poll.id}", chat=chat)
    assert "results are posted in Poll &lt;Group&gt;" in reply
    assert len(summaries(tg)) == 1


# --- the summary's arithmetic --------------------------------------------------------------------


def test_percent_and_bar_round_half_up():
    assert [polls.percent(n, 8) for n in (0, 1, 3, 4, 8)] == [0, 13, 38, 50, 100]
    assert [polls.percent(n, 3) for n in (1, 2)] == [33, 67]
    assert polls.percent(5, 0) == 0
    assert polls.bar(3, 7) == "████░░░░░░"  # 4.29 cells
    assert polls.bar(4, 7) == "██████░░░░"  # 5.71 cells
    assert polls.bar(1, 20) == "█░░░░░░░░░"  # 0.5 cell rounds up
    assert polls.bar(0, 0) == "░" * 10 and polls.bar(7, 7) == "█" * 10


def test_compute_result_for_a_quiz():
    poll = Poll(
        id=7,
        chat_id=GID,
        telegram_poll_id="p",
        message_id=1,
        question="Q",
        kind="quiz",
        correct_option=1,
        created_by=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    options = [PollOption(poll_id=7, position=i, text=t) for i, t in enumerate("abc")]
    result = polls.compute_result(poll, options, [3, 4, 0], voters=7, active=10)
    assert [(o.count, o.percent, o.correct) for o in result.options] == [
        (3, 43, False),
        (4, 57, True),
        (0, 0, False),
    ]
    assert (result.voters, result.active, result.turnout) == (7, 10, 70)
    assert (result.right, result.right_percent, result.correct_text) == (4, 57, "b")
    # Active members never fewer than voters (anonymous voters may never have posted).
    assert polls.compute_result(poll, options, [3, 4, 0], voters=7, active=2).turnout == 100
    assert polls.compute_result(poll, options, [0, 0, 0], voters=0, active=0).turnout is None


async def test_summary_arithmetic_and_turnout_against_the_periods_active_members(tg):
    await setup_group(tg)
    yesterday = tg.now() - timedelta(days=1)
    await tg.feed(f.message(GROUP, f.user(6, "Frank"), "yesterday", date=yesterday))
    await tg.feed(f.message(GROUP, DAVE, "hello", date=tg.now()))
    await command(tg, "/poll close=1d Lunch? | Noodles | Rice | <Salad>")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0])
    await vote(tg, poll, BOB, [1])
    await vote(tg, poll, CAROL, [1])
    tg.clock.advance(hours=20)  # next day: Eve is active within the poll's period
    await tg.feed(f.message(GROUP, EVE, "hi", date=tg.now()))
    tg.clock.advance(hours=4)
    await close_job(tg.app, "poll", poll.id).run(tg.app)
    [summary] = summaries(tg)
    lines = summary.split("\n")
    assert lines[1] == "<b>Lunch?</b>"
    assert lines[2] == "<code>███░░░░░░░</code> 33% · 1 — Noodles"
    assert lines[3] == "<code>███████░░░</code> 67% · 2 — Rice"
    assert lines[4] == "<code>░░░░░░░░░░</code> 0% · 0 — &lt;Salad&gt;"
    # Active in the period: Ada (her command), Dave, Alice, Bob, Carol, Eve — not Frank.
    assert lines[5] == "👥 Voters: 3 · turnout 50% of 6 active members"


async def test_quiz_summary_gives_the_right_answer_and_share(tg):
    await setup_group(tg)
    await command(tg, "/poll quiz=2 2 + 2 = ? | 3 | 4 | 5 | explain: count <fingers>")
    poll = await last_poll(tg)
    for voter, options in ((ALICE, [1]), (BOB, [1]), (CAROL, [0]), (DAVE, [1])):
        await vote(tg, poll, voter, options)
    await command(tg, f"/closepoll {poll.id}")
    [summary] = summaries(tg)
    assert "75% · 3 — 4 ✅" in summary and "25% · 1 — 3\n" in summary
    assert "Right answer: 4 — 3 of 4 got it right (75%)" in summary
    assert "💡 count &lt;fingers&gt;" in summary


async def test_multiple_answer_percentages_are_of_voters(tg):
    await setup_group(tg)
    await command(tg, "/poll multi Days? | Mon | Wed | Fri")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0, 1])
    await vote(tg, poll, BOB, [1, 2])
    await command(tg, f"/closepoll {poll.id}")
    [summary] = summaries(tg)
    assert "50% · 1 — Mon" in summary and "100% · 2 — Wed" in summary
    assert "Voters: 2" in summary and "more than 100%" in summary


async def test_summary_in_chinese(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/language zh", date=tg.now()))
    await command(tg, "/poll 午饭？| 面 | 饭")
    poll = await last_poll(tg)
    await vote(tg, poll, ALICE, [0])
    await command(tg, f"/closepoll {poll.id}")
    summary = tg.api.sent_texts(GID)[-1]
    assert f"投票 #{poll.id} 结果" in summary and "投票人数：1" in summary


# --- surveys ------------------------------------------------------------------------------------

SURVEY = (
    "/survey close=1d Team offsite\n"
    "Where? | Beach | Mountains\n"
    "multi What? | Hike | Kayak | Museum\n"
    "quiz=1 Founded in 2020? | Yes | No"
)


async def survey_rows(tg) -> tuple[Survey, list[Poll]]:
    async with tg.db() as session:
        survey = (await session.scalars(select(Survey))).one()
        questions = list(
            await session.scalars(
                select(Poll).where(Poll.survey_id == survey.id).order_by(Poll.position)
            )
        )
    return survey, questions


async def test_survey_posts_its_questions_and_one_summary(tg):
    await setup_group(tg)
    reply = await command(tg, SURVEY)
    header = tg.api.sent_texts(GID)[0]
    assert "Survey: Team offsite" in header and "all 3 questions" in header
    sent = tg.api.of("sendPoll")
    assert [c.params["question"] for c in sent] == ["Where?", "What?", "Founded in 2020?"]
    assert sent[1].params["allows_multiple_answers"] and sent[2].params["type"] == "quiz"
    assert all(c.params["is_anonymous"] is False for c in sent)
    survey, questions = await survey_rows(tg)
    assert [q.position for q in questions] == [0, 1, 2]
    assert all(q.close_at == survey.close_at == tg.now() + timedelta(days=1) for q in questions)
    assert f"S{survey.id}" in reply and f"#{questions[0].id}" in reply
    assert not tg.app.job_queue.get_jobs_by_name(schedule.job_name("poll", questions[0].id))

    q1, q2, q3 = questions
    for poll, options in ((q1, [0]), (q2, [0, 1]), (q3, [0])):
        await vote(tg, poll, ALICE, options)  # Alice answers everything
    await vote(tg, q1, BOB, [1])
    await vote(tg, q3, BOB, [1])
    await vote(tg, q2, CAROL, [2])
    await vote(tg, q2, DAVE, [2])
    await vote(tg, q2, DAVE, [])  # retracted: Dave answered nothing
    tg.clock.advance(days=1)
    job = close_job(tg.app, "survey", survey.id)
    await job.run(tg.app)
    await job.run(tg.app)
    assert len(tg.api.of("stopPoll")) == 3
    [summary] = summaries(tg, "Survey results")
    assert "<b>1. Where?</b>" in summary and "<b>3. Founded in 2020?</b>" in summary
    assert "50% · 1 — Beach" in summary and "Right answer: Yes — 1 of 2 got it right" in summary
    assert "1 of 3 members who answered did all 3 questions (33%)" in summary
    # Active: Ada, Alice, Bob, Carol and Dave (he voted, then retracted).
    assert "Turnout: 3 members, 60% of 5 active members" in summary
    survey, questions = await survey_rows(tg)
    assert survey.state == "closed" and all(q.state == "closed" for q in questions)
    assert "already closed" in await command(tg, f"/closepoll {questions[1].id}")


async def test_closepoll_on_a_survey_question_closes_the_whole_survey(tg):
    await setup_group(tg)
    await command(tg, SURVEY)
    survey, questions = await survey_rows(tg)
    job = close_job(tg.app, "survey", survey.id)
    await command(tg, f"/closepoll {questions[1].id}")
    assert len(tg.api.of("stopPoll")) == 3 and len(summaries(tg, "Survey results")) == 1
    assert job.removed
    assert "already closed" in await command(tg, f"/closepoll S{survey.id}")


BAD_SURVEYS = [
    ("/survey", "Create a survey"),
    ("/survey Title", "at least 2 questions"),
    ("/survey Title\nOnly one? | a | b", "at least 2 questions"),
    ("/survey anonymous Title\nA? | a | b\nB? | a | b", "Surveys can't be anonymous"),
    ("/survey Title\nA? | a | b\nanonymous B? | a | b", "Surveys can't be anonymous"),
    ("/survey Title\nA? | a | b\nclose=2h B? | a | b", "on the survey's first line"),
    ("/survey multi Title\nA? | a | b\nB? | a | b", "go on a question's line"),
    ("/survey Title | A? | a | b", "each question on a line of its own"),
    ("/survey Title\nA? | a | b\nJust a question", "Question 2: put the options"),
    ("/survey Title\nA? | a | b\nB? | a", "Question 2: A poll needs at least 2 options"),
    ("/survey close=2h\nA? | a | b\nB? | a | b", "needs a title"),
    ("/survey T\n" + "\n".join(f"Q{i}? | a | b" for i in range(11)), "Too many questions: 11"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_SURVEYS)
async def test_bad_surveys_are_explained(tg, text, problem):
    await setup_group(tg)
    reply = await command(tg, text)
    assert problem in reply and "Example" in reply
    assert not tg.api.of("sendPoll") and len(tg.api.of("sendMessage")) == 1


# --- /polls and /quizpoints ---------------------------------------------------------------------


async def test_polls_lists_open_and_recent_with_results(tg):
    await setup_group(tg)
    assert "No polls yet" in await command(tg, "/polls")
    await command(tg, "/poll close=2h Lunch? | Noodles | Rice")
    lunch = await last_poll(tg)
    await command(tg, "/poll Old <one>? | x | y")
    old = await last_poll(tg)
    await vote(tg, lunch, ALICE, [1])
    await vote(tg, old, BOB, [0])
    await command(tg, f"/closepoll {old.id}")
    await command(tg, SURVEY)
    listing = await command(tg, "/polls")
    open_part, recent_part = listing.split("Recently closed")
    assert f"#{lunch.id} <b>Lunch?</b> — 1 voters, closes 2026-11-25 14:00" in open_part
    assert "Noodles 0 (0%) · Rice 1 (100%)" in open_part
    assert "📋 <b>Team offsite</b> — 0 answered" in open_part
    assert f"#{old.id} <b>Old &lt;one&gt;?</b> — 1 voters, closed 2026-11-25 12:00" in recent_part
    assert "x 1 (100%) · y 0 (0%)" in recent_part
    assert "Only the group's operators" in await command(tg, "/polls", sender=ALICE)


async def test_quizpoints_setting_and_the_single_award_hook(tg, monkeypatch):
    awarded: list[dict[str, Any]] = []

    async def award(session, **kwargs):
        awarded.append(kwargs)
        return True

    monkeypatch.setattr(polls, "award_quiz_points", award)
    await setup_group(tg)
    assert "earn no points" in await command(tg, "/quizpoints")
    assert "0 to 1000" in await command(tg, "/quizpoints lots")
    assert "now earns 5 points" in await command(tg, "/quizpoints 5")
    assert "earns 5 points" in await command(tg, "/quizpoints")
    await command(tg, "/poll quiz=1 Q? | right | wrong")
    quiz = await last_poll(tg)
    await vote(tg, quiz, ALICE, [0])
    await vote(tg, quiz, BOB, [1])
    await command(tg, "/poll Not a quiz? | right | wrong")
    await vote(tg, await last_poll(tg), CAROL, [0])
    assert [(a["user_id"], a["amount"], a["poll_id"]) for a in awarded] == [(1, 5, quiz.id)]
    await command(tg, "/quizpoints 0")
    await command(tg, "/poll quiz=1 Q2? | right | wrong")
    await vote(tg, await last_poll(tg), ALICE, [0])
    assert len(awarded) == 1


async def test_right_quiz_answers_earn_points_in_the_ledger_once(tg):
    from bot import points

    await setup_group(tg)
    await command(tg, "/quizpoints 5")
    await command(tg, "/poll quiz=1 Q? | right | wrong")
    quiz = await last_poll(tg)
    await vote(tg, quiz, ALICE, [0])
    await vote(tg, quiz, ALICE, [0])  # Telegram redelivers the same answer
    await vote(tg, quiz, BOB, [1])
    async with tg.db() as session:
        assert await points.balance(session, chat_id=GID, user_id=ALICE["id"]) == 5
        assert await points.balance(session, chat_id=GID, user_id=BOB["id"]) == 0
        assert await points.audit(session, chat_id=GID) == []


# --- group → supergroup -------------------------------------------------------------------------


async def test_polls_follow_a_group_that_became_a_supergroup(tg):
    small = f.group(-4001, "Small", type="group")
    await setup_group(tg, small)
    await command(tg, "/poll Q? | a | b", chat=small)
    poll = await last_poll(tg)
    await tg.feed(f.message(small, ADMIN, None, date=tg.now(), migrate_to_chat_id=GID))
    await vote(tg, poll, ALICE, [0])
    moved = await last_poll(tg)
    assert moved.chat_id == GID
    assert (await activity(tg))[(ALICE["id"], tg.now().date())].poll_answered
    tg.api.set_admins(GID, ADMIN)
    tg.api.fail("stopPoll", 400, "Bad Request: message to stop not found")
    await command(tg, f"/closepoll {poll.id}")
    [summary] = summaries(tg)
    assert "100% · 1 — a" in summary


def test_poll_answers_are_ordered_per_voter():
    # poll_answer updates have no chat: a voter's changes are still handled in order.
    from bot.updates import ordering_key

    update = Update.de_json(f.poll_answer("1", ALICE, [0]), None)
    assert ordering_key(update) == ALICE["id"]


async def test_telegram_refusing_a_poll_is_reported(tg):
    await setup_group(tg)
    tg.api.fail("sendPoll", 400, "Bad Request: POLL_ANSWERS_INVALID")
    reply = await command(tg, "/poll close=1h Q? | a | b")
    assert "Telegram refused the poll: Poll_answers_invalid" in reply  # as PTB words it
    assert not await all_polls(tg) and not tg.app.job_queue.jobs()
    tg.api.fail("sendPoll", 400, "Bad Request: POLL_ANSWERS_INVALID")
    reply = await command(tg, SURVEY)
    assert "Telegram refused the poll" in reply
    async with tg.db() as session:
        survey = (await session.scalars(select(Survey))).one()
    assert survey.state == "closed" and not tg.app.job_queue.jobs()
