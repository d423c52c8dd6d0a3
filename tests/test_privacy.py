"""Privacy through the real Application: /forgetme and an operator's /forget erase a member's
data (names nowhere, the id nowhere but as the opt-out hash), group KPIs and finished draws
unchanged, nothing recorded afterwards until /rememberme, everybody else untouched.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot import kpi
from bot.lottery import Lottery, LotteryEntry, verification_report, verify
from bot.models import DailyActivity, Member
from bot.moderation import ModLogEntry
from bot.polls import Poll
from bot.privacy import DECISIONS, OptOut, Rule, person_columns
from bot.schema import metadata
from schedules.lottery import runtime_of
from tests import factories as f
from tests.conftest import Harness, both_databases

GROUP = f.group(-1001000000001, "Privacy Group")
OTHER = f.group(-1001000000002, "Other Group")
GID, OID = GROUP["id"], OTHER["id"]
ADMIN = f.user(10, "Ada")
ZELDA = f.user(987654321, "Zelda", last_name="Quuxley", username="zelda_qx")
BOB = f.user(555000111, "Bob", username="bobby")
CAROL = f.user(555000222, "Carol")
UTC = ZoneInfo("UTC")
SEED = bytes(range(1, 33))
SECRET_WORDS = ("zelda", "quuxley", "zelda_qx")


# --- helpers ----------------------------------------------------------------------------------


def buttons(call: Any) -> list[dict]:
    return [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


async def setup_group(tg: Harness, chat: dict) -> None:
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)


async def say(tg: Harness, user: dict, text: str = "hello", chat: dict = GROUP) -> None:
    await tg.feed(f.message(chat, user, text, date=tg.now()))


async def press(tg: Harness, user: dict, data: str, chat: dict) -> dict:
    await tg.feed(f.callback(user, data, chat=chat, date=tg.now()))
    return tg.api.of("answerCallbackQuery")[-1].params


async def last_lottery(tg: Harness) -> Lottery:
    async with tg.db() as session:
        return await session.scalar(select(Lottery).order_by(Lottery.id.desc()).limit(1))


async def history(tg: Harness) -> dict[str, int]:
    """Three days of a group's life in which Zelda does everything a member can."""
    await setup_group(tg, GROUP)
    await setup_group(tg, OTHER)
    runtime_of(tg.app).seed_source = lambda: SEED
    await tg.feed(f.new_members(GROUP, [ZELDA, BOB, CAROL], date=tg.now()))
    for user in (ZELDA, ZELDA, BOB, ZELDA, BOB, CAROL):
        await say(tg, user)
    await say(tg, ZELDA, "hi other", chat=OTHER)
    await say(tg, ZELDA, "/checkin")
    await say(tg, BOB, "/checkin")
    await say(tg, ADMIN, "/poll Lunch? | Pizza | Sushi")
    async with tg.db() as session:
        poll = await session.scalar(select(Poll).order_by(Poll.id.desc()).limit(1))
    for voter, option in ((ZELDA, 0), (BOB, 1)):
        tg.api.vote(poll.telegram_poll_id, voter["id"], [option])
        await tg.feed(f.poll_answer(poll.telegram_poll_id, voter, [option]))
    await say(tg, ADMIN, "/lottery Hat | winners 2 | draw in 2h")
    drawn = await last_lottery(tg)
    for user in (ZELDA, BOB, CAROL):
        await press(tg, user, f"lottery:join:{drawn.id}", GROUP)
    await say(tg, ADMIN, f"/draw {drawn.id}")
    await say(tg, ADMIN, "/lottery Cap | winners 1 | draw in 3d")
    still_open = await last_lottery(tg)
    for user in (ZELDA, BOB):
        await press(tg, user, f"lottery:join:{still_open.id}", GROUP)
    await say(tg, ADMIN, "/warn @zelda_qx flooding, as zelda_qx does")
    await say(tg, ADMIN, "/points +5 @zelda_qx nice")
    tg.clock.advance(days=1)
    await say(tg, ZELDA)
    await say(tg, BOB)
    await say(tg, ZELDA, "/checkin")
    tg.clock.advance(days=1)
    await say(tg, BOB)
    await say(tg, ZELDA)  # still in the recorder's buffer when she confirms
    return {"drawn": drawn.id, "open": still_open.id, "poll": poll.id}


