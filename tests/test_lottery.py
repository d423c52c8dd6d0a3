"""Lotteries through the real Application: creating, entering (button and 口令), conditions,
exactly-once entries and draws (at a time, at N entrants, at start-up, racing /draw and a
second process), leavers skipped, rerolls, verification, /cancel /lotteries /entrants.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from bot import points
from bot.app import build_app, startup
from bot.cli import main as cli_main
from bot.lottery import ENTRY, LOTTERY, Lottery, LotteryEntry, verify
from bot.models import DailyActivity
from schedules.lottery import runtime_of
from tests import factories as f
from tests.conftest import Harness, both_databases
from tests.recording import BOT_USER, RecordingRequest

GROUP = f.group(-1001000000001, "Lucky <Group>")
OTHER = f.group(-1001000000002, "Other")
ADMIN = f.user(10, "Ada")
ALICE = f.user(21, "Alice <3")
BOB = f.user(22, "Bob & Co")
CAROL = f.user(23, "Carol")
DAVE = f.user(24, "Dave")
ROBOT = f.user(77, "Robo", is_bot=True)
SEED = bytes(range(100, 132))
COMMITMENT = hashlib.sha256(SEED).hexdigest()


# --- helpers ----------------------------------------------------------------------------------


async def setup_group(tg: Harness, chat: dict = GROUP) -> None:
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)
    runtime_of(tg.app).seed_source = lambda: SEED
    tg.api.clear()


async def create(tg: Harness, text: str, chat: dict = GROUP) -> Lottery:
    await tg.feed(f.message(chat, ADMIN, f"/lottery {text}", date=tg.now()))
    async with tg.db() as session:
        lottery = await session.scalar(select(Lottery).order_by(Lottery.id.desc()).limit(1))
    assert lottery is not None and lottery.message_id is not None, tg.api.sent_texts()
    return lottery


async def load(tg: Harness, lottery_id: int) -> Lottery:
    async with tg.db() as session:
        return await session.get(Lottery, lottery_id, populate_existing=True)


async def entries(tg: Harness, lottery_id: int) -> list[LotteryEntry]:
    async with tg.db() as session:
        rows = await session.scalars(
            select(LotteryEntry).where(LotteryEntry.lottery_id == lottery_id)
        )
        return list(rows)


def press(
    lottery: Lottery,
    user: dict,
    *,
    chat: dict = GROUP,
    data: str | None = None,
    when: datetime | None = None,
) -> dict[str, Any]:
    post = f.message_dict(
        chat,
        BOT_USER,
        "lottery",
        date=when or datetime(2026, 11, 25, 12, tzinfo=UTC),
        message_id=lottery.message_id or 1,
    )
    return f.callback(user, data or f"lottery:join:{lottery.id}", message=post)


def answers(api: RecordingRequest) -> list[dict[str, Any]]:
    return [call.params for call in api.of("answerCallbackQuery")]


async def run_jobs(tg: Harness, prefix: str, app: Any = None) -> int:
    """Run (once) every job whose name starts with `prefix`, as the scheduler would."""
    app = app or tg.app
    jobs = [job for job in app.job_queue.jobs() if job.name.startswith(prefix)]
    for job in jobs:
        job.schedule_removal()
        await job.run(app)
    return len(jobs)


def expected_order(seed: bytes, lottery_id: int, users: list[dict]) -> list[int]:
    """The documented ranking, computed independently of the bot."""
    return sorted(
        (u["id"] for u in users),
        key=lambda uid: hmac.new(seed, f"{lottery_id}:{uid}".encode(), hashlib.sha256).digest(),
    )


def announcements(api: RecordingRequest) -> list[str]:
    return [text for text in api.sent_texts(GROUP["id"]) if "is drawn" in text]


# --- creating ---------------------------------------------------------------------------------


async def test_lottery_post_has_button_count_and_commitment_not_the_seed(tg):
    await setup_group(tg)
    await tg.feed(
        f.message(GROUP, ADMIN, "/settimezone Asia/Shanghai", date=tg.now()),
    )
    lottery = await create(tg, "Keyboard <RGB> | winners 2 | draw at 2026-12-24 20:00")
    post = tg.api.of("sendMessage")[-1].params
    assert post["chat_id"] == GROUP["id"]
    text = post["text"]
    assert "Keyboard &lt;RGB&gt;" in text and "Winners: 2" in text
    assert "2026-12-24 20:00 (Asia/Shanghai)" in text and "Entrants: 0" in text
    assert COMMITMENT in text and SEED.hex() not in text
    buttons = post["reply_markup"]["inline_keyboard"]
    assert buttons[0][0]["callback_data"] == f"lottery:join:{lottery.id}"
    assert lottery.commitment == COMMITMENT and lottery.state == "open"
    assert lottery.draw_at == datetime(2026, 12, 24, 12, tzinfo=UTC)
    jobs = tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    assert len(jobs) == 1 and jobs[0].job.trigger.run_date == lottery.draw_at


async def test_bad_arguments_explain_with_an_example_and_create_nothing(tg):
    await setup_group(tg)
    for text in (
        "/lottery",
        "/lottery Prize | winners 5 | draw at 3 entries",
        "/lottery Prize | winners 2",
        "/lottery Prize | draw in 2h | sparkle <b>",
    ):
        await tg.feed(f.message(GROUP, ADMIN, text, date=tg.now()))
    texts = tg.api.sent_texts(GROUP["id"])
    assert len(texts) == 4 and all("/lottery" in t for t in texts)
    assert "3 entries can't give 5 winners" in texts[1]
    assert "Say when to draw" in texts[2]
    assert "sparkle &lt;b&gt;" in texts[3]
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(LOTTERY)) == 0


async def test_members_cannot_start_lotteries(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ALICE, "/lottery Prize | draw in 2h", date=tg.now()))
    assert tg.api.sent_texts() == ["Only the group's operators (admins) can use this command."]


async def test_operator_creates_from_a_private_chat(tg):
    await setup_group(tg)
    chat = f.private(ADMIN)
    await tg.feed(f.callback(ADMIN, f"groups:{GROUP['id']}", chat=chat, date=tg.now()))
    await tg.feed(f.message(chat, ADMIN, "/lottery 红包 | 名额 2 | 满10人开奖", date=tg.now()))
    posts = tg.api.sent_texts(GROUP["id"])
    assert len(posts) == 1 and "红包" in posts[0]
    assert "is posted in Lucky &lt;Group&gt;" in tg.api.sent_texts(ADMIN["id"])[-1]
    await tg.feed(f.message(chat, ADMIN, "/lotteries", date=tg.now()))
    assert "红包 — 0 entrants, draws at 10 entrants" in tg.api.sent_texts(ADMIN["id"])[-1]


# --- entering ---------------------------------------------------------------------------------


async def test_join_button_enters_once_and_marks_participation(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h")
    await tg.feed(press(lottery, ALICE), press(lottery, ALICE))
    got = answers(tg.api)
    assert "You're in! 1 entrants" in got[0]["text"] and not got[0].get("show_alert")
    assert "already in" in got[1]["text"]
    [entry] = await entries(tg, lottery.id)
    assert (entry.user_id, entry.name, entry.via) == (ALICE["id"], "Alice <3", "button")
    async with tg.db() as session:
        day = await session.get(DailyActivity, (GROUP["id"], ALICE["id"], tg.now().date()))
    assert day is not None and day.lottery_entered


@both_databases
async def test_twenty_concurrent_presses_by_one_member_make_one_entry(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h")
    await tg.feed_concurrently(*(press(lottery, ALICE) for _ in range(20)))
    assert len(await entries(tg, lottery.id)) == 1
    assert (await load(tg, lottery.id)).entry_count == 1
    got = answers(tg.api)
    assert len(got) == 20
    assert sum("You're in" in a["text"] for a in got) == 1
    assert sum("already in" in a["text"] for a in got) == 19


async def test_forged_and_foreign_presses_are_answered_harmlessly(tg):
    await setup_group(tg)
    await setup_group(tg, OTHER)
    lottery = await create(tg, "Hat | draw in 2h")
    other = await create(tg, "Cap | draw in 2h", chat=OTHER)
    forged = [
        press(lottery, ALICE, data="lottery:join:abc"),
        press(lottery, ALICE, data="lottery:join:"),
        press(lottery, ALICE, data="lottery:join:99999999999999999999999"),
        press(lottery, ALICE, data="lottery:join:-1"),
        press(lottery, ALICE, data=f"lottery:join:{lottery.id + 100}"),
        press(lottery, ALICE, data="lottery:steal:1"),
        press(other, ALICE),  # another chat's lottery, pressed here
        press(lottery, ALICE, chat=OTHER),  # this lottery, on a message in another chat
        press(lottery, ALICE, chat=f.private(ALICE)),
    ]
    await tg.feed(*forged)
    got = answers(tg.api)
    assert len(got) == len(forged)
    assert all(a.get("show_alert") and "not valid" in a["text"] for a in got)
    assert await entries(tg, lottery.id) == [] and await entries(tg, other.id) == []


async def test_bots_service_accounts_and_outsiders_cannot_enter(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h")

    def status_of(params: dict) -> dict:
        left = int(params["user_id"]) == DAVE["id"]
        return {"status": "left" if left else "member", "user": DAVE if left else ALICE}

    tg.api.responders["getChatMember"] = status_of
    await tg.feed(press(lottery, ROBOT), press(lottery, f.TELEGRAM_SERVICE), press(lottery, DAVE))
    got = answers(tg.api)
    assert "Bots" in got[0]["text"] and "Bots" in got[1]["text"]
    assert "Only members of this group" in got[2]["text"]
    assert all(a["show_alert"] for a in got)
    assert await entries(tg, lottery.id) == []


async def test_conditions_refused_privately_then_accepted(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h | min points 50 | checkins 2/3")
    await tg.feed(press(lottery, ALICE))
    assert "at least 50 points; you have 0" in answers(tg.api)[-1]["text"]
    async with tg.services.db.begin() as session:
        await points.award(
            session,
            chat_id=GROUP["id"],
            user_id=ALICE["id"],
            amount=60,
            reason="test",
            source="test",
            source_key="a",
            now=tg.now(),
        )
    await tg.feed(press(lottery, ALICE))
    assert "check-ins on 2 of the last 3 days; you have 0" in answers(tg.api)[-1]["text"]
    # Checked in two days ago (counts) and four days ago (outside the window).
    await tg.feed(f.message(GROUP, ALICE, "/checkin", date=tg.now() - timedelta(days=4)))
    await tg.feed(press(lottery, ALICE))
    assert "you have 0" in answers(tg.api)[-1]["text"]
    await tg.feed(f.message(GROUP, ALICE, "/checkin", date=tg.now() - timedelta(days=2)))
    await tg.feed(press(lottery, ALICE))
    assert "you have 1" in answers(tg.api)[-1]["text"]
    await tg.feed(f.message(GROUP, ALICE, "/checkin", date=tg.now()))
    await tg.feed(press(lottery, ALICE))
    assert "You're in" in answers(tg.api)[-1]["text"]
    assert all(a.get("show_alert") for a in answers(tg.api)[:-1])


async def test_membership_age_and_new_member_conditions(tg):
    await setup_group(tg)
    now = tg.now()
    await tg.feed(
        f.new_members(GROUP, [ALICE], date=now - timedelta(days=40)),
        f.new_members(GROUP, [BOB], date=now - timedelta(days=3)),
        f.message(GROUP, CAROL, "hi", date=now - timedelta(days=1)),
    )
    await tg.flush()
    veterans = await create(tg, "Old | draw in 2h | member 30d")
    newcomers = await create(tg, "New | draw in 2h | joined after 2026-11-20")
    tg.api.clear()
    await tg.feed(*(press(veterans, u) for u in (ALICE, BOB, CAROL)))
    await tg.feed(*(press(newcomers, u) for u in (ALICE, BOB, CAROL)))
    got = [a["text"] for a in answers(tg.api)]
    assert "You're in" in got[0]
    assert "at least 30 days; I've known you here since 2026-11-22" in got[1]
    assert "at least 30 days" in got[2]
    assert "joined on or after 2026-11-20; you joined on 2026-10-16" in got[3]
    assert "You're in" in got[4]
    assert "haven't seen you join" in got[5]
    assert [e.user_id for e in await entries(tg, veterans.id)] == [ALICE["id"]]
    assert [e.user_id for e in await entries(tg, newcomers.id)] == [BOB["id"]]


async def test_keyword_entry_is_cheap_quiet_and_checked(tg):
    await setup_group(tg)
    await setup_group(tg, OTHER)
    lottery = await create(tg, "Hat | draw in 2h | 口令 芝麻开门 | min points 1")
    assert set(runtime_of(tg.app).keywords.by_chat) == {GROUP["id"]}
    async with tg.services.db.begin() as session:
        await points.award(
            session,
            chat_id=GROUP["id"],
            user_id=ALICE["id"],
            amount=5,
            reason="test",
            source="test",
            source_key="a",
            now=tg.now(),
        )
    tg.api.clear()
    await tg.feed(
        f.message(GROUP, ALICE, "芝麻开门！", date=tg.now()),
        f.message(GROUP, ALICE, "芝麻开门", date=tg.now()),  # again: nothing more
        f.message(OTHER, BOB, "芝麻开门", date=tg.now()),  # another group: not a keyword there
        f.message(GROUP, BOB, "something else", date=tg.now()),
    )
    assert [e.user_id for e in await entries(tg, lottery.id)] == [ALICE["id"]]
    [entry] = await entries(tg, lottery.id)
    assert entry.via == "keyword"
    reactions = tg.api.of("setMessageReaction")
    assert len(reactions) == 1 and reactions[0].params["chat_id"] == GROUP["id"]
    assert tg.api.of("sendMessage") == []
    # Bob has no points: told privately; if he never started the bot, in the group.
    await tg.feed(f.message(GROUP, BOB, "芝麻开门", date=tg.now()))
    assert "at least 1 points" in tg.api.sent_texts(BOB["id"])[-1]
    tg.api.fail("sendMessage", 403, "Forbidden: bot can't initiate conversation with a user")
    await tg.feed(f.message(GROUP, BOB, "芝麻开门", date=tg.now()))
    assert "Bob &amp; Co, you can't enter" in tg.api.sent_texts(GROUP["id"])[-1]
    # Once cancelled, the keyword is an ordinary message again.
    await tg.feed(f.message(GROUP, ADMIN, f"/cancel {lottery.id}", date=tg.now()))
    assert runtime_of(tg.app).keywords.by_chat == {}


async def test_entrant_count_edits_are_debounced(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h")
    await tg.feed(*(press(lottery, f.user(100 + i, f"M{i}")) for i in range(5)))
    assert tg.api.of("editMessageText") == []
    assert await run_jobs(tg, "lottery-count:") == 1  # one queued job for five entries
    edits = tg.api.of("editMessageText")
    assert len(edits) == 1 and "Entrants: 5" in edits[0].params["text"]
    assert edits[0].params["reply_markup"]["inline_keyboard"]  # the button stays
    assert await run_jobs(tg, "lottery-count:") == 0
    await tg.feed(press(lottery, f.user(200, "Late")))
    assert await run_jobs(tg, "lottery-count:") == 1  # too soon after the last edit…
    assert len(tg.api.of("editMessageText")) == 1
    tg.clock.advance(seconds=5)
    assert await run_jobs(tg, "lottery-count:") == 1  # …so it tried again later
    edits = tg.api.of("editMessageText")
    assert len(edits) == 2 and "Entrants: 6" in edits[1].params["text"]


# --- drawing ----------------------------------------------------------------------------------


async def enter_all(tg: Harness, lottery: Lottery, users: list[dict]) -> None:
    await tg.feed(*(press(lottery, u) for u in users))


async def test_draw_at_time_announces_once_with_seed_and_mentions(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | winners 2 | draw in 2h")
    users = [ALICE, BOB, CAROL, DAVE]
    await enter_all(tg, lottery, users)
    tg.clock.advance(hours=2)
    assert await run_jobs(tg, f"lottery:{lottery.id}") == 1
    order = expected_order(SEED, lottery.id, users)
    [text] = announcements(tg.api)
    names = {u["id"]: u["first_name"] for u in users}
    for place, uid in enumerate(order[:2], start=1):
        escaped = names[uid].replace("&", "&amp;").replace("<", "&lt;")
        assert f'{place}. <a href="tg://user?id={uid}">{escaped}</a>' in text
    assert f'tg://user?id={order[2]}"' not in text
    assert SEED.hex() in text and COMMITMENT in text and "HMAC-SHA256" in text
    stored = await load(tg, lottery.id)
    assert stored.state == "drawn" and stored.announcement_id is not None
    post_edit = tg.api.of("editMessageText")[-1].params
    assert "Drawn" in post_edit["text"] and "reply_markup" not in post_edit
    # The job firing again, /draw, a late press: nothing more.
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now()))
    assert "already drawn" in tg.api.sent_texts(GROUP["id"])[-1]
    await tg.feed(press(lottery, f.user(300, "Late")))
    assert answers(tg.api)[-1]["show_alert"] and "closed" in answers(tg.api)[-1]["text"]
    assert len(announcements(tg.api)) == 1
    assert len(await entries(tg, lottery.id)) == 4


async def test_draw_at_n_entries(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | winners 1 | draw at 3 entries")
    assert not tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    await enter_all(tg, lottery, [ALICE, BOB])
    assert announcements(tg.api) == []
    await enter_all(tg, lottery, [CAROL, DAVE])
    assert len(announcements(tg.api)) == 1
    # Carol, the third, was answered before the draw was announced.
    methods = [(c.method, c.params.get("text", "")) for c in tg.api.calls]
    answered = methods.index(
        ("answerCallbackQuery", "🎉 You're in! 3 entrants so far. Good luck!")
    )
    announced = next(i for i, (m, text) in enumerate(methods) if "is drawn" in text)
    assert answered < announced
    assert "closed" in answers(tg.api)[-1]["text"]  # Dave came fourth
    assert (await load(tg, lottery.id)).entry_count == 3
    assert len(await entries(tg, lottery.id)) == 3


async def test_keyword_entries_can_complete_a_lottery(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw at 2 entries | 口令 抽我")
    await tg.feed(
        f.message(GROUP, ALICE, "抽我", date=tg.now()),
        f.message(GROUP, BOB, "抽我!", date=tg.now()),
        f.message(GROUP, CAROL, "抽我", date=tg.now()),  # closed by now: ignored quietly
    )
    assert len(announcements(tg.api)) == 1
    assert len(await entries(tg, lottery.id)) == 2
    assert len(tg.api.of("setMessageReaction")) == 2


async def make_app(tg: Harness, engine: Any, settings: Any) -> tuple[Any, RecordingRequest]:
    """A second bot process on the same database (its own Bot API recorder)."""
    api = RecordingRequest(now=lambda: tg.clock().timestamp())
    app = build_app(
        settings, engine=engine, request=api, clock=tg.clock, rate_limiter=False, concurrent=False
    )

    async def collect(update: object, context: Any) -> None:
        tg.errors.append(context.error)

    app.add_error_handler(collect)
    return app, api


async def test_due_draw_happens_at_start_up_after_downtime(tg, engine, settings):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 1h")
    await enter_all(tg, lottery, [ALICE, BOB])
    upcoming = await create(tg, "Cap | draw in 5h")
    tg.clock.advance(hours=3)  # the bot was down while the first draw time passed
    app, api = await make_app(tg, engine, settings)
    async with app:
        await startup(app)
        await startup(app)  # a second start (or a second process): no second draw
        await app.bot_data["services"].activity.stop()
    [text] = [t for t in api.sent_texts(GROUP["id"]) if "is drawn" in t]
    assert f"Lottery #{lottery.id} is drawn" in text
    assert (await load(tg, lottery.id)).state == "drawn"
    jobs = app.job_queue.get_jobs_by_name(f"lottery:{upcoming.id}")
    assert jobs and jobs[0].job.trigger.run_date == upcoming.draw_at


@both_databases
async def test_draw_job_racing_draw_commands_in_two_processes(tg, engine, settings):
    await setup_group(tg)
    lottery = await create(tg, "Hat | winners 2 | draw in 1h")
    users = [ALICE, BOB, CAROL, DAVE, f.user(25, "Eve")]
    await enter_all(tg, lottery, users)
    tg.clock.advance(hours=1)
    app, api = await make_app(tg, engine, settings)
    [job] = tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    draw = f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now())
    async with app:
        await asyncio.gather(
            job.run(tg.app),
            tg.feed(draw),
            _feed(app, draw),
        )
    both = announcements(tg.api) + [t for t in api.sent_texts(GROUP["id"]) if "is drawn" in t]
    assert len(both) == 1
    winners = [e for e in await entries(tg, lottery.id) if e.outcome == "won"]
    assert sorted(e.rank for e in winners) == [1, 2]
    order = expected_order(SEED, lottery.id, users)
    assert {e.user_id for e in winners} == set(order[:2])


@both_databases
async def test_entries_racing_the_draw_are_all_in_or_all_refused(tg):
    """Twenty members press while the draw runs: whoever was told "you're in" is in the
    ranking the draw used; everyone else was told it is closed; nobody is half in."""
    await setup_group(tg)
    lottery = await create(tg, "Hat | winners 3 | draw in 1h")
    await enter_all(tg, lottery, [ALICE, BOB])
    tg.clock.advance(hours=1)
    [job] = tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    crowd = [f.user(500 + i, f"M{i}") for i in range(20)]
    tg.api.clear()

    async def draw_meanwhile() -> None:
        while (await load(tg, lottery.id)).entry_count < 5:  # noqa: ASYNC110 (polls the db)
            await asyncio.sleep(0.002)
        await job.run(tg.app)  # …others are under way

    await asyncio.gather(
        tg.feed_concurrently(*(press(lottery, u) for u in crowd)), draw_meanwhile()
    )
    stored = await load(tg, lottery.id)
    rows = await entries(tg, lottery.id)
    got = answers(tg.api)
    admitted = sum("You're in" in a["text"] for a in got)
    refused = sum("closed" in a["text"] for a in got)
    assert admitted + refused == 20
    assert admitted >= 3
    assert len(rows) == stored.entry_count == 2 + admitted
    assert stored.state == "drawn" and len(announcements(tg.api)) == 1
    assert f"Entrants: {2 + admitted}" in announcements(tg.api)[0]
    result = await verify_in(tg, lottery.id)
    assert result.ok and len(result.ranking) == len(rows)


async def _feed(app: Any, data: dict) -> None:
    from telegram import Update

    await app.process_update(Update.de_json(data, app.bot))


async def test_leavers_are_skipped_then_reroll_continues_down_the_ranking(tg):
    await setup_group(tg)
    users = [ALICE, BOB, CAROL, DAVE]
    lottery = await create(tg, "Hat | winners 1 | draw in 1h")
    await enter_all(tg, lottery, users)
    order = expected_order(SEED, lottery.id, users)
    by_id = {u["id"]: u for u in users}
    await tg.feed(f.left_member(GROUP, by_id[order[0]], date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now()))
    [text] = announcements(tg.api)
    assert f"tg://user?id={order[1]}" in text and f"tg://user?id={order[0]}" not in text
    assert "no longer in the group): ranks 1" in text
    # The next member in the ranking leaves too, then an operator rerolls twice.
    await tg.feed(f.left_member(GROUP, by_id[order[2]], date=tg.now()))
    await tg.feed(f.message(GROUP, ADMIN, f"/reroll {lottery.id}", date=tg.now()))
    reroll = tg.api.sent_texts(GROUP["id"])[-1]
    assert "replacement draw" in reroll and f"tg://user?id={order[3]}" in reroll
    assert "(rank 4)" in reroll and "ranks 3" in reroll
    await tg.feed(f.message(GROUP, ADMIN, f"/reroll {lottery.id} 2", date=tg.now()))
    assert "nobody left" in tg.api.sent_texts(GROUP["id"])[-1]
    result = await verify_in(tg, lottery.id)
    assert result.ok and result.expected == [order[1], order[3]]


async def test_draw_without_entrants_and_press_after_cancel(tg):
    await setup_group(tg)
    empty = await create(tg, "Hat | winners 2 | draw in 1h")
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {empty.id}", date=tg.now()))
    [text] = announcements(tg.api)
    assert "no eligible entrants" in text and "Entrants: 0" in text
    assert (await verify_in(tg, empty.id)).ok
    cancelled = await create(tg, "Cap | draw in 1h")
    await tg.feed(f.message(GROUP, ADMIN, f"/cancel {cancelled.id}", date=tg.now()))
    await tg.feed(press(cancelled, ALICE))
    assert answers(tg.api)[-1]["show_alert"] and "closed" in answers(tg.api)[-1]["text"]
    assert await entries(tg, cancelled.id) == []


async def verify_in(tg: Harness, lottery_id: int) -> Any:
    async with tg.db() as session:
        return await verify(session, lottery_id)


async def test_reroll_and_draw_argument_errors(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 1h")
    tg.api.clear()
    for text in (
        f"/reroll {lottery.id}",
        f"/reroll {lottery.id} many",
        "/reroll",
        "/draw 999",
        f"/cancel {lottery.id}",
        f"/cancel {lottery.id}",
        f"/draw {lottery.id}",
    ):
        await tg.feed(f.message(GROUP, ADMIN, text, date=tg.now()))
    texts = tg.api.sent_texts(GROUP["id"])
    assert "hasn't been drawn" in texts[0]
    assert "/reroll 12 2" in texts[1]
    assert "/reroll 12" in texts[2]
    assert "no lottery #999" in texts[3]
    assert f"#{lottery.id} is cancelled" in texts[4]
    assert "is cancelled, so it can't be cancelled" in texts[5]
    assert "was cancelled" in texts[6]
    assert not tg.app.job_queue.get_jobs_by_name(f"lottery:{lottery.id}")
    assert "Cancelled" in tg.api.of("editMessageText")[-1].params["text"]


@both_databases
async def test_verify_detects_tampering_and_the_cli_reports(tg, database_url, monkeypatch, capsys):
    await setup_group(tg)
    users = [ALICE, BOB, CAROL]
    lottery = await create(tg, "Hat | winners 1 | draw in 1h")
    await enter_all(tg, lottery, users)
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now()))
    result = await verify_in(tg, lottery.id)
    assert result.ok and result.commitment_ok
    order = expected_order(SEED, lottery.id, users)
    assert result.recorded == [order[0]] and result.ranking == order

    code, out, err = await cli_verify(monkeypatch, capsys, database_url, lottery.id)
    assert code == 0, out + err
    assert "MATCH" in out and f"recorded:   {order[0]}" in out and SEED.hex() in out

    # Someone edits the winner in the database: verification fails.
    async with tg.services.db.begin() as session:
        await session.execute(
            update(ENTRY).where(ENTRY.c.lottery_id == lottery.id).values(outcome=None, rank=None)
        )
        await session.execute(
            update(ENTRY)
            .where(ENTRY.c.lottery_id == lottery.id, ENTRY.c.user_id == order[2])
            .values(outcome="won", rank=1, round=0)
        )
    result = await verify_in(tg, lottery.id)
    assert not result.ok and result.problems
    code, out, _ = await cli_verify(monkeypatch, capsys, database_url, lottery.id)
    assert code == 1 and "MISMATCH" in out
    # A swapped seed no longer matches the published commitment.
    async with tg.services.db.begin() as session:
        await session.execute(
            update(LOTTERY).where(LOTTERY.c.id == lottery.id).values(seed="00" * 32)
        )
    assert not (await verify_in(tg, lottery.id)).commitment_ok


async def cli_verify(monkeypatch: Any, capsys: Any, database_url: str, lottery_id: int) -> Any:
    """`community-bot lottery verify ID` (in a thread: the CLI runs its own event loop)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, ["lottery", "verify", str(lottery_id)])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_verify_refuses_an_open_lottery(tg, database_url, monkeypatch, capsys):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 1h")
    code, out, err = await cli_verify(monkeypatch, capsys, database_url, lottery.id)
    assert code == 2 and "not drawn yet" in err and SEED.hex() not in out + err
    code, _, err = await cli_verify(monkeypatch, capsys, database_url, 4242)
    assert code == 2 and "no lottery" in err


