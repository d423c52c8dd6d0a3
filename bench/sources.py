"""Benchmark: joins by source (digest section, `kpi --by source`) over the KPI benchmark's history.

Generates the history with bench/kpi.py's generator, then attributes the largest group's joins:
three named links and ten members' links share 60% of them, 10% come through other links, 30%
stay direct/unknown (no row, as for joins recorded before attribution existed). Times, median
of `--repeat` runs through the bot's own async code path: the joins by source of the last 30
days (what the digest section and the default export compute) and of all 90 days (windows
older than the members' masks are read from the rollups).

    python bench/sources.py [--events 3000000] [--members 30000] [--groups 50] [--days 90]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kpi import generate  # noqa: E402
from bot.db import create_engine, make_sessionmaker  # noqa: E402
from bot.invites import joins_by_source  # noqa: E402


def attribute(path: Path, chat_id: int, seed: int) -> int:
    """Write invite links and join_source rows for the chat's joins; returns the join count."""
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    now = datetime(2026, 8, 1, tzinfo=UTC).replace(tzinfo=None).isoformat(" ")
    for n in range(13):
        name, referrer = (f"link{n}", None) if n < 3 else (None, 10_000_000 + n)
        db.execute(
            "INSERT INTO invite_link (chat_id, name, referrer_id, url, creates_join_request,"
            " created_at) VALUES (?, ?, ?, ?, 0, ?)",
            (chat_id, name, referrer, f"https://t.me/+bench{n}", now),
        )
    link_ids = [row[0] for row in db.execute("SELECT id FROM invite_link ORDER BY id")]
    joins = db.execute(
        "SELECT user_id, day FROM daily_activity WHERE chat_id = ? AND joins > 0", (chat_id,)
    ).fetchall()
    rows = []
    for user_id, day in joins:
        draw = rng.random()
        if draw >= 0.7:
            continue  # direct/unknown: no row
        joined_at = f"{day} 12:00:00"
        if draw < 0.6:
            link = link_ids[int(rng.integers(len(link_ids)))]
            rows.append((chat_id, user_id, joined_at, day, "link", link, None))
        else:
            rows.append((chat_id, user_id, joined_at, day, "other", None, "partner"))
    db.executemany(
        "INSERT INTO join_source (chat_id, user_id, joined_at, day, source, link_id, link_name,"
        " via_request) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        rows,
    )
    db.commit()
    db.close()
    return len(joins)


async def measure(path: Path, facts: dict, repeat: int) -> None:
    chat_id, today = facts["largest_chat"], facts["today"]
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    db = make_sessionmaker(engine)
    for label, days in (("30 days", 30), ("90 days", 90)):
        start, end = today - timedelta(days=days), today - timedelta(days=1)
        timings = []
        for _ in range(repeat):
            async with db() as session:
                began = time.perf_counter()
                rows = await joins_by_source(session, chat_id, start, end, today=today)
                timings.append((time.perf_counter() - began) * 1000)
        total = sum(r.joins for r in rows)
        print(
            f"joins by source, {label}: {statistics.median(timings):.1f} ms "
            f"({total:,} joins, {len(rows)} sources)"
        )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--members", type=int, default=30_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sources-bench.db"
        facts = generate(
            path,
            groups=args.groups,
            members=args.members,
            events=args.events,
            days=args.days,
            seed=args.seed,
        )
        joins = attribute(path, facts["largest_chat"], args.seed)
        print(
            f"largest group {facts['largest_chat']}: {facts['largest_members']:,} members, "
            f"{joins:,} join rows over {args.days} days"
        )
        asyncio.run(measure(path, facts, args.repeat))


if __name__ == "__main__":
    main()