async def kpis(tg: Harness, chat_id: int) -> Any:
    today = tg.now().date()
    first = today - timedelta(days=2)
    await tg.flush()
    async with tg.db() as session:
        rows = await kpi.daily_kpis(session, chat_id, first, today, today=today, tz=UTC)
        snapshots = [
            (
                await kpi.day_snapshot(
                    session, chat_id, first + timedelta(days=i), today=today, tz=UTC
                )
            ).values
            for i in range(3)
        ]
        groups = await kpi.cohorts(session, chat_id, [first], today)
    table = [dataclasses.asdict(row) for row in rows]
    for row in table:
        row.pop("cohorts", None)
    return table, snapshots, {day: (c.size, dict(c.retained)) for day, c in groups.items()}


async def rows_of(tg: Harness, user_id: int) -> list[tuple[str, dict]]:
    """Every row of every table in which some column holds `user_id`."""
    found = []
    async with tg.services.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in (await connection.execute(select(table))).mappings():
                if any(type(v) is int and v == user_id for v in row.values()):
                    found.append((table.name, dict(row)))
    return sorted(found, key=repr)


async def traces(tg: Harness, user_id: int, words: tuple[str, ...] = SECRET_WORDS) -> list[str]:
    """Where the person's names, username or id still appear (every column of every table)."""
    found = []
    async with tg.services.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in (await connection.execute(select(table))).mappings():
                for column, value in row.items():
                    if type(value) is int and value == user_id:
                        found.append(f"{table.name}.{column} = id")
                    text = value if isinstance(value, str) else None
                    if isinstance(value, dict | list):
                        text = json.dumps(value, ensure_ascii=False)
                    if text is None:
                        continue
                    lowered = text.lower()
                    if str(user_id) in lowered or any(w in lowered for w in words):
                        found.append(f"{table.name}.{column} = {text!r}")
    return found


async def forgetme(tg: Harness, user: dict = ZELDA) -> str:
    """/forgetme in private; returns the confirmation button's data."""
    await tg.feed(f.message(f.private(user), user, "/forgetme", date=tg.now()))
    call = tg.api.of("sendMessage")[-1]
    assert "Erase your data?" in call.params["text"]
    confirm, cancel = buttons(call)
    assert cancel["callback_data"] == confirm["callback_data"] + ":no"
    return confirm["callback_data"]


# --- the rule stays complete ------------------------------------------------------------------


def test_every_column_that_may_identify_a_person_has_a_decision():
    """A new table or column with a user id or name must be given an erasure rule."""
    columns = person_columns(list(metadata.sorted_tables))
    missing = columns - set(DECISIONS)
    assert not missing, f"decide in bot.privacy.DECISIONS what erasure does with: {missing}"
    existing = {(t.name, c.name) for t in metadata.sorted_tables for c in t.columns}
    assert set(DECISIONS) <= existing, set(DECISIONS) - existing


def test_the_completeness_check_catches_a_new_user_column():
    from sqlalchemy import BigInteger, Column, MetaData, String, Table

    extra = Table(
        "referral",
        MetaData(),
        Column("inviter_id", BigInteger),
        Column("invited_user_id", BigInteger),
        Column("invited_name", String),
        Column("chat_id", BigInteger),
    )
    found = person_columns([extra])
    assert ("referral", "invited_user_id") in found and ("referral", "invited_name") in found
    assert ("referral", "chat_id") not in found


# --- /forgetme --------------------------------------------------------------------------------


