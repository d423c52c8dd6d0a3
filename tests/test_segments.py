"""Member segments: every boundary, week-on-week counts, /segment, thresholds, the digest line.

Today T = Wednesday 2026-11-25 (chat time zone UTC). The history, as days before T:

    N1  joins T-6, never writes                     → new        (joined in the last 7 days)
    N2  joins T-7, never writes                     → dormant    (joined 8 days ago, silent)
    N3  joins T-3, writes T-3, T-2, T-1, T          → new        (new wins over core)
    C1  writes T, T-1, T-2, T-6 (4 of the 7 days)   → core
    C2  writes T-1, T-2, T-3, T-7 (3 of the 7 days) → casual
    K1  writes T-25 and T-13                        → casual     (last active 13 days ago)
    R1  writes T-30 and T-14                        → at_risk    (last active 14 days ago)
    R2  "<b>Rita</b>" writes T-43                   → at_risk    (43 days ago: still in the 30)
    D1  writes T-44                                 → dormant    (44 days ago)
    L1  writes T and leaves T                       → not a member any more
    G1  writes T-10, T-9, T-8, leaves T-3           → not a member any more

As of W = T-7 (the week-on-week comparison), members are those seen/joined by W and not gone:
    N2 (joined W)           → new
    C2 (wrote W)            → casual (1 day of 7)
    K1 (T-13 = W-6)         → casual
    R1 (T-14 = W-7)         → casual
    G1 (wrote W-3..W-1, left after W) → casual
    R2 (T-43 = W-36)        → at_risk
    D1 (T-44 = W-37)        → at_risk
    (N1, N3, C1, L1 first appear after W)
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import segments as seg
from bot.digest import compose
from bot.segments import DEFAULTS, SegmentSettings, Thresholds, classify, with_setting
from tests import factories as f
from tests.conftest import both_databases

T = date(2026, 11, 25)
GROUP = f.group(-1001000000077, "Seg <b>Group</b>")
CHAT_ID = GROUP["id"]
ADMIN = f.user(10, "Ada")
N1, N2, N3 = f.user(201, "Nia"), f.user(202, "Ned"), f.user(203, "Noa")
C1, C2 = f.user(211, "Cora"), f.user(212, "Cy")
K1 = f.user(221, "Kai")
R1, R2 = f.user(231, "Rob"), f.user(232, "<b>Rita</b>")
D1 = f.user(241, "Dee")
L1 = f.user(251, "Lou")
G1 = f.user(261, "Gil")

JOINS = [(6, N1), (7, N2), (3, N3)]
WRITES = [
    (3, N3),
    (2, N3),
    (1, N3),
    (0, N3),
    (0, C1),
    (1, C1),
    (2, C1),
    (6, C1),
    (1, C2),
    (2, C2),
    (3, C2),
    (7, C2),
    (25, K1),
    (13, K1),
    (30, R1),
    (14, R1),
    (43, R2),
    (44, D1),
    (0, L1),
    (10, G1),
    (9, G1),
    (8, G1),
]
TODAY = {"new": 2, "core": 1, "casual": 2, "at_risk": 2, "dormant": 2}
WEEK_AGO = {"new": 1, "core": 0, "casual": 4, "at_risk": 2, "dormant": 0}


def at(days_before: int, hour: int = 12) -> datetime:
    return datetime.combine(T - timedelta(days=days_before), time(hour), tzinfo=UTC)


async def feed_history(tg) -> None:
    tg.clock.set(at(60, 8))
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(CHAT_ID, ADMIN)
    events = [(at(d, 9), f.new_members(GROUP, [u], date=at(d, 9))) for d, u in JOINS]
    events += [(at(d, 12), f.message(GROUP, u, "hi", date=at(d, 12))) for d, u in WRITES]
    events.append((at(0, 18), f.left_member(GROUP, L1, date=at(0, 18))))
    events.append((at(3, 18), f.left_member(GROUP, G1, date=at(3, 18))))
    for _, update in sorted(events, key=lambda e: e[0]):
        await tg.feed(update)
        await tg.flush()  # as the running bot does within a second
    tg.clock.set(at(0, 20))
    tg.api.clear()


# --- the rules, bit by bit ---------------------------------------------------------------


def bits(*days_ago: int) -> int:
    return sum(1 << d for d in days_ago)


@pytest.mark.parametrize(
    ("active", "joined_days_ago", "expected"),
    [
        ((), 0, "new"),  # joined today
        ((), 6, "new"),  # joined 6 days ago: still in the last 7 days
        ((), 7, "dormant"),  # joined 7 days ago, never active
        ((0, 1, 2, 3), 3, "new"),  # new wins over core
        ((0, 1, 2, 6), None, "core"),  # 4 of the last 7 days
        ((0, 1, 2, 7), None, "casual"),  # the 4th day is the 8th day back: 3 of 7
        ((0, 1, 2), None, "casual"),
        ((13,), None, "casual"),  # 13 days ago is inside the 14
        ((14,), None, "at_risk"),  # 14 days silent, active in the 30 before
        ((43,), None, "at_risk"),  # the 30th day before the silent 14
        ((44,), None, "dormant"),  # 44 days ago: silent 14 + 30 days
        ((44, 61), None, "dormant"),
        ((), None, "dormant"),  # never active, no recorded join
        ((), 30, "dormant"),
    ],
)
def test_every_boundary(active, joined_days_ago, expected):
    joined = None if joined_days_ago is None else T - timedelta(days=joined_days_ago)
    assert classify(bits(*active), joined, T)[0] == expected


def test_days_since_last_active():
    assert classify(bits(3, 20), None, T) == ("casual", 3)
    assert classify(bits(44), None, T) == ("dormant", None)  # outside the look-back


def test_other_thresholds():
    strict = Thresholds(new_days=3, core_days=2, core_window=3, casual_days=5, risk_days=10)
    assert classify(0, T - timedelta(days=3), T, strict)[0] == "dormant"
    assert classify(bits(0, 2), None, T, strict)[0] == "core"
    assert classify(bits(0, 3), None, T, strict)[0] == "casual"
    assert classify(bits(5), None, T, strict)[0] == "at_risk"
    assert classify(bits(14), None, T, strict)[0] == "at_risk"
    assert classify(bits(15), None, T, strict)[0] == "dormant"


def test_window_bits_relative_to_a_day():
    ordinal = T.toordinal()
    # Last active T-2 with days T-2 and T-5: seen from T, bits 2 and 5.
    assert seg.window_bits(ordinal - 2, 0b1001, ordinal) == bits(2, 5)
    # Seen from T-3, the day after it is dropped: only T-5, 2 days back.
    assert seg.window_bits(ordinal - 2, 0b1001, ordinal - 3) == bits(2)
    assert seg.window_bits(None, 0, ordinal) == 0


def test_settings_are_checked():
    assert with_setting(DEFAULTS, "risk", 45) == Thresholds(risk_days=45)
    assert with_setting(DEFAULTS, "window", 10) == Thresholds(core_window=10)
    assert with_setting(DEFAULTS, "core", 8) == "core_window"
    assert with_setting(DEFAULTS, "casual", 6) == "casual_window"
    assert with_setting(DEFAULTS, "new", 0) == "range"
    assert with_setting(DEFAULTS, "sparkle", 3) == "unknown"


# --- through the bot --------------------------------------------------------------------


@both_databases
async def test_segments_today_and_a_week_ago(tg):
    await feed_history(tg)
    async with tg.db() as session:
        placed = await seg.segment_members(
            session, CHAT_ID, (T, T - timedelta(days=7)), tz=ZoneInfo("UTC"), today=T
        )
    assert placed[T].counts() == TODAY
    assert placed[T - timedelta(days=7)].counts() == WEEK_AGO
    by_id = {m.user_id: m.segment for m in placed[T].members}
    assert by_id == {
        201: "new",
        202: "dormant",
        203: "new",
        211: "core",
        212: "casual",
        221: "casual",
        231: "at_risk",
        232: "at_risk",
        241: "dormant",
    }


async def test_days_beyond_the_masks_come_from_the_rollups(tg, monkeypatch):
    """As of T-20 the look-back starts at T-63, past C1's 62-day mask (T-61..T): rollups."""
    await feed_history(tg)
    calls = []
    original = seg._bits_from_rollups

    async def spy(session, chat_id, ref, lookback):
        calls.append(ref)
        return await original(session, chat_id, ref, lookback)

    monkeypatch.setattr(seg, "_bits_from_rollups", spy)
    ref = T - timedelta(days=20)
    async with tg.db() as session:
        placed = await seg.segment_members(session, CHAT_ID, (ref,), tz=ZoneInfo("UTC"), today=T)
        # The same answer for T-7 whichever way it is read.
        monkeypatch.setattr(seg, "covered", lambda *args: False)
        week = await seg.segment_members(
            session, CHAT_ID, (T - timedelta(days=7),), tz=ZoneInfo("UTC"), today=T
        )
    assert calls == [ref, T - timedelta(days=7)]
    # K1 (T-25 = ref-5) and R1 (T-30 = ref-10): casual; R2 (ref-23), D1 (ref-24): at risk.
    assert placed[ref].counts() == {"new": 0, "core": 0, "casual": 2, "at_risk": 2, "dormant": 0}
    assert week[T - timedelta(days=7)].counts() == WEEK_AGO


