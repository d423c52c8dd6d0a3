"""Where members come from: /invite, /invites, attribution of joins (link, direct, added,
other link, join request), referrals credited once, joins by source (digest, CLI)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.digest import compose
from bot.invites import (
    InviteJoinRequest,
    InviteLink,
    JoinSource,
    ReferralCredit,
    joins_by_source,
    parse_invite_args,
)
from bot.models import ChatDay
from bot.points import PointsLedger
from schedules import invites as invites_schedule
from tests import factories as f
from tests.conftest import both_databases
from tests.recording import contract_problems
from tests.test_cli import cli

GROUP = f.group(-1001000000077, "Growth <Group>")
CHAT_ID = GROUP["id"]
ADMIN = f.user(10, "Ada")
ALICE = f.user(1, "Alice")
BOB = f.user(2, "Bob")
CAROL = f.user(3, "Carol")
DAN = f.user(4, "Dan")
D0 = date(2026, 11, 2)


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(D0 + timedelta(days=day), time(hour, minute), tzinfo=UTC)


async def add_bot(tg) -> None:
    tg.clock.set(at(-1, 8))
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(CHAT_ID, ADMIN)
    tg.api.clear()


async def say(tg, who, text: str, when: datetime | None = None) -> list[str]:
    """Send a message in the group; the texts the bot answered there."""
    tg.api.clear()
    await tg.feed(f.message(GROUP, who, text, date=when or tg.now()))
    return tg.api.sent_texts(CHAT_ID)


def joined(who, when: datetime, url: str | None = None, *, actor=None, **extra) -> dict:
    link = f.invite_link(url) if url else None
    return f.chat_member(
        GROUP, actor or who, who, "left", "member", date=when, invite_link=link, **extra
    )


def left(who, when: datetime) -> dict:
    return f.chat_member(GROUP, who, who, "member", "left", date=when)


async def link_url(tg, name: str) -> str:
    async with tg.db() as session:
        link = (await session.scalars(select(InviteLink).where(InviteLink.name == name))).one()
    return link.url


async def sources(tg) -> list[JoinSource]:
    async with tg.db() as session:
        rows = await session.scalars(
            select(JoinSource).order_by(JoinSource.joined_at, JoinSource.user_id)
        )
        return list(rows)


# --- /invite ----------------------------------------------------------------------------------


async def test_invite_creates_a_named_link_with_limit_and_expiry(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 9))
    (text,) = await say(tg, ADMIN, "/invite poster limit 100 expires 7d")
    (call,) = tg.api.of("createChatInviteLink")
    assert call.params == {
        "chat_id": CHAT_ID,
        "name": "poster",
        "member_limit": 100,
        "expire_date": int((at(0, 9) + timedelta(days=7)).timestamp()),
    }
    async with tg.db() as session:
        link = (await session.scalars(select(InviteLink))).one()
    assert link.name == "poster" and link.member_limit == 100 and link.creator_id == ADMIN["id"]
    assert link.expire_date == at(7, 9) and not link.creates_join_request
    assert link.url.startswith("https://t.me/+") and link.url in text
    assert "up to 100 joins" in text and "expires 2026-11-09 09:00" in text

    tg.clock.set(at(8))
    (text,) = await say(tg, ADMIN, "/invites")
    assert "expired 2026-11-09 09:00" in text
    (text,) = await say(tg, ADMIN, '/invite "KOL Anna" approval')
    (call,) = tg.api.of("createChatInviteLink")
    assert call.params == {"chat_id": CHAT_ID, "name": "KOL Anna", "creates_join_request": True}
    assert "needs approval" in text


async def test_invite_arguments_are_checked_before_telegram_is_asked(tg):
    await add_bot(tg)
    long_name = "x" * 33
    cases = {
        "/invite": "needs a name",
        f"/invite {long_name}": "33 characters long; Telegram allows at most 32",
        "/invite 😀" + "y" * 31: "33 characters long",  # an emoji is two UTF-16 units
        "/invite poster limit 0": "from 1 to 99999 (got <code>0</code>)",
        "/invite poster limit 100000": "from 1 to 99999",
        "/invite poster limit many": "from 1 to 99999 (got <code>many</code>)",
        "/invite poster limit": "from 1 to 99999",
        "/invite poster expires soon": "expiry <code>soon</code>",
        "/invite poster expires 400d": "expiry <code>400d</code>",
        "/invite poster limit 5 approval": "cannot have a member limit",
        "/invite poster forever": "I don't understand <code>forever</code>",
        '/invite "poster': "quote is not closed",
        "/invite revoke": "which link to revoke",
    }
    for command, problem in cases.items():
        (text,) = await say(tg, ADMIN, command)
        assert problem in text, (command, text)
        assert "Example: <code>/invite poster limit 100 expires 7d</code>" in text
    assert not tg.api.of("createChatInviteLink")
    # 32 units exactly is fine; a taken name and a member are refused.
    (text,) = await say(tg, ADMIN, "/invite " + "z" * 32)
    assert "created" in text and len(tg.api.of("createChatInviteLink")) == 1
    (text,) = await say(tg, ADMIN, "/invite " + "z" * 32 + " limit 3")
    assert "already is a link named" in text and not tg.api.of("createChatInviteLink")
    (text,) = await say(tg, ALICE, "/invite mine")
    assert "operators" in text and not tg.api.of("createChatInviteLink")


def test_parse_invite_args_forms():
    spec = parse_invite_args("海报 限额 50 有效期 2天")
    assert (spec.name, spec.member_limit, spec.expires_in) == ("海报", 50, timedelta(days=2))
    assert parse_invite_args("revoke poster").name == "poster"
    assert parse_invite_args("“KOL Anna” 审核").approval


async def test_telegram_refusal_is_explained(tg):
    await add_bot(tg)
    tg.api.fail("createChatInviteLink", 400, "Bad Request: not enough rights")
    (text,) = await say(tg, ADMIN, "/invite poster")
    assert "not enough rights" in text.lower() and "invite users via link" in text
    async with tg.db() as session:
        assert not (await session.scalars(select(InviteLink))).all()


async def test_revoke_and_list(tg):
    await add_bot(tg)
    await say(tg, ADMIN, "/invite poster")
    url = await link_url(tg, "poster")
    (text,) = await say(tg, ADMIN, "/invite revoke poster")
    assert "Revoked the link <b>poster</b>" in text
    (call,) = tg.api.of("revokeChatInviteLink")
    assert call.params == {"chat_id": CHAT_ID, "invite_link": url}
    (text,) = await say(tg, ADMIN, "/invite revoke poster")
    assert "already revoked" in text and not tg.api.of("revokeChatInviteLink")
    (text,) = await say(tg, ADMIN, "/invite revoke nothing")
    assert "no link named <b>nothing</b>" in text
    (text,) = await say(tg, ADMIN, "/invites")
    assert "Invite links of Growth &lt;Group&gt;" in text
    assert (
        "<b>poster</b>" in text and "revoked" in text and "0 joins · D7 — · still active —" in text
    )


# --- attribution ------------------------------------------------------------------------------


@both_databases
async def test_joins_are_attributed_to_link_direct_added_and_other(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 8))
    await say(tg, ADMIN, "/invite poster")
    url = await link_url(tg, "poster")
    when = at(0, 9)
    update = joined(ALICE, when, url)
    await tg.feed(update, update)  # a replayed update is the same join
    # The service message twin of the same join adds nothing.
    await tg.feed(f.new_members(GROUP, [ALICE], date=when + timedelta(seconds=1)))
    await tg.feed(joined(BOB, at(0, 10)))  # no link: direct
    await tg.feed(joined(CAROL, at(0, 11), actor=ADMIN))  # added by an admin
    other = "https://t.me/+AbCd…"  # another admin's link: Telegram hides its second half
    await tg.feed(
        f.chat_member(
            GROUP,
            DAN,
            DAN,
            "left",
            "member",
            date=at(0, 12),
            invite_link=f.invite_link(other, creator=ADMIN, name="partner group"),
        )
    )
    rows = await sources(tg)
    assert [(r.user_id, r.source, r.link_name) for r in rows] == [
        (1, "link", None),
        (2, "direct", None),
        (3, "added", None),
        (4, "other", "partner group"),
    ]
    assert rows[0].link_id is not None and rows[0].joined_at == when and rows[0].day == D0
    async with tg.db() as session:
        assert (await session.get(ChatDay, (CHAT_ID, D0))).joins == 4  # the KPI's joins


@both_databases
async def test_service_message_first_then_the_link(tg):
    """Telegram may deliver the service message before the chat_member update: one join,
    upgraded from direct/unknown to the link the update names."""
    await add_bot(tg)
    await say(tg, ADMIN, "/invite poster")
    url = await link_url(tg, "poster")
    await tg.feed(f.new_members(GROUP, [ALICE], date=at(0, 9)))
    assert [(r.source, r.link_id) for r in await sources(tg)] == [("direct", None)]
    await tg.feed(joined(ALICE, at(0, 9) + timedelta(seconds=2), url))
    (row,) = await sources(tg)
    assert row.source == "link" and row.link_id is not None and row.joined_at == at(0, 9)


async def test_join_request_link_attributes_the_approved_join(tg):
    await add_bot(tg)
    await say(tg, ADMIN, '/invite "KOL Anna" approval')
    url = await link_url(tg, "KOL Anna")
    await tg.feed(
        f.chat_join_request(
            GROUP, BOB, date=at(0, 9), invite_link=f.invite_link(url, creates_join_request=True)
        )
    )
    async with tg.db() as session:
        assert (await session.get(InviteJoinRequest, (CHAT_ID, BOB["id"]))).link_id is not None
    # An admin approves: the chat_member update comes from the admin and names no link.
    await tg.feed(joined(BOB, at(0, 10), actor=ADMIN, via_join_request=True))
    (row,) = await sources(tg)
    assert (row.source, row.via_request) == ("link", True)
    async with tg.db() as session:
        link = (await session.scalars(select(InviteLink))).one()
        assert row.link_id == link.id
        assert await session.get(InviteJoinRequest, (CHAT_ID, BOB["id"])) is None  # consumed
    # A later join without a request is direct again.
    await tg.feed(left(BOB, at(1)), joined(BOB, at(2)))
    assert [r.source for r in await sources(tg)] == ["link", "direct"]


async def test_join_request_then_only_the_service_message(tg):
    """The approval seen as a service message (from the approving admin) still goes to the
    request's link, not to "added by members"; a request for another member changes nothing."""
    await add_bot(tg)
    await say(tg, ADMIN, "/invite kol approval")
    url = await link_url(tg, "kol")
    link = f.invite_link(url, creates_join_request=True)
    await tg.feed(f.chat_join_request(GROUP, BOB, date=at(0, 9), invite_link=link))
    await tg.feed(f.chat_join_request(GROUP, CAROL, date=at(0, 9), invite_link=link))
    await tg.feed(f.new_members(GROUP, [BOB], date=at(0, 10), adder=ADMIN))
    await tg.feed(f.new_members(GROUP, [DAN], date=at(0, 11), adder=ADMIN))
    rows = await sources(tg)
    assert [(r.user_id, r.source, r.via_request) for r in rows] == [
        (2, "link", True),
        (4, "added", False),
    ]
    async with tg.db() as session:
        assert await session.get(InviteJoinRequest, (CHAT_ID, CAROL["id"])) is not None