@both_databases
async def test_forgetme_erases_everything_keeps_kpis_and_draws(tg):
    ids = await history(tg)
    zelda, bob = ZELDA["id"], BOB["id"]
    before = {chat: await kpis(tg, chat) for chat in (GID, OID)}
    bob_before = await rows_of(tg, bob)
    async with tg.db() as session:
        assert (await verify(session, ids["drawn"])).ok
    await say(tg, ZELDA, "unflushed")  # buffered when she presses the button
    before[GID][0][-1]["messages"] += 1  # counted: it was sent before the erasure
    before[GID][1][-1]["messages"] += 1

    data = await forgetme(tg)
    # Somebody else's press, or forged data, does nothing.
    assert "Only the person who asked" in (await press(tg, BOB, data, f.private(BOB)))["text"]
    assert "expired" in (await press(tg, ZELDA, data[:-2] + "zz", f.private(ZELDA)))["text"]
    assert await traces(tg, zelda)

    answer = await press(tg, ZELDA, data, f.private(ZELDA))
    assert "text" not in answer or not answer.get("show_alert")
    assert "your data is erased" in tg.api.of("editMessageText")[-1].params["text"]
    await tg.flush()

    # Names and id: nowhere, but the opt-out hash.
    assert await traces(tg, zelda) == []
    async with tg.db() as session:
        [opt_out] = list(await session.scalars(select(OptOut)))
        assert opt_out.chat_id is None and len(opt_out.digest) == 64
        assert opt_out.digest == tg.services.opt_outs.digest(zelda)
        # The KPIs, the draw, everyone else: as they were.
        assert (await verify(session, ids["drawn"])).ok
        entries = list(
            await session.scalars(
                select(LotteryEntry).where(LotteryEntry.lottery_id == ids["drawn"])
            )
        )
        pseudonyms = [e for e in entries if e.user_id < 0]
        assert len(entries) == 3 and len(pseudonyms) == 1 and pseudonyms[0].name == ""
        assert pseudonyms[0].rank is not None  # the position fixed at the draw
        still_open = await session.get(Lottery, ids["open"])
        assert still_open.entry_count == 1  # withdrawn from the open one
        roster = list(await session.scalars(select(Member).where(Member.chat_id == GID)))
        erased = [m for m in roster if m.user_id < 0]
        assert len(erased) == 1 and erased[0].display_name == "" and erased[0].username is None
        other = await session.scalar(select(Member).where(Member.chat_id == OID))
        assert other.user_id < 0 and other.user_id != erased[0].user_id  # one per group
        assert pseudonyms[0].user_id == erased[0].user_id
    for chat in (GID, OID):
        assert await kpis(tg, chat) == before[chat]
    assert await rows_of(tg, bob) == bob_before

    # A second press, and a second erasure: nothing more happens.
    assert "Already erased" in (await press(tg, ZELDA, data, f.private(ZELDA)))["text"]
    data_again = await forgetme(tg)
    await press(tg, ZELDA, data_again, f.private(ZELDA))
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(OptOut)) == 1
    for chat in (GID, OID):
        assert await kpis(tg, chat) == before[chat]

    # From now on: nothing recorded — messages, check-ins, votes, entries, joins, /start.
    tg.api.clear()
    await say(tg, ZELDA, "still here")
    await say(tg, ZELDA, "/checkin")
    assert "you asked me to forget you" in tg.api.sent_texts(GID)[-1].lower()
    await tg.feed(f.poll_answer("unknown", ZELDA, [0]))
    async with tg.db() as session:
        poll = await session.get(Poll, ids["poll"])
    await tg.feed(f.poll_answer(poll.telegram_poll_id, ZELDA, [1]))
    answer = await press(tg, ZELDA, f"lottery:join:{ids['open']}", GROUP)
    assert answer["show_alert"] and "forget you" in answer["text"]
    await tg.feed(f.left_member(GROUP, ZELDA, date=tg.now()))
    await tg.feed(f.message(f.private(ZELDA), ZELDA, "/start", date=tg.now()))
    assert "/rememberme" in tg.api.sent_texts(zelda)[-1]
    await tg.flush()
    assert await traces(tg, zelda) == []
    for chat in (GID, OID):
        assert await kpis(tg, chat) == before[chat]

    # /rememberme: counted again from now on (what was erased stays erased).
    await tg.feed(f.message(f.private(ZELDA), ZELDA, "/rememberme", date=tg.now()))
    assert "Welcome back" in tg.api.sent_texts(zelda)[-1]
    await say(tg, ZELDA, "back")
    await tg.flush()
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(OptOut)) == 0
        mine = await session.get(DailyActivity, (GID, zelda, tg.now().date()))
        assert mine is not None and mine.messages == 1
    assert tg.services.opt_outs.excluded(GID, zelda) is False


