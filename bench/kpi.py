"""Benchmark: KPIs over a large synthetic history, on SQLite, with DuckDB as a reference.

Generates (numpy, raw sqlite3 executemany) a history of `--groups` groups, `--members`
members and about `--events` activity events (messages, joins, leaves, check-ins, poll
answers, lottery entries) over `--days` days, Zipf-like: group sizes and member activity
follow power laws, so the largest group has tens of thousands of members. What the bot stores
is written: the daily rollups, the roster with its recent-activity state, the chats.

Then, for the largest group, it times (median of `--repeat` runs, through the bot's own async
SQLAlchemy + aiosqlite code path):
  1. the full KPI table for one day (DAU, WAU, MAU, stickiness, joins/leaves, messages,
     check-ins, participation, D1/D7/D30 retention, top 10 contributors),
  2. a 30-day report (one full KPI row per day),
  3. the digest's chart (30 days, PNG),
and the same KPI table computed by DuckDB over the same rollups (distinct counts over the
rollup rows, the "plain" way), checking both give the same figures.

    python bench/kpi.py [--events 10000000] [--members 100000] [--groups 50] [--days 90]
    python bench/kpi.py --events 1000000 --members 10000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine as create_sync_engine  # noqa: E402

from bot.activity import MASK_DAYS  # noqa: E402
from bot.charts import render_chart  # noqa: E402
from bot.db import create_engine, make_sessionmaker  # noqa: E402
from bot.digest import chart_spec  # noqa: E402
from bot.kpi import daily_kpis, day_snapshot, top_contributors  # noqa: E402
from bot.schema import metadata  # noqa: E402

UTC_TZ = ZoneInfo("UTC")
FIRST_DAY = date(2026, 8, 1)
TARGETS_MS = {"table": 25.0, "report": 300.0}


def generate(path: Path, *, groups: int, members: int, events: int, days: int, seed: int) -> dict:
    """Write the synthetic history to a fresh SQLite database at `path`; returns facts."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    sync = create_sync_engine(f"sqlite:///{path}")
    metadata.create_all(sync)
    sync.dispose()

    # Groups: Zipf-like sizes. Members: one home group each.
    group_weights = 1.0 / np.arange(1, groups + 1)
    group_weights /= group_weights.sum()
    home = rng.choice(groups, size=members, p=group_weights)
    chat_ids = -1001000000000 - np.arange(groups)
    # Activity propensity: Pareto (a few very active members, a long quiet tail).
    propensity = rng.pareto(1.3, size=members) + 0.05
    p_active = np.clip(propensity * 0.12, 0.01, 0.95)
    # Membership window: 55% present from the start, the rest join during the period;
    # 15% of those who are there leave later.
    joined_on = np.where(rng.random(members) < 0.55, -1, rng.integers(0, days, size=members))
    leaves = rng.random(members) < 0.15
    left_on = np.where(
        leaves, np.minimum(days, np.maximum(joined_on, 0) + rng.integers(1, days, members)), days
    )
    left_on = np.where(left_on >= days, days, left_on)  # days = never left within the period

    day_index = np.arange(days)
    present = (day_index[None, :] >= np.maximum(joined_on, 0)[:, None]) & (
        day_index[None, :] < left_on[:, None]
    )
    active = (rng.random((members, days)) < p_active[:, None]) & present
    u_idx, d_idx = np.nonzero(active)
    n_active = len(u_idx)
    kinds = rng.random(n_active)
    checked_in = kinds < 0.35
    polled = rng.random(n_active) < 0.06
    entered = rng.random(n_active) < 0.02
    silent = (kinds < 0.08) & checked_in  # took part without writing that day
    n_joins = int((joined_on >= 0).sum())
    n_leaves = int((left_on < days).sum())
    other_events = int(checked_in.sum() + polled.sum() + entered.sum()) + n_joins + n_leaves
    message_budget = max(events - other_events, n_active)
    # Messages per active member-day: 1 + Poisson, scaled by propensity to meet the budget.
    weight = propensity[u_idx] ** 0.5
    talking = ~silent
    lam = weight * (message_budget - talking.sum()) / max(weight[talking].sum(), 1e-9)
    messages = np.where(talking, 1 + rng.poisson(lam), 0).astype(np.int64)
    first_second = rng.integers(0, 86400, size=n_active)

    # Rollup rows: active member-days plus join/leave days (merged where they coincide).
    rows: dict[tuple[int, int], list[Any]] = {}
    base = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC)
    for i in range(n_active):
        u, d = int(u_idx[i]), int(d_idx[i])
        m = int(messages[i])
        first = base + timedelta(days=d, seconds=int(first_second[i])) if m else None
        rows[(u, d)] = [m, first, 0, 0, bool(checked_in[i]), bool(polled[i]), bool(entered[i])]
    for u in np.nonzero(joined_on >= 0)[0]:
        rows.setdefault((int(u), int(joined_on[u])), [0, None, 0, 0, False, False, False])[2] = 1
    for u in np.nonzero(left_on < days)[0]:
        rows.setdefault((int(u), int(left_on[u])), [0, None, 0, 0, False, False, False])[3] = 1

    def day_text(d: int) -> str:
        return (FIRST_DAY + timedelta(days=d)).isoformat()

    def stamp(moment: datetime | None) -> str | None:
        return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    day_texts = [day_text(d) for d in range(days + 1)]
    user_ids = 10_000_000 + np.arange(members)
    activity_rows = [
        (
            int(chat_ids[home[u]]),
            int(user_ids[u]),
            day_texts[d],
            v[0],
            None if v[1] is None else int(v[1].timestamp()),
            0,
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
        )
        for (u, d), v in rows.items()
    ]
    activity_rows.sort(key=lambda r: (r[0], r[1], r[2]))  # chat_day totals: by the triggers
    # Roster with the recent-activity state, as the bot's writers leave it.
    last_day = np.full(members, -1)
    masks = np.zeros(members, dtype=object)
    message_count = np.zeros(members, dtype=np.int64)
    np.add.at(message_count, u_idx, messages)
    for u, d in zip(u_idx.tolist(), d_idx.tolist(), strict=True):
        last_day[u] = max(last_day[u], d)
    for u, d in zip(u_idx.tolist(), d_idx.tolist(), strict=True):
        back = last_day[u] - d
        if back < MASK_DAYS:
            masks[u] = int(masks[u] or 0) | (1 << int(back))
    ordinal0 = FIRST_DAY.toordinal()
    member_rows = []
    for u in range(members):
        joined = None if joined_on[u] < 0 else base + timedelta(days=int(joined_on[u]), hours=9)
        left = None if left_on[u] >= days else base + timedelta(days=int(left_on[u]), hours=18)
        first_seen = joined or base - timedelta(days=200)
        last = None if last_day[u] < 0 else base + timedelta(days=int(last_day[u]), hours=20)
        member_rows.append(
            (
                int(chat_ids[home[u]]),
                int(user_ids[u]),
                f"Member {u}",
                f"member{u}",
                "left" if left else "member",
                stamp(first_seen),
                stamp(joined),
                stamp(left),
                stamp(left or joined),
                stamp(last),
                int(message_count[u]),
                None if last_day[u] < 0 else ordinal0 + int(last_day[u]),
                int(masks[u] or 0),
            )
        )
    since = stamp(base - timedelta(days=365))
    chat_rows = [
        (int(c), "supergroup", f"Group {g}", "UTC", "en", 1, "administrator", 1, 1, 1, 1, 1)
        + (since, since, since)
        for g, c in enumerate(chat_ids)
    ]
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    with connection:
        connection.executemany(
            "INSERT INTO chat (id, type, title, timezone, language, active, bot_status,"
            " can_delete, can_restrict, can_pin, can_invite, sees_all_messages, sees_all_since,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            chat_rows,
        )
        connection.executemany(
            "INSERT INTO member (chat_id, user_id, display_name, username, status, first_seen,"
            " joined_at, left_at, status_changed_at, last_active, message_count, active_day,"
            " active_mask) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            sorted(member_rows),
        )
        connection.executemany(
            "INSERT INTO daily_activity (chat_id, user_id, day, messages, first_message_ts,"
            " edits, joins, leaves, checked_in, poll_answered, lottery_entered)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            activity_rows,
        )
    connection.execute("ANALYZE")
    connection.close()
    largest = int(np.bincount(home, minlength=groups).argmax())
    return {
        "events": int(messages.sum()) + other_events,
        "messages": int(messages.sum()),
        "rollup_rows": len(activity_rows),
        "largest_chat": int(chat_ids[largest]),
        "largest_members": int((home == largest).sum()),
        "seconds": time.perf_counter() - began,
        "activity_rows": activity_rows,
        "today": FIRST_DAY + timedelta(days=days),
    }