async def test_a_leave_closes_the_stay_and_a_rejoin_is_a_new_join(tg):
    await add_bot(tg)
    await tg.feed(joined(BOB, at(0)), left(BOB, at(1)), joined(BOB, at(3)))
    rows = await sources(tg)
    assert [(r.joined_at, r.left_at) for r in rows] == [(at(0), at(1)), (at(3), None)]


# --- referrals --------------------------------------------------------------------------------


async def ledger(tg) -> list[tuple[int, int, str, str]]:
    async with tg.db() as session:
        rows = await session.scalars(select(PointsLedger).where(PointsLedger.source == "referral"))
        return [(r.user_id, r.amount, r.source, r.source_key) for r in rows]


@both_databases
async def test_referral_credit_once_per_referred_member(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 8))
    (text,) = await say(tg, ADMIN, "/referralpoints 20")
    assert "20 points" in text
    await say(tg, ALICE, "/myinvite")
    (create,) = tg.api.of("createChatInviteLink")
    assert create.params == {"chat_id": CHAT_ID, "name": "ref Alice"}
    private = [c for c in tg.api.of("sendMessage") if c.params["chat_id"] == ALICE["id"]]
    url = (await sources_link(tg)).url
    assert len(private) == 1 and url in private[0].params["text"]
    assert "private message" in tg.api.sent_texts(CHAT_ID)[0]
    await say(tg, ALICE, "/myinvite")  # the same link again, not a new one
    assert not tg.api.of("createChatInviteLink")
    assert (
        url in [c for c in tg.api.of("sendMessage") if c.params["chat_id"] == 1][0].params["text"]
    )

    bob_joins = joined(BOB, at(0, 10), url)
    await tg.feed(bob_joins, bob_joins)  # replayed
    await tg.feed(joined(CAROL, at(0, 11), url), joined(DAN, at(0, 12), url))
    await tg.feed(f.message(GROUP, BOB, "hi", date=at(3)))  # Bob active within J+1..J+7
    await tg.feed(f.message(GROUP, CAROL, "hi", date=at(1)))
    await tg.feed(left(CAROL, at(2)))  # Carol left after 2 days: she did not stay
    await tg.flush()  # Dan stays but is never active

    tg.clock.set(at(7, 9))  # 7 days minus an hour after Bob's join: not yet
    assert await invites_schedule.settle(tg.services) == 0
    tg.clock.set(at(8, 12))
    assert await invites_schedule.settle(tg.services) == 1
    assert await invites_schedule.settle(tg.services) == 0  # again: nothing new
    assert await ledger(tg) == [(1, 20, "referral", "invitee:2")]
    states = {r.user_id: r.referral_state for r in await sources(tg)}
    assert states == {2: "credited", 3: "not_qualified", 4: "not_qualified"}

    # Bob leaves and comes back through Alice's link, stays and is active: no second credit.
    await tg.feed(left(BOB, at(9)), joined(BOB, at(10), url))
    await tg.feed(f.message(GROUP, BOB, "back", date=at(11)))
    await tg.flush()
    tg.clock.set(at(20))
    await say(tg, ALICE, "/top invites")  # settles lazily, then ranks
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "Top inviters" in text and "1. Alice — 1 stayed (of 3 invited)" in text
    assert await ledger(tg) == [(1, 20, "referral", "invitee:2")]
    assert [r.referral_state for r in await sources(tg) if r.user_id == 2] == [
        "credited",
        "duplicate",
    ]
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(ReferralCredit)) == 1