async def test_forgetme_only_in_private_and_the_button_expires(tg):
    await setup_group(tg, GROUP)
    await say(tg, ZELDA)
    await say(tg, ZELDA, "/forgetme")
    assert "private chat" in tg.api.sent_texts(GID)[-1]
    data = await forgetme(tg)
    tg.clock.advance(minutes=11)
    answer = await press(tg, ZELDA, data, f.private(ZELDA))
    assert answer["show_alert"] and "expired" in answer["text"]
    await tg.flush()
    async with tg.db() as session:
        assert await session.get(Member, (GID, ZELDA["id"])) is not None
        assert await session.scalar(select(func.count()).select_from(OptOut)) == 0
    assert not tg.services.opt_outs.excluded(GID, ZELDA["id"])
    # Cancel: nothing erased.
    data = await forgetme(tg)
    await press(tg, ZELDA, data + ":no", f.private(ZELDA))
    assert "Nothing was erased" in tg.api.of("editMessageText")[-1].params["text"]
    async with tg.db() as session:
        assert await session.get(Member, (GID, ZELDA["id"])) is not None


# --- an operator's /forget ----------------------------------------------------------------------


@both_databases
async def test_operator_forget_erases_in_that_group_only_and_logs_it(tg):
    await setup_group(tg, GROUP)
    await setup_group(tg, OTHER)
    await tg.feed(f.new_members(GROUP, [ZELDA, BOB], date=tg.now()))
    zelda_message = f.message_dict(GROUP, ZELDA, "hi", date=tg.now())
    await tg.feed({"update_id": 999_001, "message": zelda_message})
    await say(tg, BOB)
    await say(tg, ZELDA, "hi", chat=OTHER)
    await say(tg, ZELDA, "/checkin")

    # Members may not; the command needs a person.
    await say(tg, BOB, "/forget @zelda_qx")
    assert "Only the group's operators" in tg.api.sent_texts(GID)[-1]
    await say(tg, ADMIN, "/forget")
    assert "/forget @username" in tg.api.sent_texts(GID)[-1]
    await say(tg, ADMIN, "/forget @nobody_<here>")
    assert "I don't know @nobody_&lt;here&gt; in this group" in tg.api.sent_texts(GID)[-1]

    await tg.feed(
        f.message(GROUP, ADMIN, "/forget", date=tg.now(), reply_to_message=zelda_message)
    )
    call = tg.api.of("sendMessage")[-1]
    assert "Erase the data of Zelda Quuxley in Privacy Group?" in call.params["text"]
    data = buttons(call)[0]["callback_data"]
    before = await kpis(tg, GID)  # (commands are messages: taken after the last one)
    other_before = await rows_of(tg, ZELDA["id"])
    other_before = [r for r in other_before if r[1].get("chat_id") == OID]
    # Another member, or the member herself, cannot press it.
    for presser in (BOB, ZELDA):
        answer = await press(tg, presser, data, GROUP)
        assert answer["show_alert"] and "Only the person who asked" in answer["text"]
    await press(tg, ADMIN, data, GROUP)
    edited = tg.api.of("editMessageText")[-1].params["text"]
    assert "a member's data in this group is erased" in edited and "Zelda" not in edited
    await tg.flush()

    async with tg.db() as session:
        roster = {
            m.user_id: m
            for m in await session.scalars(select(Member).where(Member.chat_id == GID))
        }
        assert ZELDA["id"] not in roster and BOB["id"] in roster
        [entry] = list(
            await session.scalars(select(ModLogEntry).where(ModLogEntry.action == "forget"))
        )
        assert entry.target_id in roster and entry.target_id < 0 and entry.target_name == ""
        assert entry.actor_id == ADMIN["id"]
    assert await kpis(tg, GID) == before
    still = [r for r in await rows_of(tg, ZELDA["id"]) if r[1].get("chat_id") == OID]
    assert still == other_before  # the other group's data is not this operator's to erase
    # Her activity here is no longer recorded; in the other group it still is.
    await say(tg, ZELDA, "again")
    await say(tg, ZELDA, "again", chat=OTHER)
    await tg.flush()
    async with tg.db() as session:
        assert await session.get(DailyActivity, (GID, ZELDA["id"], tg.now().date())) is None
        other_day = await session.get(DailyActivity, (OID, ZELDA["id"], tg.now().date()))
        assert other_day.messages == 2
    await say(tg, ADMIN, "/modlog")
    assert "data erased" in tg.api.sent_texts(GID)[-1]


