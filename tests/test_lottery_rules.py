"""Lottery arguments and the fairness algorithm, without Telegram: parsing (English and Chinese,
bad and contradictory input), the commitment and HMAC ranking against an independent
implementation, the README verifier, and a seeded statistical test that the ranking is uniform.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.lottery import (
    LotterySpec,
    SpecError,
    commitment_of,
    normalize_keyword,
    parse_spec,
    ranking,
    ticket,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
README = Path(__file__).resolve().parent.parent / "README.md"


def spec(text: str, tz: ZoneInfo = SHANGHAI) -> LotterySpec:
    return parse_spec(text, now=NOW, tz=tz)


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        spec(text)
    return caught.value


# --- parsing ----------------------------------------------------------------------------------


def test_full_english_form_in_any_order():
    parsed = spec(
        "Mechanical keyboard | draw at 2026-12-24 20:00 | winners 3 | min points 100"
        " | checkins 5/7 | member 30d | keyword Open Sesame!"
    )
    assert parsed.prize == "Mechanical keyboard"
    assert parsed.winners == 3
    # 20:00 in Shanghai is 12:00 UTC.
    assert parsed.draw_at == datetime(2026, 12, 24, 12, 0, tzinfo=UTC)
    assert parsed.draw_entries is None
    assert parsed.conditions.min_points == 100
    assert parsed.conditions.checkins == (5, 7)
    assert parsed.conditions.member_for == timedelta(days=30)
    assert parsed.keyword == "open sesame"


def test_relative_time_entries_and_joined_after():
    parsed = spec("Hat | draw in 2h | draw at 100 entries | joined after 2026-11-20")
    assert parsed.draw_at == NOW + timedelta(hours=2)
    assert parsed.draw_entries == 100
    assert parsed.winners == 1
    # Midnight of 2026-11-20 in Shanghai.
    assert parsed.conditions.joined_after == datetime(2026, 11, 19, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "draw_at", "entries"),
    [
        ("红包 | 名额 3 | 2小时后开奖", NOW + timedelta(hours=2), None),
        ("红包 | 3名 | 开奖 2026-12-24 20:00", datetime(2026, 12, 24, 12, tzinfo=UTC), None),
        ("红包 | 中奖人数 3 | 满100人开奖", None, 100),
        ("红包 | 名额：3 | 开奖 满50人", None, 50),
        ("红包 | 3 winners | 明天 09:00 开奖", datetime(2026, 11, 26, 1, tzinfo=UTC), None),
    ],
)
def test_chinese_aliases(text, draw_at, entries):
    parsed = spec(text)
    assert (parsed.prize, parsed.winners) == ("红包", 3)
    assert (parsed.draw_at, parsed.draw_entries) == (draw_at, entries)


def test_chinese_conditions():
    parsed = spec("奖品 | 满10人开奖 | 最低积分 50 | 签到 3/7 | 入群满30天 | 口令 芝麻开门")
    assert parsed.conditions.min_points == 50
    assert parsed.conditions.checkins == (3, 7)
    assert parsed.conditions.member_for == timedelta(days=30)
    assert parsed.keyword == "芝麻开门"
    assert spec("奖品 | 满10人开奖 | 近7天签到5次").conditions.checkins == (5, 7)
    assert spec("奖品 | 满10人开奖 | 新成员 2026-11-01").conditions.joined_after is not None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "no_prize"),
        ("| winners 2 | draw in 2h", "no_prize"),
        ("Prize", "no_draw"),
        ("Prize | winners 2", "no_draw"),
        ("Prize | draw in 2h | draw at 20:00", "segment_twice"),
        ("Prize | winners 2 | winners 3 | draw in 1h", "segment_twice"),
        ("Prize | winners 0 | draw in 1h", "winners_range"),
        ("Prize | winners 1000 | draw in 1h", "winners_range"),
        ("Prize | winners 5 | draw at 3 entries", "entries_below_winners"),
        ("Prize | draw at 2020-01-01 10:00", "time_past"),
        ("Prize | draw in 30s", "time_past"),
        ("Prize | draw in 400d", "time_far"),
        ("Prize | draw at someday", "bad_time"),
        ("Prize | draw in 2h | checkins 8/7", "bad_checkins"),
        ("Prize | draw in 2h | checkins 0/7", "bad_checkins"),
        ("Prize | draw in 2h | joined after 2026-13-45", "bad_date"),
        ("Prize | draw in 2h | member forever", "bad_duration"),
        ("Prize | draw in 2h | keyword /start", "bad_keyword"),
        ("Prize | draw in 2h | min points 0", "points_range"),
        ("Prize | draw in 2h | joined after 2026-11-30", "joined_after_draw"),
        ("Prize | draw in 2d | joined after 2026-11-24 | member 30d", "joined_and_member"),
        ("Prize | draw in 2h | colour blue", "unknown_segment"),
        ("x" * 256 + " | draw in 2h", "prize_too_long"),
    ],
)
def test_bad_and_contradictory_arguments_name_the_problem(text, key):
    assert error(text).key == key


def test_unknown_segment_is_quoted_back():
    assert error("Prize | draw in 2h | colour blue").values == {"segment": "colour blue"}


def test_keywords_compare_loosely():
    assert normalize_keyword("  Open   SESAME!! ") == "open sesame"
    assert normalize_keyword("芝麻开门！") == "芝麻开门"


# --- fairness ---------------------------------------------------------------------------------


def independent_ranking(seed: bytes, lottery_id: int, users: list[int]) -> list[int]:
    """The documented algorithm, written out again from the README's words."""

    def key(user_id: int) -> tuple[int, int]:
        message = f"{lottery_id}:{user_id}".encode("ascii")
        digest = hmac.new(seed, message, hashlib.sha256).digest()
        return int.from_bytes(digest, "big"), user_id

    return sorted(users, key=key)