async def sources_link(tg) -> InviteLink:
    async with tg.db() as session:
        return (await session.scalars(select(InviteLink))).one()


async def test_referral_points_default_off_and_bad_values(tg):
    await add_bot(tg)
    (text,) = await say(tg, ADMIN, "/referralpoints")
    assert "Referral points are off" in text
    for bad in ("-5", "lots", "10001"):
        (text,) = await say(tg, ADMIN, f"/referralpoints {bad}")
        assert "not a number of points" in text and "/referralpoints 20" in text
    tg.clock.set(at(0, 8))
    await say(tg, ALICE, "/myinvite")
    url = (await sources_link(tg)).url
    await tg.feed(joined(BOB, at(0, 10), url), f.message(GROUP, BOB, "hi", date=at(1)))
    await tg.flush()
    tg.clock.set(at(9))
    assert await invites_schedule.settle(tg.services) == 1  # credited (ranked), no points
    assert await ledger(tg) == []
    await say(tg, ALICE, "/top invites 200")
    assert "<code>200</code>" in tg.api.sent_texts(CHAT_ID)[0]


async def test_myinvite_answers_in_the_group_when_private_fails(tg):
    await add_bot(tg)
    tg.api.fail("sendMessage", 403, "Forbidden: bot can't initiate conversation with a user")
    (text,) = await say(tg, ALICE, "/myinvite")  # the private try failed: answered here
    assert (await sources_link(tg)).url in text
    assert [c.params["chat_id"] for c in tg.api.of("sendMessage")] == [ALICE["id"], CHAT_ID]