async def test_segment_overview_and_list(tg):
    await feed_history(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/segment", date=tg.now()))
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert "Member segments of Seg &lt;b&gt;Group&lt;/b&gt;</b> on 2026-11-25" in text
    assert "New: <b>2</b> (▲1)" in text and "Core: <b>1</b> (▲1)" in text
    # Ada's /segment is a message today: she is casual too (3, against 4 a week ago).
    assert "Casual: <b>3</b> (▼1)" in text and "At risk: <b>2</b> (±0)" in text
    assert "Dormant: <b>2</b> (▲2)" in text
    assert "Dormant: silent for 44+ days, or never active" in text
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/segment at_risk", date=tg.now()))
    (text,) = tg.api.sent_texts(CHAT_ID)
    assert text.splitlines() == [
        "<b>At risk</b> in Seg &lt;b&gt;Group&lt;/b&gt; on 2026-11-25: 2",
        "• Rob (id 231) — last active 2026-11-11",
        "• &lt;b&gt;Rita&lt;/b&gt; (id 232) — last active 2026-10-13",
    ]
    await tg.feed(f.message(GROUP, ADMIN, "/segment 沉睡", date=tg.now()))
    assert tg.api.sent_texts(CHAT_ID)[-1].splitlines()[1:] == [
        "• Dee (id 241) — last active 2026-10-12",
        "• Ned (id 202) — never active, joined 2026-11-18",
    ]
    await tg.feed(f.message(GROUP, ADMIN, "/segment lurkers", date=tg.now()))
    assert "“lurkers” is not a segment" in tg.api.sent_texts(CHAT_ID)[-1]
    assert "/segment at_risk" in tg.api.sent_texts(CHAT_ID)[-1]
    await tg.feed(f.message(GROUP, C1, "/segment at_risk", date=tg.now()))
    assert "Only the group's operators" in tg.api.sent_texts(CHAT_ID)[-1]


async def test_thresholds_per_group(tg):
    await feed_history(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/segment set risk 29", date=tg.now()))
    assert "Segment thresholds saved" in tg.api.sent_texts(CHAT_ID)[-1]
    assert "silent for 43+ days" in tg.api.sent_texts(CHAT_ID)[-1]
    async with tg.db() as session:
        row = await session.scalar(select(SegmentSettings))
        assert (row.risk_days, row.casual_days) == (29, 14)
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/segment at_risk", date=tg.now()))
    assert "Rita" not in tg.api.sent_texts(CHAT_ID)[0]  # 43 days: dormant now
    for command, answer in (
        ("/segment set core 9", "cannot exceed the core window (7 days)"),
        ("/segment set new 0", "new must be between 1 and 60, e.g. /segment set new 7"),
        ("/segment set casual x", "casual must be between 1 and 60"),
        ("/segment set colour 3", "“colour” is not a threshold"),
        ("/segment set risk", "Usage"),
    ):
        await tg.feed(f.message(GROUP, ADMIN, command, date=tg.now()))
        assert answer in tg.api.sent_texts(CHAT_ID)[-1], command
    await tg.feed(f.message(GROUP, ADMIN, "/segment reset", date=tg.now()))
    async with tg.db() as session:
        row = await session.scalar(
            select(SegmentSettings).execution_options(populate_existing=True)
        )
        assert row.risk_days == 30


async def test_long_lists_are_split(tg):
    tg.clock.set(at(60, 8))
    await tg.feed(f.my_chat_member(GROUP, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(CHAT_ID, ADMIN)
    people = [f.user(1000 + i, f"Member number {i} " + "x" * 40) for i in range(120)]
    for person in people:  # all last active 20 days ago: at risk
        await tg.feed(f.message(GROUP, person, "hi", date=at(20)))
    await tg.flush()
    tg.clock.set(at(0, 20))
    tg.api.clear()
    await tg.feed(f.message(GROUP, ADMIN, "/segment at_risk", date=tg.now()))
    texts = tg.api.sent_texts(CHAT_ID)
    assert len(texts) >= 2 and all(len(text) <= 4096 for text in texts)
    lines = "\n".join(texts).splitlines()
    assert lines[0].endswith(": 120") and len(lines) == 121
    assert lines[1] == f"• Member number 0 {'x' * 40} (id 1000) — last active 2026-11-05"


async def test_digest_shows_counts_and_their_week_on_week_change(tg):
    await feed_history(tg)
    async with tg.db() as session:
        composed = await compose(
            session,
            chat_id=CHAT_ID,
            title="Seg",
            lang="en",
            tz=ZoneInfo("UTC"),
            kind="daily",
            period_start=T,
            today=T,
        )
    assert (
        "👥 <b>Segments</b> (change in 7 days): New 2 (▲1) · Core 1 (▲1) · Casual 2 (▼2)"
        " · At risk 2 (±0) · Dormant 2 (▲2)"
    ) in composed.text
    assert composed.photos == []  # the heat map is for weekly reports


async def test_in_chinese(tg):
    await feed_history(tg)
    await tg.services.chats.update_settings(CHAT_ID, language="zh")
    await tg.feed(f.message(GROUP, ADMIN, "/segment 流失预警", date=tg.now()))
    assert tg.api.sent_texts(CHAT_ID)[-1].splitlines()[:2] == [
        "<b>流失预警</b>（Seg &lt;b&gt;Group&lt;/b&gt;，2026-11-25）：2 人",
        "• Rob（id 231）— 最后活跃 2026-11-11",
    ]
    await tg.feed(f.message(GROUP, ADMIN, "/segment", date=tg.now()))
    assert "沉睡成员：<b>2</b> (▲2)" in tg.api.sent_texts(CHAT_ID)[-1]