# --- listing and exporting --------------------------------------------------------------------


async def test_lotteries_lists_open_and_recent(tg):
    await setup_group(tg)
    first = await create(tg, "Hat <1> | draw at 5 entries")
    second = await create(tg, "Cap | draw in 2h")
    await tg.feed(f.message(GROUP, ADMIN, f"/draw {second.id}", date=tg.now()))
    await tg.feed(f.message(GROUP, ALICE, "/lotteries", date=tg.now()))
    text = tg.api.sent_texts(GROUP["id"])[-1]
    assert f"#{first.id} Hat &lt;1&gt; — 0 entrants, draws at 5 entrants" in text
    assert f"#{second.id} Cap — drawn" in text


async def test_entrants_count_in_group_and_csv_privately(tg):
    await setup_group(tg)
    lottery = await create(tg, "Hat | draw in 2h")
    users = [ALICE, BOB, f.user(31, "=cmd|' /C calc'!A0")]
    await enter_all(tg, lottery, users)
    await tg.feed(f.message(GROUP, ADMIN, f"/entrants {lottery.id}", date=tg.now()))
    assert "3 entrants" in tg.api.sent_texts(GROUP["id"])[-1]
    [doc] = tg.api.of("sendDocument")
    assert doc.params["chat_id"] == ADMIN["id"]
    rows = list(csv.DictReader(io.StringIO(doc.files["document"][1].decode("utf-8-sig"))))
    assert [int(r["user_id"]) for r in rows] == [u["id"] for u in users]
    assert rows[2]["name"].startswith("'=")  # not a spreadsheet formula
    assert "hmac_sha256" not in rows[0]  # the ranking stays secret until the draw

    await tg.feed(f.message(GROUP, ADMIN, f"/draw {lottery.id}", date=tg.now()))
    tg.api.fail("sendDocument", 403, "Forbidden: bot can't initiate conversation with a user")
    await tg.feed(f.message(GROUP, ADMIN, f"/entrants {lottery.id}", date=tg.now()))
    docs = tg.api.of("sendDocument")
    assert docs[-1].params["chat_id"] == GROUP["id"]  # privately impossible: here instead
    rows = list(csv.DictReader(io.StringIO(docs[-1].files["document"][1].decode("utf-8-sig"))))
    order = expected_order(SEED, lottery.id, users)
    assert [int(r["user_id"]) for r in rows] == order
    for row in rows:
        digest = hmac.new(SEED, f"{lottery.id}:{row['user_id']}".encode(), hashlib.sha256)
        assert row["hmac_sha256"] == digest.hexdigest()
    assert rows[0]["outcome"] == "won" and rows[1]["outcome"] == ""


async def test_lottery_follows_the_group_to_its_supergroup(tg):
    small = f.group(-4001, "Small", type="group")
    await setup_group(tg, small)
    lottery = await create(tg, "Hat | draw in 2h", chat=small)
    big = f.group(-1004001, "Small", type="supergroup")
    await tg.feed(f.message(small, ADMIN, None, date=tg.now(), migrate_to_chat_id=big["id"]))
    assert (await load(tg, lottery.id)).chat_id == big["id"]
    await tg.feed(press(lottery, ALICE, chat=big))
    assert "You're in" in answers(tg.api)[-1]["text"]