# --- joins by source ----------------------------------------------------------------------


async def feed_sources_history(tg) -> None:
    """Eight joins over days 0..3 (hand-computed figures in the test below)."""
    await add_bot(tg)
    tg.clock.set(at(0, 6))
    await say(tg, ADMIN, "/invite poster")
    await say(tg, ADMIN, "/invite kol")
    await say(tg, ALICE, "/myinvite")
    poster, kol = await link_url(tg, "poster"), await link_url(tg, "kol")
    async with tg.db() as session:
        referral = (
            await session.scalars(select(InviteLink).where(InviteLink.referrer_id == 1))
        ).one()
    u = {n: f.user(100 + n, f"U{n}") for n in range(1, 9)}
    events = [
        (at(0, 8), joined(u[1], at(0, 8), poster)),
        (at(0, 9), joined(u[2], at(0, 9), poster)),
        (at(1, 8), joined(u[3], at(1, 8), poster)),
        (at(1, 9), joined(u[4], at(1, 9), kol)),
        (at(2, 8), joined(u[5], at(2, 8))),
        (at(2, 9), joined(u[6], at(2, 9), "https://t.me/+Zz…")),
        (at(3, 8), joined(u[7], at(3, 8), referral.url)),
        (at(3, 9), f.new_members(GROUP, [u[8]], date=at(3, 9))),
        (at(5), left(u[3], at(5))),
    ]
    for d, n in [(2, 1), (8, 1), (3, 3), (1, 4), (20, 4), (9, 5), (10, 6), (4, 7), (21, 8)]:
        events.append((at(d, 15), f.message(GROUP, u[n], "hi", date=at(d, 15))))
    for _, update in sorted(events, key=lambda e: e[0]):
        await tg.feed(update)
    await tg.flush()