def test_commitment_and_ranking_follow_the_documented_encoding():
    rng = random.Random(5)
    for lottery_id in (1, 42, 10**12):
        seed = rng.randbytes(32)
        users = [rng.randrange(1, 10**10) for _ in range(50)]
        assert commitment_of(seed) == hashlib.sha256(seed).hexdigest()
        assert ranking(seed, lottery_id, users) == independent_ranking(seed, lottery_id, users)
        assert (
            ticket(seed, lottery_id, users[0])
            == hmac.new(seed, f"{lottery_id}:{users[0]}".encode(), hashlib.sha256).digest()
        )


def test_the_readme_verifier_agrees_with_the_bot():
    block = re.search(r"```python\n(# verify\.py.*?)```", README.read_text("utf-8"), re.S)
    assert block, "README lost its verifier"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    namespace: dict = {}
    exec(compile(code, "README verifier", "exec"), namespace)  # noqa: S102
    rng = random.Random(11)
    seed = rng.randbytes(32)
    users = [rng.randrange(1, 10**9) for _ in range(30)]
    order = namespace["rank"](7, seed.hex(), commitment_of(seed), users)
    assert order == ranking(seed, 7, users)
    with pytest.raises(AssertionError):
        namespace["rank"](7, seed.hex(), "0" * 64, users)


def chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


def test_ranking_is_uniform_over_many_draws():
    """Seeded, so it never flakes: over 24,000 simulated draws each of 12 entrants comes first
    about equally often, and one entrant lands on each of the 12 places about equally often.
    Critical value of chi-square with 11 degrees of freedom at p = 0.001 is 31.26.
    """
    rng = random.Random(2026)
    users = [rng.randrange(1, 10**10) for _ in range(12)]
    firsts = dict.fromkeys(users, 0)
    places = [0] * len(users)
    watched = users[3]
    for draw in range(24_000):
        order = ranking(rng.randbytes(32), 1000 + draw, users)
        firsts[order[0]] += 1
        places[order.index(watched)] += 1
    assert chi_square(list(firsts.values())) < 31.26, firsts
    assert chi_square(places) < 31.26, places
    # And it is not trivially constant: every entrant won at least 1,700 of the ~2,000 draws.
    assert min(firsts.values()) > 1700
