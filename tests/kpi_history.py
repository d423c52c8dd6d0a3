"""A small synthetic history fed through the real bot, with its KPIs worked out by hand.

Days are numbered from D0 = Monday 2026-11-02 (chat time zone UTC). Members:

    A  "Ann <b>"  in the group before the history starts (no join event)
    B  joins day 0; writes on days 1 (2 msgs), 3 (1, at 09:00) and 10 (1 + lottery entry)
    C  joins day 0; writes once, on day 8
    D  joins day 2 and writes that day; writes on day 3 (at 08:00); leaves on day 4
    E  joins day 7; writes 2 on day 8; checks in (without writing) on day 9
    F  joins day 7; never active
    A  writes 2 on day 0, 1 on day 1, 3 on day 5, 1 on day 9 (+ check-in + poll answer),
       1 on day 20

Active members per day (message, check-in, poll answer or lottery entry):
    0: A        1: A B      2: D        3: B D      4: —        5: A
    6: —        7: —        8: C E      9: A E      10: B       20: A
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bot.activity import local_day, mark_participation
from tests import factories as f

D0 = date(2026, 11, 2)
GROUP = f.group(-1001000000042, "KPI <i>Group</i>")
CHAT_ID = GROUP["id"]
ADMIN = f.user(10, "Ada")
A = f.user(101, "Ann <b>")
B = f.user(102, "Ben")
C = f.user(103, "Cai")
D = f.user(104, "Dan")
E = f.user(105, "Eve")
F = f.user(106, "Fay")


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(D0 + timedelta(days=day), time(hour, minute), tzinfo=UTC)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


# (day, member, messages, hour)
MESSAGES = [
    (0, A, 2, 12),
    (1, A, 1, 12),
    (1, B, 2, 12),
    (2, D, 1, 12),
    (3, D, 1, 8),
    (3, B, 1, 9),
    (5, A, 3, 12),
    (8, C, 1, 12),
    (8, E, 2, 11),
    (9, A, 1, 12),
    (10, B, 1, 12),
    (20, A, 1, 12),
]
JOINS = [(0, B), (0, C), (2, D), (7, E), (7, F)]
LEAVES = [(4, D)]
PARTICIPATION = [
    (9, A, "checked_in"),
    (9, A, "poll_answered"),
    (9, E, "checked_in"),
    (10, B, "lottery_entered"),
]

# Worked out by hand from the table above.
EXPECTED: dict[int, dict[str, Any]] = {
    0: {"messages": 2, "dau": 1, "wau": 1, "mau": 1, "joins": 2, "leaves": 0, "checkins": 0},
    1: {"messages": 3, "dau": 2, "wau": 2, "mau": 2, "joins": 0, "leaves": 0},
    2: {"messages": 1, "dau": 1, "wau": 3, "mau": 3, "joins": 1},
    3: {"messages": 2, "dau": 2, "wau": 3, "mau": 3},
    4: {"messages": 0, "dau": 0, "wau": 3, "mau": 3, "leaves": 1, "net": -1},
    5: {"messages": 3, "dau": 1, "wau": 3, "mau": 3},
    7: {"messages": 0, "dau": 0, "wau": 3, "mau": 3, "joins": 2, "net": 2},
    # WAU(8) = days 2..8: D, B, A, C, E
    8: {"messages": 3, "dau": 2, "wau": 5, "mau": 5, "stickiness": 2 / 5},
    # WAU(9) = days 3..9: B, D, A, C, E
    9: {
        "messages": 1,
        "dau": 2,
        "wau": 5,
        "mau": 5,
        "stickiness": 2 / 5,
        "checkins": 2,
        "checkin_rate": 1.0,
        "participation": 1.0,
    },
    # WAU(10) = days 4..10: A, C, E, B (D last active on day 3)
    10: {"messages": 1, "dau": 1, "wau": 4, "mau": 5, "stickiness": 1 / 5, "participation": 1.0},
    # WAU(11) = days 5..11: A, C, E, B
    11: {"dau": 0, "wau": 4, "mau": 5, "stickiness": 0.0},
    # WAU(20) = days 14..20: A;  MAU(20) = days 0..20: A B C D E
    20: {"messages": 1, "dau": 1, "wau": 1, "mau": 5, "stickiness": 1 / 5},
    # MAU(32) = days 3..32: A B C D E;  MAU(33) = days 4..33: A B C E (D gone)
    32: {"mau": 5},
    33: {"mau": 4},
    # MAU(38) = days 9..38: A (9, 20), E (9), B (10);  MAU(39): days 10..39: A, B
    38: {"mau": 3, "wau": 0},
    39: {"mau": 2},
}
# Retention of join cohorts when everything is measurable (today = day 40):
#   day 0 {B, C}: D1 B only → 0.5; D7 (days 1..7) B only → 0.5; D30 (1..30) B and C → 1.0
#   day 2 {D}:    D1 (day 3) yes → 1.0, D7 1.0, D30 1.0 (leaving later does not matter)
#   day 7 {E, F}: D1 (day 8) E → 0.5; D7 0.5; D30 0.5
RETENTION = {
    0: (0.5, 0.5, 1.0),
    2: (1.0, 1.0, 1.0),
    7: (0.5, 0.5, 0.5),
}
# Top contributors over days 0..10: A 7, B 4, then D and E tie at 2 (D wrote first, on day 2),
# then C 1. On day 3 alone, D (08:00) and B (09:00) tie at 1: D first.
TOP_0_10 = [(101, 7), (102, 4), (104, 2), (105, 2), (103, 1)]
TOP_DAY_3 = [(104, 1), (102, 1)]


async def add_bot(tg: Any, chat: dict[str, Any] = GROUP) -> None:
    """The bot joins as an admin before the history starts (so it sees every message)."""
    tg.clock.set(at(-1, 8))
    await tg.feed(f.my_chat_member(chat, ADMIN, "left", "administrator", date=tg.now()))
    tg.api.set_admins(chat["id"], ADMIN)


async def feed_history(tg: Any, chat: dict[str, Any] = GROUP) -> None:
    """Feed the history in time order through the real handlers, then flush."""
    events: list[tuple[datetime, Any]] = []
    for d, member, count, hour in MESSAGES:
        for i in range(count):
            events.append((at(d, hour, i), f.message(chat, member, f"m{i}", date=at(d, hour, i))))
    for d, member in JOINS:
        events.append((at(d, 7), f.new_members(chat, [member], date=at(d, 7))))
    for d, member in LEAVES:
        events.append((at(d, 18), f.left_member(chat, member, date=at(d, 18))))
    for _when, update in sorted(events, key=lambda e: e[0]):
        await tg.feed(update)
    await tg.flush()
    tz = (await tg.services.chats.get(chat["id"])).timezone
    async with tg.services.db.begin() as session:
        for d, member, kind in PARTICIPATION:
            await mark_participation(
                session,
                chat_id=chat["id"],
                user_id=member["id"],
                name=member["first_name"],
                username=None,
                when=at(d, 20),
                day=local_day(at(d, 20), tz),
                kind=kind,
            )
    await tg.flush()