# Period days 0..9, today day 22. D7 of a join on J: active on J+1..J+7. Still active: in
# the group now and active on days 3..9 (the 7 days up to the period's end).
#   poster: u1 (active 2, 8), u2 (never), u3 (3; left on 5) → D7 2/3, still active u1 → 1/3
#   kol: u4 (1 = its join day, 20) → D7 0/1, still 0/1
#   referral: u7 (4) → 1/1, 1/1;  other: u6 (10 = J+8) → 0/1, 0/1
#   direct: u5 (9 = J+7) and u8 (service message only; 21) → 1/2, still u5 → 1/2
EXPECTED = [
    {"source": "link:poster", "joins": 3, "share": 0.375, "retention_d7": 2 / 3,
     "d7_measurable": 3, "joiners": 3, "still_active": 1, "still_active_share": 1 / 3},
    {"source": "link:kol", "joins": 1, "share": 0.125, "retention_d7": 0.0,
     "d7_measurable": 1, "joiners": 1, "still_active": 0, "still_active_share": 0.0},
    {"source": "referral", "joins": 1, "share": 0.125, "retention_d7": 1.0,
     "d7_measurable": 1, "joiners": 1, "still_active": 1, "still_active_share": 1.0},
    {"source": "other", "joins": 1, "share": 0.125, "retention_d7": 0.0,
     "d7_measurable": 1, "joiners": 1, "still_active": 0, "still_active_share": 0.0},
    {"source": "direct", "joins": 2, "share": 0.25, "retention_d7": 0.5,
     "d7_measurable": 2, "joiners": 2, "still_active": 1, "still_active_share": 0.5},
]  # fmt: skip


@both_databases
async def test_joins_by_source_hand_computed(tg):
    await feed_sources_history(tg)
    today = D0 + timedelta(days=22)
    async with tg.db() as session:
        rows = await joins_by_source(session, CHAT_ID, D0, D0 + timedelta(days=9), today=today)
        kpi_joins = await session.scalar(
            select(func.sum(ChatDay.joins)).where(ChatDay.chat_id == CHAT_ID)
        )
    total = sum(r.joins for r in rows)
    assert total == kpi_joins == 8  # the sources add up to the KPI's joins
    assert [r.as_dict(total) for r in rows] == EXPECTED
    # While a cohort's window is open its D7 is not measurable yet.
    async with tg.db() as session:
        (early,) = [
            r
            for r in await joins_by_source(session, CHAT_ID, D0, D0, today=D0 + timedelta(days=5))
            if r.key == "link:poster"
        ]
    assert early.joins == 2 and early.measurable == 0 and early.retention_d7 is None


@both_databases
async def test_old_windows_are_read_from_the_rollups(tg):
    """Members' masks hold 62 days back from their last active day; a window older than that
    (u1 active again on day 80) is answered from the rollups, with the same figures."""
    await feed_sources_history(tg)
    await tg.feed(f.message(GROUP, f.user(101, "U1"), "back", date=at(80)))
    await tg.flush()
    async with tg.db() as session:
        rows = await joins_by_source(
            session, CHAT_ID, D0, D0 + timedelta(days=9), today=D0 + timedelta(days=90)
        )
    assert [r.as_dict(8) for r in rows] == EXPECTED