# --- the lottery stays verifiable -------------------------------------------------------------


async def test_erased_winner_keeps_the_draw_verifiable_and_rerolls_follow_the_ranking(tg):
    await setup_group(tg, GROUP)
    runtime_of(tg.app).seed_source = lambda: SEED
    people = [f.user(600 + i, f"P{i}") for i in range(6)]
    await say(tg, ADMIN, "/lottery Hat | winners 1 | draw in 2h")
    lottery = await last_lottery(tg)
    for person in people:
        await press(tg, person, f"lottery:join:{lottery.id}", GROUP)
    await say(tg, ADMIN, f"/draw {lottery.id}")
    async with tg.db() as session:
        result = await verify(session, lottery.id)
    assert result.ok
    order = result.ranking
    # Erase the winner and someone the draw has not reached yet.
    for victim in (order[0], order[3]):
        user = next(p for p in people if p["id"] == victim)
        data = await forgetme(tg, user)
        await press(tg, user, data, f.private(user))
    async with tg.db() as session:
        after = await verify(session, lottery.id)
        assert after.ok, after.problems
        assert [u < 0 for u in after.ranking] == [True, False, False, True, False, False]
        assert after.ranking[1:3] == order[1:3] and after.ranking[4:] == order[4:]
        report = verification_report(after)
        assert report.count("(erased: position as recorded)") == 2 and "\nMATCH: " in report
    # A reroll continues down the same ranking: rank 2 wins.
    await say(tg, ADMIN, f"/reroll {lottery.id} 1")
    async with tg.db() as session:
        rerolled = await verify(session, lottery.id)
        assert rerolled.ok and rerolled.recorded[-1] == order[1]


def test_every_rule_value_is_used():
    assert {rule for rule in DECISIONS.values()} == set(Rule)


# --- several processes ------------------------------------------------------------------------


@both_databases
async def test_other_processes_learn_the_opt_out_at_start_and_within_a_minute(
    tg, engine, settings
):
    from telegram import Update

    from bot.app import build_app, startup
    from bot.services import services_of
    from tests.recording import RecordingRequest

    await setup_group(tg, GROUP)
    await tg.feed(f.new_members(GROUP, [ZELDA, BOB], date=tg.now()))
    await say(tg, ZELDA)
    await say(tg, BOB)
    running = build_app(
        settings,
        engine=engine,
        request=RecordingRequest(now=lambda: tg.clock().timestamp()),
        clock=tg.clock,
        rate_limiter=False,
        concurrent=False,
    )
    async with running:
        await startup(running)
        before = await kpis(tg, GID)
        data = await forgetme(tg)
        await press(tg, ZELDA, data, f.private(ZELDA))
        other = services_of(running)
        assert not other.opt_outs.excluded(GID, ZELDA["id"])  # not yet told…
        late = f.message(GROUP, ZELDA, "written meanwhile", date=tg.now())
        await running.process_update(Update.de_json(late, running.bot))
        await other.activity.flush()  # …so it records her again
        assert await traces(tg, ZELDA["id"])
        [sweep] = [j for j in tg.app.job_queue.jobs() if j.name.startswith("privacy:sweep:")]
        await sweep.run(tg.app)
        assert await traces(tg, ZELDA["id"]) == []
        before[0][-1]["messages"] += 1  # her late message counts, for the same member
        before[1][-1]["messages"] += 1
        assert await kpis(tg, GID) == before
        async with tg.db() as session:
            roster = list(await session.scalars(select(Member).where(Member.chat_id == GID)))
        assert sorted(m.user_id < 0 for m in roster) == [False, True]
        assert [m.message_count for m in roster if m.user_id < 0] == [2]
        [job] = running.job_queue.get_jobs_by_name("privacy:reload")
        await job.run(running)
        assert other.opt_outs.excluded(GID, ZELDA["id"])
        update = f.message(GROUP, ZELDA, "from the other process", date=tg.now())
        await running.process_update(Update.de_json(update, running.bot))
        await other.activity.flush()
        assert await traces(tg, ZELDA["id"]) == []
        await other.activity.stop()
    # A process started later loads the opt-outs at start-up.
    later = build_app(
        settings,
        engine=engine,
        request=RecordingRequest(now=lambda: tg.clock().timestamp()),
        clock=tg.clock,
        rate_limiter=False,
        concurrent=False,
    )
    async with later:
        await startup(later)
        assert services_of(later).opt_outs.excluded(GID, ZELDA["id"])
        assert not services_of(later).opt_outs.excluded(GID, BOB["id"])
        await services_of(later).activity.stop()


