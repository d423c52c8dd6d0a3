"""Benchmark: the per-message hot path (activity recording) against bare PTB.

Generates synthetic group-message updates as the JSON bytes getUpdates delivers (many
groups, many members, Zipf-like activity), then for each does what a running bot does —
json parsing, `Update.de_json`, `Application.process_update` — yielding to the event loop
once per 100 updates as a real getUpdates batch does. Prints updates/s for
  (a) a bare Application with one no-op handler, and
  (b) the full bot (every handler registered, activity recording to SQLite, flushes included),
the ratio of per-update cost (b)/(a), and the rows in the database afterwards.

    python bench/activity.py [--updates 100000] [--groups 500] [--members 20000] [--dedupe]

`--dedupe` adds two runs of the full bot fed as PTB feeds updates taken from its queue
(through the concurrent, per-chat ordered update processor, a batch of 100 at a time):
(c) as in polling mode, and (d) as in webhook mode, where every update id is first recorded
in `update_seen` (bot.cluster.UpdateLog, batched) so a redelivered update is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402
from telegram import Update  # noqa: E402
from telegram.ext import ApplicationBuilder, MessageHandler, filters  # noqa: E402

from bot.app import build_app  # noqa: E402
from bot.db import create_engine, upgrade_database_async  # noqa: E402
from bot.models import DailyActivity, Member  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests import factories as f  # noqa: E402
from tests.recording import RecordingRequest  # noqa: E402

TOKEN = "123456789:BENCHtokenAAAAAAAAAAAAAAAAAAAAAAAAAA"
BATCH = 100  # getUpdates returns at most 100 updates per call


def make_updates(
    count: int, groups: int, members: int, seed: int = 7
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """`count` message updates as JSON bytes, plus the my_chat_member updates adding the bot."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    group_weights = [1 / (rank + 1) for rank in range(groups)]  # Zipf-like: a few big groups
    chats = [f.group(-1001000000000 - g, f"Group {g}") for g in range(groups)]
    users = [f.user(10_000 + u, f"Member {u}", username=f"member{u}") for u in range(members)]
    texts = ["hi", "good morning", "有人吗？", "check this out https://example.com", "👍", "ok"]
    updates = []
    for i in range(count):
        chat = rng.choices(chats, weights=group_weights)[0]
        user = users[int(rng.paretovariate(1.2) * 7) % members]
        moment = start + timedelta(seconds=i * 2)
        updates.append(json.dumps(f.message(chat, user, rng.choice(texts), date=moment)).encode())
    admin = f.user(1, "Admin")
    additions = [
        f.my_chat_member(chat, admin, "left", "administrator", date=start) for chat in chats
    ]
    return updates, additions


async def drive(app: Any, updates: list[bytes]) -> float:
    """Feed every update the way the running bot does; returns elapsed seconds."""
    bot = app.bot
    began = time.perf_counter()
    for index, raw in enumerate(updates):
        await app.process_update(Update.de_json(json.loads(raw), bot))
        if index % BATCH == BATCH - 1:
            await asyncio.sleep(0)  # the network round trip of the next getUpdates
    return time.perf_counter() - began


async def bare(updates: list[bytes]) -> float:
    async def noop(update: Update, context: Any) -> None:
        return None

    app = ApplicationBuilder().token(TOKEN).request(RecordingRequest()).build()
    app.add_handler(MessageHandler(filters.ALL, noop))
    async with app:
        return await drive(app, updates)


async def drive_queued(app: Any, updates: list[bytes]) -> float:
    """As PTB's update fetcher does: each update of a getUpdates batch is processed in its
    own task through the application's update processor."""
    bot, processor = app.bot, app.update_processor
    began = time.perf_counter()
    for start in range(0, len(updates), BATCH):
        batch = [Update.de_json(json.loads(raw), bot) for raw in updates[start : start + BATCH]]
        await asyncio.gather(*(processor.process_update(u, app.process_update(u)) for u in batch))
    return time.perf_counter() - began


async def full(
    updates: list[bytes],
    additions: list[dict[str, Any]],
    directory: Path,
    *,
    queued: bool = False,
    dedupe: bool = False,
) -> tuple[float, int, int]:
    url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    await upgrade_database_async(url)
    engine = create_engine(url)
    settings = Settings(_env_file=None, bot_token=TOKEN, database_url=url)  # type: ignore[call-arg]
    app = build_app(
        settings,
        engine=engine,
        request=RecordingRequest(),
        rate_limiter=False,
        concurrent=queued,
        dedupe=dedupe,
    )
    async with app:
        services = app.bot_data["services"]
        for addition in additions:  # the bot is already in its groups when the timing starts
            await app.process_update(Update.de_json(addition, app.bot))
        services.activity.start()
        began = time.perf_counter()
        await (drive_queued if queued else drive)(app, updates)
        await services.activity.stop()  # the last flush is part of the cost
        elapsed = time.perf_counter() - began
        async with services.db() as session:
            messages = await session.scalar(select(func.sum(DailyActivity.messages)))
            roster = await session.scalar(select(func.count()).select_from(Member))
    await engine.dispose()
    return elapsed, int(messages or 0), int(roster or 0)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds")
    parser.add_argument("--dedupe", action="store_true", help="also (c) queued, (d) + dedupe")
    args = parser.parse_args()

    updates, additions = make_updates(args.updates, args.groups, args.members)
    n = len(updates)
    print(
        f"{n:,} message updates, {args.groups} groups, {args.members:,} members, "
        f"{args.rounds} alternating rounds (best and median reported)"
    )
    await bare(updates[: min(5000, n)])  # warm-up (imports, caches)
    bare_times, full_times, queued_times, dedupe_times = [], [], [], []
    variants = [(full_times, {})]
    if args.dedupe:
        variants += [
            (queued_times, {"queued": True}),
            (dedupe_times, {"queued": True, "dedupe": True}),
        ]
    for _ in range(args.rounds):
        bare_times.append(await bare(updates))
        for times, options in variants:
            with tempfile.TemporaryDirectory() as directory:
                seconds, messages, roster = await full(
                    updates, additions, Path(directory), **options
                )
            times.append(seconds)
            if messages != n:
                raise SystemExit(f"activity was lost: {messages:,} of {n:,} messages recorded")
    rows = [
        ("(a) bare PTB, one no-op handler", bare_times),
        ("(b) full bot, SQLite recording ", full_times),
    ]
    if args.dedupe:
        rows += [
            ("(c) full bot, queued (polling) ", queued_times),
            ("(d) queued + update_id dedupe  ", dedupe_times),
        ]
    for label, times in rows:
        best, middle = min(times), statistics.median(times)
        print(
            f"{label}: best {n / best:>7,.0f} updates/s ({best / n * 1e6:5.1f} µs/update), "
            f"median {n / middle:>7,.0f} updates/s ({middle / n * 1e6:5.1f} µs/update)"
        )
    print(
        f"per-update cost ratio (b)/(a): best {min(full_times) / min(bare_times):.2f}, "
        f"median {statistics.median(full_times) / statistics.median(bare_times):.2f}"
        "  (target ≤ 1.30)"
    )
    if args.dedupe:
        print(
            f"update_id de-duplication (d)/(c): best {min(dedupe_times) / min(queued_times):.2f}, "
            f"median {statistics.median(dedupe_times) / statistics.median(queued_times):.2f}"
        )
    print(
        f"rows afterwards (last round): daily_activity messages = {messages:,} (sent {n:,}), "
        f"roster rows = {roster:,}"
    )


if __name__ == "__main__":
    asyncio.run(main())