async def test_digest_section_and_invites_list(tg):
    await feed_sources_history(tg)
    async with tg.db() as session:
        composed = await compose(
            session,
            chat_id=CHAT_ID,
            title="Growth",
            lang="en",
            tz=ZoneInfo("UTC"),
            kind="daily",
            period_start=D0 + timedelta(days=9),
            today=D0 + timedelta(days=22),
        )
    text = composed.text
    assert "Where joiners came from</b> (last 30 days)" in text
    # 30 days up to day 9: the same joins; still active measured on days 3..9.
    assert "• link poster: 3 joins · D7 67% · still active 33%" in text
    assert "• members' invites: 1 joins · D7 100% · still active 100%" in text
    assert "• direct/unknown: 2 joins · D7 50% · still active 50%" in text
    tg.clock.set(at(22))
    (text,) = await say(tg, ADMIN, "/invites")
    # All time, still active = in the group and active on days 16..22: only u4 and u8.
    assert "<b>poster</b>" in text and "3 joins · D7 67% · still active 0%" in text
    assert "<b>kol</b>" in text and "1 joins · D7 0% · still active 100%" in text
    assert "direct/unknown: 2 joins · D7 50% · still active 50%" in text


async def test_kpi_command_breaks_the_periods_joins_down_by_source(tg):
    """/kpi D1..D2 (operators): the period's joins by source below the KPI table, with the
    figures computed by hand above (period days 0..9; today is day 22)."""
    await feed_sources_history(tg)
    tg.clock.set(at(22))
    first, last = D0.isoformat(), (D0 + timedelta(days=9)).isoformat()
    (text,) = await say(tg, ADMIN, f"/kpi {first}..{last}")
    assert "Where joiners came from</b> (these 10 days)" in text
    assert "• link poster: 3 joins · D7 67% · still active 33%" in text
    assert "• members' invites: 1 joins · D7 100% · still active 100%" in text
    assert "• direct/unknown: 2 joins · D7 50% · still active 50%" in text
    # A period without joins has no such section.
    later = (D0 + timedelta(days=15)).isoformat()
    (text,) = await say(tg, ADMIN, f"/kpi {later}..{later}")
    assert "Where joiners came from" not in text