async def test_an_operator_who_erases_their_data_stays_an_operator_and_their_work_stays(tg):
    oswald = f.user(777000555, "Oswald", username="oswald_op")
    words = ("oswald",)
    await tg.feed(f.my_chat_member(GROUP, oswald, "left", "administrator", date=tg.now()))
    tg.api.set_admins(GID, oswald)
    await tg.feed(f.new_members(GROUP, [BOB], date=tg.now()))
    await say(tg, BOB)
    for text in (
        "/poll Lunch? | Pizza | Sushi",
        "/warn @bobby too loud",
        "/points +5 @bobby helpful",
        "/lottery Hat | draw in 2h",
    ):
        await say(tg, oswald, text)
    await tg.feed(f.message(f.private(oswald), oswald, "/start", date=tg.now()))
    assert await traces(tg, oswald["id"], words)
    data = await forgetme(tg, oswald)
    await press(tg, oswald, data, f.private(oswald))
    assert await traces(tg, oswald["id"], words) == []
    async with tg.db() as session:
        poll = await session.scalar(select(Poll))
        assert poll.created_by == 0  # NOT NULL: 0 = nobody
        [warning] = list(
            await session.scalars(select(ModLogEntry).where(ModLogEntry.action == "warn"))
        )
        assert warning.target_id == BOB["id"] and warning.actor_id < 0 and warning.actor_name == ""
        assert warning.reason == "too loud"
    # Still an operator: the administrator list is asked again.
    tg.api.clear()
    await say(tg, oswald, "/modlog")
    assert tg.api.of("getChatAdministrators")
    assert "warning" in tg.api.sent_texts(GID)[-1]


async def test_forget_asked_by_an_anonymous_admin_is_confirmed_by_an_operator_anonymously(tg):
    await setup_group(tg, GROUP)
    await say(tg, ZELDA)
    await tg.flush()
    anonymous = f.message(
        GROUP, f.ANONYMOUS_ADMIN, "/forget @zelda_qx", date=tg.now(), sender_chat=GROUP
    )
    await tg.feed(anonymous)
    data = buttons(tg.api.of("sendMessage")[-1])[0]["callback_data"]
    answer = await press(tg, BOB, data, GROUP)
    assert answer["show_alert"] and "Only the person who asked" in answer["text"]
    await press(tg, ADMIN, data, GROUP)
    async with tg.db() as session:
        [entry] = list(
            await session.scalars(select(ModLogEntry).where(ModLogEntry.action == "forget"))
        )
        assert entry.actor_id is None and entry.actor_name == "anonymous admin"
        assert await session.get(Member, (GID, ZELDA["id"])) is None


async def test_the_erased_members_own_invite_link_is_revoked(tg):
    """Telegram names a member's own link for them ("ref Zelda …"): erasure revokes it, and
    the joins it brought stay counted (under the pseudonym)."""
    from bot.invites import InviteLink

    await setup_group(tg, GROUP)
    await tg.feed(f.new_members(GROUP, [ZELDA, BOB], date=tg.now()))
    await say(tg, ZELDA, "/myinvite")
    (created,) = tg.api.of("createChatInviteLink")
    assert created.params["chat_id"] == GID
    async with tg.db() as session:
        (link,) = list(await session.scalars(select(InviteLink)))
    await say(tg, BOB, "/myinvite")  # somebody else's link: left alone
    tg.api.clear()

    data = await forgetme(tg)
    await press(tg, ZELDA, data, f.private(ZELDA))
    (revoked,) = tg.api.of("revokeChatInviteLink")
    assert revoked.params == {"chat_id": GID, "invite_link": link.url}
    async with tg.db() as session:
        rows = {row.id: row for row in await session.scalars(select(InviteLink))}
    assert rows[link.id].revoked_at is not None and rows[link.id].referrer_id < 0
    assert [r.referrer_id for r in rows.values() if r.revoked_at is None] == [BOB["id"]]
