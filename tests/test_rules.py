"""Rules, the welcome message and the join check — including a check outliving a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.app import build_app
from bot.models import UserProfile
from bot.rules import GroupRules, Newcomer, WelcomeSettings, check_token, conclude_check
from schedules import verification
from tests import factories as f
from tests.conftest import both_databases
from tests.moderation_support import (
    ADMIN,
    GROUP,
    HOSTILE,
    MEMBER,
    NEWBIE,
    NO_PERMISSIONS,
    bot_message,
    command,
    last_text,
    log_entries,
    say,
    setup_group,
)
from tests.recording import DEFAULT_PERMISSIONS, RecordingRequest

DEEP_LINK = f"https://t.me/community_test_bot?start=rules_{GROUP['id']}"


def buttons(call) -> list[dict]:
    return [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


async def join(tg, user=NEWBIE, adder=None) -> None:
    """A join as an admin bot sees it: chat_member update, then the service message."""
    await tg.feed(f.chat_member(GROUP, adder or user, user, "left", "member", date=tg.now()))
    await tg.feed(f.new_members(GROUP, [user], date=tg.now(), adder=adder))


# --- rules ----------------------------------------------------------------------------------


async def test_setrules_keeps_formatting_and_rules_shows_them(tg):
    await setup_group(tg)
    text = "/setrules 1. Be kind\n2. No <ads> & spam"
    entities = [
        {"type": "bot_command", "offset": 0, "length": 9},
        {"type": "bold", "offset": 13, "length": 7},
    ]
    await say(tg, ADMIN, text, entities=entities)
    assert "saved" in last_text(tg)
    await command(tg, MEMBER, "/rules")
    shown = last_text(tg)
    assert shown == (
        "<b>Rules of Ops &lt;b&gt;&amp;&lt;/b&gt; Group</b>\n\n"
        "1. <b>Be kind</b>\n2. No &lt;ads&gt; &amp; spam"
    )


async def test_setrules_from_a_replied_message_with_caption(tg):
    await setup_group(tg)
    photo = [{"file_id": "p", "file_unique_id": "u", "width": 1, "height": 1}]
    source = await say(
        tg,
        ADMIN,
        None,
        photo=photo,
        caption="群规：友善交流",
        caption_entities=[{"type": "italic", "offset": 3, "length": 4}],
    )
    await command(tg, ADMIN, "/setrules", reply_to=source)
    async with tg.db() as session:
        assert (await session.get(GroupRules, GROUP["id"])).text_html == "群规：<i>友善交流</i>"


async def test_rules_commands_refuse_members_and_explain(tg):
    await setup_group(tg)
    await command(tg, MEMBER, "/setrules anything goes")
    assert "operators" in last_text(tg)
    await command(tg, MEMBER, "/rules")
    assert "no rules yet" in last_text(tg)
    await command(tg, ADMIN, "/setrules")
    assert "Example" in last_text(tg)
    await command(tg, ADMIN, "/setrules Be nice")
    await command(tg, ADMIN, "/clearrules")
    await command(tg, MEMBER, "/rules")
    assert "no rules yet" in last_text(tg)


async def test_private_rules_open_through_a_deep_link(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/setrules <b>Be nice</b>")
    await command(tg, ADMIN, "/privaterules on")
    await command(tg, MEMBER, "/rules")
    call = tg.api.of("sendMessage")[-1]
    assert [b["url"] for b in buttons(call)] == [DEEP_LINK]
    assert "Be nice" not in call.params["text"]
    tg.api.clear()
    chat = f.private(MEMBER)
    await tg.feed(f.message(chat, MEMBER, f"/start rules_{GROUP['id']}", date=tg.now()))
    (sent,) = tg.api.sent_texts(MEMBER["id"])  # core's /start did not answer too
    assert "&lt;b&gt;Be nice&lt;/b&gt;" in sent and "Rules of" in sent
    async with tg.db() as session:
        assert (await session.get(UserProfile, MEMBER["id"])).started_at is not None
    await tg.feed(f.message(chat, MEMBER, "/start rules_-100999", date=tg.now()))
    assert "no rules" in tg.api.sent_texts(MEMBER["id"])[-1]


# --- welcome --------------------------------------------------------------------------------


@both_databases
async def test_welcome_with_placeholders_escaped_and_the_previous_one_deleted(tg):
    await setup_group(tg)
    tg.api.member_count = 57
    await command(tg, ADMIN, "/setrules Be nice")
    await command(tg, ADMIN, "/setwelcome Hi {name}, welcome to {group}! We are {count}.\n{rules}")
    preview = tg.api.of("sendMessage")[-1]
    assert "Ada" in preview.params["text"] and [b["url"] for b in buttons(preview)] == [DEEP_LINK]
    tg.api.clear()

    await join(tg, HOSTILE)  # reported twice, welcomed once
    (welcome,) = tg.api.of("sendMessage")
    assert welcome.params["text"] == (
        'Hi <a href="tg://user?id=30">&lt;b&gt;x&lt;/b&gt; a_b*c</a>, '
        "welcome to Ops &lt;b&gt;&amp;&lt;/b&gt; Group! We are 57."
    )
    assert [b["url"] for b in buttons(welcome)] == [DEEP_LINK]
    async with tg.db() as session:
        first_id = (await session.get(WelcomeSettings, GROUP["id"])).last_message_id
    assert first_id

    tg.clock.advance(minutes=1)
    await join(tg, NEWBIE)
    (deleted,) = tg.api.of("deleteMessage")
    assert deleted.params == {"chat_id": GROUP["id"], "message_id": first_id}
    assert len(tg.api.of("sendMessage")) == 2


async def test_welcome_off_and_default_text(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/welcome on")
    await join(tg)
    assert "Welcome to Ops" in last_text(tg) and "Newbie" in last_text(tg)
    await command(tg, ADMIN, "/welcome off")
    tg.api.clear()
    await join(tg, MEMBER)
    assert not tg.api.of("sendMessage")
    await command(tg, ADMIN, "/welcome")
    assert "<b>off</b>" in last_text(tg) and "{name}" in last_text(tg)


# --- the join check -------------------------------------------------------------------------


async def check_message(tg) -> tuple[dict, list[dict]]:
    """The check the bot posted (as a message dict to press on) and its buttons."""
    call = [c for c in tg.api.of("sendMessage") if "reply_markup" in c.params][-1]
    async with tg.db() as session:
        rows = (await session.execute(Newcomer.__table__.select())).mappings().all()
    message_id = next(r["message_id"] for r in rows if r["state"] == "pending")
    return bot_message(GROUP, message_id, tg.now(), call.params["text"]), buttons(call)


async def newcomer(tg, user=NEWBIE) -> Newcomer:
    async with tg.db() as session:
        return await session.get(Newcomer, (GROUP["id"], user["id"]))


@both_databases
async def test_default_check_restricts_until_the_newcomer_presses(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/setrules Be nice")
    await command(tg, ADMIN, "/setwelcome Welcome {name}!")
    await command(tg, ADMIN, "/verify on")
    assert "Join check: <b>on</b>" in last_text(tg) and "5m" in last_text(tg)
    tg.api.clear()

    await join(tg)
    (restrict,) = tg.api.of("restrictChatMember")  # the twin report did not restrict again
    assert restrict.params["permissions"] == NO_PERMISSIONS
    assert "until_date" not in restrict.params
    message, keys = await check_message(tg)
    token = int(tg.now().timestamp())
    assert [b.get("url") for b in keys] == [DEEP_LINK, None]
    assert keys[1]["callback_data"] == f"jc:{NEWBIE['id']}:{token}:ok"
    assert (await newcomer(tg)).deadline == tg.now() + timedelta(minutes=5)
    assert tg.app.job_queue.get_jobs_by_name(verification.job_name(GROUP["id"], NEWBIE["id"]))

    # Somebody else pressing it does nothing.
    await tg.feed(f.callback(MEMBER, keys[1]["callback_data"], message=message))
    answer = tg.api.of("answerCallbackQuery")[-1].params
    assert answer["show_alert"] and "newcomer only" in answer["text"]
    assert len(tg.api.of("restrictChatMember")) == 1

    await tg.feed(f.callback(NEWBIE, keys[1]["callback_data"], message=message))
    lift = tg.api.of("restrictChatMember")[-1].params
    assert lift["user_id"] == NEWBIE["id"] and lift["permissions"] == DEFAULT_PERMISSIONS
    assert tg.api.of("deleteMessage")[-1].params["message_id"] == message["message_id"]
    assert "Welcome" in last_text(tg) and "Newbie" in last_text(tg)  # welcomed after passing
    assert (await newcomer(tg)).state == "passed"
    assert not tg.app.job_queue.get_jobs_by_name(verification.job_name(GROUP["id"], NEWBIE["id"]))

    await tg.feed(f.callback(NEWBIE, keys[1]["callback_data"], message=message))
    assert "no longer pending" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    assert len(tg.api.of("restrictChatMember")) == 2


async def test_custom_question_wrong_answer_applies_the_action(tg):
    await setup_group(tg)
    await command(
        tg, ADMIN, '/verify on question "What is 2+2?" answers "3|4|5" correct 2 action ban'
    )
    summary = last_text(tg)
    assert "What is 2+2?" in summary and "3 | 4 | 5" in summary and "correct: 2" in summary
    await join(tg)
    message, keys = await check_message(tg)
    assert "What is 2+2?" in message["text"]
    assert sorted(b["text"] for b in keys) == ["3", "4", "5"]
    wrong = next(b for b in keys if b["text"] == "3")
    await tg.feed(f.callback(NEWBIE, wrong["callback_data"], message=message))
    (ban,) = tg.api.of("banChatMember")
    assert ban.params == {"chat_id": GROUP["id"], "user_id": NEWBIE["id"]}
    assert "not the right answer" in tg.api.of("answerCallbackQuery")[-1].params["text"]
    assert (await newcomer(tg)).state == "failed"
    (entry,) = await log_entries(tg)
    assert entry.action == "verify:ban" and entry.reason == "wrong answer"

    # The right answer from another newcomer lets them in.
    tg.api.clear()
    await join(tg, MEMBER)
    message, keys = await check_message(tg)
    right = next(b for b in keys if b["text"] == "4")
    await tg.feed(f.callback(MEMBER, right["callback_data"], message=message))
    assert tg.api.of("restrictChatMember")[-1].params["permissions"] == DEFAULT_PERMISSIONS
    assert not tg.api.of("banChatMember")


@both_databases
async def test_timeout_fires_after_a_restart(tg, settings, engine, clock):
    await setup_group(tg)
    await command(tg, ADMIN, "/verify on time 2m action kick")
    await join(tg)
    message, _ = await check_message(tg)

    # The bot restarts: a new Application on the same database, jobs rebuilt from it.
    api = RecordingRequest(now=lambda: clock().timestamp())
    app = build_app(
        settings, engine=engine, request=api, clock=clock, rate_limiter=False, concurrent=False
    )
    errors: list[BaseException] = []

    async def collect(update, context):
        errors.append(context.error)

    app.add_error_handler(collect)
    async with app:
        await verification.on_startup(app)
        name = verification.job_name(GROUP["id"], NEWBIE["id"])
        (job,) = app.job_queue.get_jobs_by_name(name)
        remaining = job.job.trigger.run_date - datetime.now(UTC)  # the JobQueue's real time
        assert 115 <= remaining.total_seconds() <= 121

        clock.advance(minutes=1)  # fired early (clocks differ): nothing happens, re-armed
        await job.run(app)
        assert not api.of("banChatMember")
        (job,) = app.job_queue.get_jobs_by_name(name)

        clock.advance(minutes=1)
        await job.run(app)
        methods = [c.method for c in api.calls]
        assert methods.count("banChatMember") == 1 and methods.count("unbanChatMember") == 1
        assert api.of("deleteMessage")[0].params["message_id"] == message["message_id"]
        assert api.of("unbanChatMember")[0].params["only_if_banned"] is True

        await job.run(app)  # a second firing (another process, a replay) does nothing
        assert [c.method for c in api.calls].count("banChatMember") == 1
    assert not errors and not api.violations
    assert (await newcomer(tg)).state == "failed"
    (entry,) = await log_entries(tg)
    assert entry.action == "verify:kick" and entry.reason == "no answer in time"


async def test_mute_action_on_timeout_leaves_the_newcomer_restricted(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/verify on")
    await join(tg)
    (job,) = tg.app.job_queue.get_jobs_by_name(verification.job_name(GROUP["id"], NEWBIE["id"]))
    tg.clock.advance(minutes=5)
    await job.run(tg.app)
    assert len(tg.api.of("restrictChatMember")) == 1  # still the join restriction, not lifted
    assert not tg.api.of("banChatMember")
    assert (await newcomer(tg)).state == "failed"


async def test_no_check_for_members_added_by_an_operator(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/verify on")
    await command(tg, ADMIN, "/welcome on")
    tg.api.clear()
    await tg.feed(f.new_members(GROUP, [NEWBIE], date=tg.now(), adder=ADMIN))
    assert not tg.api.of("restrictChatMember")
    assert "Newbie" in last_text(tg)


async def test_leaving_before_answering_drops_the_check(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/verify on")
    await join(tg)
    message, _ = await check_message(tg)
    tg.clock.advance(seconds=30)
    await tg.feed(f.chat_member(GROUP, NEWBIE, NEWBIE, "restricted", "left", date=tg.now()))
    assert tg.api.of("deleteMessage")[-1].params["message_id"] == message["message_id"]
    assert (await newcomer(tg)).state == "left"
    assert not tg.app.job_queue.get_jobs_by_name(verification.job_name(GROUP["id"], NEWBIE["id"]))


async def test_without_the_restrict_right_the_check_is_skipped(tg):
    await setup_group(tg, bot_status="member")
    await command(tg, ADMIN, "/verify on")
    assert "Ban and restrict members" in last_text(tg)
    await join(tg)
    assert not tg.api.of("restrictChatMember")


async def test_verify_bad_arguments_are_explained(tg):
    await setup_group(tg)
    cases = {
        '/verify question "x" answers "a" correct 1': "2 to 8 answers",
        '/verify question "x" answers "a|b" correct 3': "correct 3",
        "/verify time 10s": "<code>10s</code>",
        "/verify action eat": "<code>eat</code>",
        "/verify dance": "dance",
        '/verify question "unclosed': "not closed",
        '/verify question "x" answers "a|b"': "all three parts",
        "/verify time": "needs a value",
    }
    for text, expected in cases.items():
        await command(tg, ADMIN, text)
        assert expected in last_text(tg) and "/verify on" in last_text(tg), text
    await command(tg, MEMBER, "/verify on")
    assert "operators" in last_text(tg)
    await command(tg, ADMIN, "/verify")
    assert "Join check: <b>off</b>" in last_text(tg)


async def test_a_check_is_failed_only_after_its_deadline_and_only_once(tg):
    await setup_group(tg)
    await command(tg, ADMIN, "/verify on")
    await join(tg)
    row = await newcomer(tg)
    token = check_token(row.joined_at)
    kwargs = {"chat_id": GROUP["id"], "user_id": NEWBIE["id"], "token": token, "state": "failed"}
    async with tg.services.db.begin() as session:
        assert await conclude_check(session, **kwargs, now=tg.now()) is None  # not yet due
    async with tg.services.db.begin() as session:
        stale = dict(kwargs, token=token - 1)
        assert await conclude_check(session, **stale) is None  # a button of an older join
    late = tg.now() + timedelta(minutes=5)
    async with tg.services.db.begin() as session:
        assert (await conclude_check(session, **kwargs, now=late)).state == "failed"
    async with tg.services.db.begin() as session:
        assert await conclude_check(session, **kwargs, now=late) is None  # already concluded