async def test_cli_kpi_by_source(tg, database_url, tmp_path):
    await feed_sources_history(tg)
    env = {"DATABASE_URL": database_url}
    args = ("kpi", str(CHAT_ID), "--by", "source", "--days", "10", "--end", "2026-11-11")
    result = cli(*args, "--format", "json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED
    csv_out = cli(*args, "--format", "csv", cwd=tmp_path, env=env).stdout.splitlines()
    assert csv_out[0] == (
        "source,joins,share,retention_d7,d7_measurable,joiners,still_active,still_active_share"
    )
    assert csv_out[1].startswith("link:poster,3,0.375,0.666") and len(csv_out) == 6
    table = cli(*args, cwd=tmp_path, env=env).stdout.splitlines()
    assert table[0].split() == [
        "source", "joins", "share", "retention_d7", "d7_measurable", "joiners",
        "still_active", "still_active_share",
    ]  # fmt: skip
    assert table[1].split() == ["link:poster", "3", "37.5%", "66.7%", "3", "3", "1", "33.3%"]


@both_databases
async def test_links_and_sources_follow_a_group_to_its_supergroup(tg):
    old = f.group(-4000077, "Small", "group")
    new = f.group(-1004000077, "Small", "supergroup")
    tg.clock.set(at(0, 6))
    await tg.feed(f.my_chat_member(old, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(old["id"], ADMIN)
    await tg.feed(f.message(old, ADMIN, "/invite poster", date=tg.now()))
    url = await link_url(tg, "poster")
    await tg.feed(f.chat_member(old, BOB, BOB, "left", "member", date=at(0, 9),
                                invite_link=f.invite_link(url)))  # fmt: skip
    await tg.feed(f.message(old, ADMIN, None, date=at(1), migrate_to_chat_id=new["id"]))
    async with tg.db() as session:
        link = (await session.scalars(select(InviteLink))).one()
        (row,) = (await session.scalars(select(JoinSource))).all()
    assert link.chat_id == new["id"] and (row.chat_id, row.link_id) == (new["id"], link.id)
    tg.api.set_admins(new["id"], ADMIN)
    tg.clock.set(at(2))
    tg.api.clear()
    await tg.feed(f.message(new, ADMIN, "/invites", date=tg.now()))
    (text,) = tg.api.sent_texts(new["id"])
    assert "<b>poster</b>" in text and "1 joins" in text


@both_databases
async def test_two_processes_settling_at_once_credit_once(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 8))
    await say(tg, ADMIN, "/referralpoints 5")
    await say(tg, ALICE, "/myinvite")
    url = (await sources_link(tg)).url
    await tg.feed(joined(BOB, at(0, 10), url), f.message(GROUP, BOB, "hi", date=at(2)))
    await tg.flush()
    tg.clock.set(at(9))
    results = await asyncio.gather(
        invites_schedule.settle(tg.services), invites_schedule.settle(tg.services)
    )
    assert sorted(results) == [0, 1]
    assert await ledger(tg) == [(1, 5, "referral", "invitee:2")]
    async with tg.db() as session:
        credit = await session.get(ReferralCredit, (CHAT_ID, BOB["id"]))
    assert (credit.referrer_id, credit.points, credit.joined_at) == (1, 5, at(0, 10))


async def test_start_up_settles_what_fell_due_and_schedules_the_job(tg):
    await add_bot(tg)
    tg.clock.set(at(0, 8))
    await say(tg, ALICE, "/myinvite")
    url = (await sources_link(tg)).url
    await tg.feed(joined(BOB, at(0, 10), url), f.message(GROUP, BOB, "hi", date=at(1)))
    await tg.flush()
    tg.clock.set(at(30))  # the bot was down when Bob's 7 days ended
    await invites_schedule.on_startup(tg.app)
    async with tg.db() as session:
        assert await session.get(ReferralCredit, (CHAT_ID, BOB["id"])) is not None
    (job,) = tg.app.job_queue.get_jobs_by_name(invites_schedule.JOB)
    assert job.callback is invites_schedule.settle_job


def test_contract_checks_invite_link_values():
    assert contract_problems("createChatInviteLink", {"chat_id": 1, "name": "n" * 32}) == []
    assert contract_problems("createChatInviteLink", {"chat_id": 1, "name": "n" * 33})
    assert contract_problems("createChatInviteLink", {"chat_id": 1, "member_limit": 0})
    assert contract_problems("createChatInviteLink", {"chat_id": 1, "member_limit": 100000})
    assert contract_problems(
        "createChatInviteLink", {"chat_id": 1, "member_limit": 5, "creates_join_request": True}
    )


async def test_erasure_keeps_joins_by_source_and_leaves_no_id_in_the_invite_tables(tg):
    """/forgetme of a referrer and of a referred member (bot.privacy): the figures by source
    stay the same, and neither id is left in the invite tables."""
    from bot.privacy import erase

    await feed_sources_history(tg)
    today = D0 + timedelta(days=22)

    async def figures() -> list[dict]:
        async with tg.db() as session:
            rows = await joins_by_source(session, CHAT_ID, D0, D0 + timedelta(days=9), today=today)
        return [r.as_dict(sum(s.joins for s in rows)) for r in rows]

    before = await figures()
    async with tg.services.db.begin() as session:
        await session.execute(
            InviteJoinRequest.__table__.insert().values(
                chat_id=CHAT_ID, user_id=107, source="direct", requested_at=at(3)
            )
        )
    for user_id in (1, 107):  # Alice (the referrer), u7 (whom she referred)
        async with tg.services.db.begin() as session:
            await erase(session, user_id)
    assert await figures() == before == EXPECTED
    async with tg.db() as session:
        for table, column in [
            (JoinSource, JoinSource.user_id),
            (JoinSource, JoinSource.referrer_id),
            (InviteLink, InviteLink.referrer_id),
            (InviteJoinRequest, InviteJoinRequest.user_id),
        ]:
            found = await session.scalar(
                select(func.count()).select_from(table).where(column.in_([1, 107]))
            )
            assert found == 0, (table, column)