async def timed(label: str, repeat: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    await work()  # warm-up (statement caches, page cache)
    samples, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = await work()
        samples.append((time.perf_counter() - began) * 1000)
    median = statistics.median(samples)
    print(f"  {label:<44} median {median:8.2f} ms   (min {min(samples):.2f}, n={repeat})")
    return median, result


def duckdb_reference(
    rows: list[tuple], chat_id: int, day: date, repeat: int
) -> tuple[float, dict[str, Any]]:
    """The same one-day KPI table with DuckDB over the rollups (distinct counts)."""
    import duckdb

    chat = np.array([r[0] for r in rows], dtype=np.int64)
    keep = chat == chat_id
    columns = {
        "user_id": np.array([r[1] for r in rows], dtype=np.int64)[keep],
        "day": np.array([date.fromisoformat(r[2]).toordinal() for r in rows], dtype=np.int64)[
            keep
        ],
        "messages": np.array([r[3] for r in rows], dtype=np.int64)[keep],
        "first_at": np.array([r[4] or 2**62 for r in rows], dtype=np.int64)[keep],
        "joins": np.array([r[6] for r in rows], dtype=np.int64)[keep],
        "leaves": np.array([r[7] for r in rows], dtype=np.int64)[keep],
        "checked_in": np.array([r[8] for r in rows], dtype=bool)[keep],
        "polled": np.array([r[9] for r in rows], dtype=bool)[keep],
        "entered": np.array([r[10] for r in rows], dtype=bool)[keep],
    }
    db = duckdb.connect()
    db.register("source", columns)
    db.execute(
        "CREATE TABLE da AS SELECT *, (messages > 0 OR checked_in OR polled OR entered) AS active"
        " FROM source"
    )
    d = day.toordinal()

    def table() -> dict[str, Any]:
        out: dict[str, Any] = {}
        (
            out["messages"],
            out["dau"],
            out["joins"],
            out["leaves"],
            out["checkins"],
            out["participants"],
        ) = db.execute(
            "SELECT sum(messages), count(*) FILTER (active), sum(joins), sum(leaves),"
            " count(*) FILTER (checked_in), count(*) FILTER (checked_in OR polled OR entered)"
            " FROM da WHERE day = ?",
            [d],
        ).fetchone()
        out["wau"], out["mau"] = db.execute(
            "SELECT count(*) FILTER (last > ? - 7), count(*) FROM (SELECT user_id,"
            " max(day) AS last FROM da WHERE active AND day BETWEEN ? - 29 AND ?"
            " GROUP BY user_id)",
            [d, d, d],
        ).fetchone()
        out["stickiness"] = out["dau"] / out["mau"] if out["mau"] else 0.0
        # The cohorts whose D1/D7/D30 window closed on day d, in one query.
        cohorts = {
            j: (size, d1, d7, d30)
            for j, size, d1, d7, d30 in db.execute(
                "WITH c AS (SELECT DISTINCT user_id, day AS j FROM da"
                " WHERE joins > 0 AND day IN (? - 1, ? - 7, ? - 30)),"
                " back AS (SELECT c.j, c.user_id, min(da.day) AS first FROM c LEFT JOIN da"
                " ON da.user_id = c.user_id AND da.active AND da.day > c.j"
                " AND da.day <= c.j + 30 GROUP BY c.j, c.user_id)"
                " SELECT j, count(*), count(*) FILTER (first <= j + 1),"
                " count(*) FILTER (first <= j + 7), count(*) FILTER (first <= j + 30)"
                " FROM back GROUP BY j",
                [d, d, d],
            ).fetchall()
        }
        for index, (name, span) in enumerate(
            (("retention_d1", 1), ("retention_d7", 7), ("retention_d30", 30)), 1
        ):
            entry = cohorts.get(d - span)
            out[name] = entry[index] / entry[0] if entry and entry[0] else None
        out["top"] = [
            (user_id, int(total))
            for user_id, total in db.execute(
                "SELECT user_id, sum(messages) AS total FROM da WHERE day = ? AND messages > 0"
                " GROUP BY user_id ORDER BY total DESC, min(first_at), user_id LIMIT 10",
                [d],
            ).fetchall()
        ]
        return out

    table()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = table()
        samples.append((time.perf_counter() - began) * 1000)
    median = statistics.median(samples)
    print(f"  {'DuckDB: the same one-day table (rollups)':<44} median {median:8.2f} ms")
    return median, result


async def measure(path: Path, facts: dict, repeat: int) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    db = make_sessionmaker(engine)
    chat_id, today = facts["largest_chat"], facts["today"]
    yesterday = today - timedelta(days=1)

    async def table() -> tuple[Any, Any]:
        async with db() as session:
            snapshot = await day_snapshot(session, chat_id, yesterday, today=today, tz=UTC_TZ)
            top = await top_contributors(session, chat_id, yesterday, yesterday, 10)
        return snapshot, top

    async def report() -> Any:
        async with db() as session:
            return await daily_kpis(
                session, chat_id, today - timedelta(days=30), yesterday, today=today, tz=UTC_TZ
            )

    print(f"largest group {chat_id}: {facts['largest_members']:,} members")
    table_ms, (snapshot, top) = await timed("full KPI table for one day (+ top 10)", repeat, table)
    report_ms, rows = await timed("30-day report (30 full KPI rows)", repeat, report)
    spec = chart_spec("Group 0 — last 30 days", rows, {}, "en")
    chart_ms, png = await timed(
        "chart (30 days, PNG)", max(3, repeat // 4), lambda: asyncio.to_thread(render_chart, spec)
    )
    await engine.dispose()
    duck_ms, duck = duckdb_reference(facts["activity_rows"], chat_id, yesterday, repeat)

    mine = {k: snapshot.get(k) for k in duck if k not in ("top", "participants")}
    mine["top"] = [(c.user_id, c.messages) for c in top]
    mismatches = {
        k: (mine[k], duck[k])
        for k in mine
        if not (
            mine[k] == duck[k]
            or (isinstance(duck[k], float) and abs(float(mine[k] or 0) - duck[k]) < 1e-9)
        )
    }
    print(
        f"  figures: DAU {snapshot.get('dau'):,}, WAU {snapshot.get('wau'):,}, "
        f"MAU {snapshot.get('mau'):,}, messages {snapshot.get('messages'):,}, "
        f"D7 retention {snapshot.get('retention_d7')}"
    )
    print(f"  SQLite and DuckDB agree: {'yes' if not mismatches else mismatches}")
    print()
    print(
        f"  KPI table  : {table_ms:7.2f} ms  (target ≤ {TARGETS_MS['table']:.0f} ms)  "
        f"ratio to DuckDB {table_ms / duck_ms:.2f}"
    )
    print(f"  30-day rep.: {report_ms:7.2f} ms  (target ≤ {TARGETS_MS['report']:.0f} ms)")
    print(f"  chart      : {chart_ms:7.2f} ms  ({len(png):,} bytes PNG)")
    if mismatches:
        raise SystemExit("SQLite and DuckDB disagree")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", type=Path, help="keep the generated database at this path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = args.db or Path(directory) / "kpi-bench.db"
        if path.exists():
            path.unlink()
        facts = generate(
            path,
            groups=args.groups,
            members=args.members,
            events=args.events,
            days=args.days,
            seed=args.seed,
        )
        print(
            f"generated {facts['events']:,} events ({facts['messages']:,} messages) over "
            f"{args.days} days, {args.groups} groups, {args.members:,} members → "
            f"{facts['rollup_rows']:,} rollup rows in {facts['seconds']:.1f} s "
            f"({path.stat().st_size / 1e6:.0f} MB)"
        )
        asyncio.run(measure(path, facts, args.repeat))


if __name__ == "__main__":
    main()
