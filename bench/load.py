"""Load benchmark: a realistic mix of updates from many groups through the whole bot.

Generates the update JSON Telegram sends for `--groups` groups (Zipf-like sizes): mostly plain
text, some edits, commands (/stats, /me, /top), check-in keywords (签到), lottery Join
presses, chat_member joins and leaves, and answers to polls the bot posted. A set-up phase
(not timed) adds the bot to every group as an administrator and, through the real commands,
opens a lottery and posts a poll in the busiest groups, so presses and answers hit real rows.

Then, in each round, the same `--updates` updates are driven through
  (a) a bare PTB Application (one trivial handler for every update),
  (a') the same, its handler making exactly the Bot API calls the full bot made for each
      update in (b) — PTB's share of the bot's work, the ceiling of (b)/(a),
  (b) the full bot, one process on SQLite, as in long polling (its inbox, bot/inbox.py, fed
      per getUpdates batch of 100; `--without-inbox` leaves it out),
  (c) the full bot, two OS processes on one PostgreSQL database (`--pg-url`), each taking
      the updates of half of the groups (split by chat, so every chat's order holds),
      started together, without the inbox (a webhook process keeps each update in
      `InboxQueue.put`, which this driver does not pass through; its cost is in
      docs/faults.md); throughput is all updates over the wall time of both,
the way the running bot handles them: JSON parsing, `Update.de_json`, then PTB's concurrent
path (`update_processor.process_update(update, app.process_update(update))` in a task, as
`Application`'s update fetcher does), with at most `--window` updates in flight (default
100, one getUpdates batch). Latency is per update, from entering the update processor to
the end of its handlers (blocking handlers; the chat's ordering lock wait included).
Every Bot API call is answered locally (tests/recording.py), without the rate limiter.
Both applications are warmed first with one message from every group (not timed).

    python bench/load.py [--updates 50000] [--groups 1000] [--rounds 3] [--pg-url URL|none]
    python bench/load.py --profile        # pyinstrument profile of one full SQLite run
    python bench/load.py --kinds checkin  # one kind of update only
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402
from telegram import ChatMember, Message, Update  # noqa: E402
from telegram.ext import ApplicationBuilder, TypeHandler  # noqa: E402

from bot.app import build_app, startup, stop  # noqa: E402
from bot.db import create_engine, make_sessionmaker, upgrade_database_async  # noqa: E402
from bot.lottery import Lottery  # noqa: E402
from bot.polls import Poll  # noqa: E402
from bot.schema import metadata  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests import factories as f  # noqa: E402
from tests.recording import RecordingRequest  # noqa: E402

TOKEN = "123456789:BENCHtokenAAAAAAAAAAAAAAAAAAAAAAAAAA"
ADMIN = f.user(1, "Admin", username="admin")
FIRST_GROUP = -1001000000000
TARGETS = {"ratio": 0.75, "p99_ms": 50.0}

# The mix, in shares of all updates (the rest is plain text).
MIX = {
    "edit": 0.02,
    "command": 0.03,
    "checkin": 0.04,
    "join_press": 0.03,
    "join": 0.015,
    "leave": 0.015,
    "poll_answer": 0.03,
}
TEXTS = [
    "hi",
    "good morning",
    "有人吗？",
    "check this out https://example.com",
    "👍",
    "ok",
    "今天天气不错",
    "what time is the meetup?",
    "哈哈哈",
    "thanks!",
]
COMMANDS = ["/stats", "/me", "/top", "/me"]


@dataclass
class Workload:
    """The timed updates: JSON bytes, the chat each belongs to (for sharding), its kind."""

    raw: list[bytes] = field(default_factory=list)
    chats: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, update: dict[str, Any], chat_id: int, kind: str) -> None:
        self.raw.append(json.dumps(update, ensure_ascii=False).encode())
        self.chats.append(chat_id)
        self.kinds.append(kind)

    def split(self, at: int) -> tuple[Workload, Workload]:
        return (
            Workload(self.raw[:at], self.chats[:at], self.kinds[:at]),
            Workload(self.raw[at:], self.chats[at:], self.kinds[at:]),
        )

    def only(self, kinds: set[str]) -> Workload:
        keep = [i for i, kind in enumerate(self.kinds) if kind in kinds]
        return Workload(
            [self.raw[i] for i in keep],
            [self.chats[i] for i in keep],
            [self.kinds[i] for i in keep],
        )

    def shard(self, index: int, shards: int) -> Workload:
        """The updates of every `shards`-th group (all of a chat's updates go to one shard)."""
        part = Workload()
        for raw, chat, kind in zip(self.raw, self.chats, self.kinds, strict=True):
            if (-chat) % shards == index:
                part.raw.append(raw)
                part.chats.append(chat)
                part.kinds.append(kind)
        return part


def group_ids(groups: int) -> list[int]:
    return [FIRST_GROUP - g for g in range(groups)]


def setup_updates(groups: int, featured: int, start: datetime) -> list[dict[str, Any]]:
    """The bot added as administrator everywhere; a lottery and a poll in the busiest groups."""
    chats = [f.group(chat_id, f"Group {g}") for g, chat_id in enumerate(group_ids(groups))]
    updates = [
        f.my_chat_member(chat, ADMIN, "left", "administrator", date=start) for chat in chats
    ]
    for chat in chats[:featured]:
        updates.append(
            f.message(chat, ADMIN, "/lottery Prize | winners 3 | draw in 6h", date=start)
        )
        updates.append(f.message(chat, ADMIN, "/poll Lunch? | Noodles | Rice | Salad", date=start))
    return updates


def warmup_workload(groups: int, members: int, start: datetime) -> Workload:
    """One plain text from every group, an hour before the timed updates (not timed).

    A running bot has seen its groups: their settings sit in its caches (60 s each). The
    bare Application gets a warm-up too, so both are measured warm.
    """
    work = Workload()
    moment = start - timedelta(hours=1)
    for g, chat_id in enumerate(group_ids(groups)):
        member = f.user(10_000 + (g * 7919) % members, "Member", username=None)
        work.add(
            f.message(f.group(chat_id, f"Group {g}"), member, "hi", date=moment), chat_id, "text"
        )
    return work


def make_workload(
    count: int,
    groups: int,
    members: int,
    lotteries: dict[int, int],
    polls: dict[int, tuple[str, int]],
    start: datetime,
    seed: int = 7,
) -> Workload:
    """`count` updates of the mix; dates spread over the `count / 50` seconds before `start`."""
    rng = random.Random(seed)
    ids = group_ids(groups)
    chats = {chat_id: f.group(chat_id, f"Group {g}") for g, chat_id in enumerate(ids)}
    weights = [1 / (rank + 1) for rank in range(groups)]  # Zipf-like: a few big groups
    users = [f.user(10_000 + u, f"Member {u}", username=f"member{u}") for u in range(members)]
    newcomers = iter(range(10_000_000, 20_000_000))
    joined: dict[int, list[dict[str, Any]]] = {}  # newcomers still in each group
    featured = [chat_id for chat_id in ids if chat_id in lotteries]
    kinds = list(MIX) + ["text"]
    shares = [*MIX.values(), 1 - sum(MIX.values())]
    work = Workload()
    origin = start - timedelta(seconds=count / 50)
    for i in range(count):
        moment = origin + timedelta(seconds=i / 50)
        kind = rng.choices(kinds, weights=shares)[0]
        if kind in ("join_press", "poll_answer"):
            chat_id = rng.choice(featured[: max(1, len(featured))]) if featured else ids[0]
        else:
            chat_id = rng.choices(ids, weights=weights)[0]
        chat = chats[chat_id]
        # Each group has its own active core: a per-group offset into the population.
        member = users[(int(rng.paretovariate(1.2) * 7) + (-chat_id) * 7919) % members]
        if kind == "text":
            update = f.message(chat, member, rng.choice(TEXTS), date=moment)
        elif kind == "edit":
            update = f.edited(chat, member, "edited: ok", date=moment, edit_date=moment)
        elif kind == "command":
            update = f.message(chat, member, rng.choice(COMMANDS), date=moment)
        elif kind == "checkin":
            update = f.message(chat, member, "签到", date=moment)
        elif kind == "join_press":
            if chat_id not in lotteries:
                continue
            update = f.callback(
                member, f"lottery:join:{lotteries[chat_id]}", chat=chat, date=moment
            )
        elif kind == "poll_answer":
            if chat_id not in polls:
                continue
            poll_id, options = polls[chat_id]
            update = f.poll_answer(poll_id, member, [rng.randrange(options)])
        elif kind == "join":
            person = f.user(next(newcomers), "Newcomer", language_code="zh")
            joined.setdefault(chat_id, []).append(person)
            update = f.chat_member(chat, person, person, "left", "member", date=moment)
        else:  # leave: a newcomer of this group if there is one, else a regular
            present = joined.get(chat_id)
            person = present.pop(rng.randrange(len(present))) if present else member
            update = f.chat_member(chat, person, person, "member", "left", date=moment)
        work.add(update, chat_id, kind)
    return work


# --- driving ------------------------------------------------------------------------------


@dataclass
class Run:
    """One run's figures."""

    updates: int
    seconds: float
    latencies: list[float]  # seconds, in completion order
    kinds: list[str]  # the kind of each latency
    began: float = 0.0  # wall clock (time.time) at the first update
    ended: float = 0.0
    cpu: float = 0.0  # process CPU seconds (all threads) from the first update to the end
    rows: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    # (SQLite runs) each update's Bot API calls, for the bare Application to make too
    replay: dict[int, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def cpu_per_update(self) -> float:
        return self.cpu / self.updates


async def drive(app: Any, work: Workload, window: int, rate: float | None = None) -> Run:
    """Parse and process every update as PTB's update fetcher does.

    Saturated (`rate` None): as fast as possible with `window` updates in flight; latency
    from entering the update processor. Paced: update i arrives at i / `rate` seconds, and
    its latency counts from that moment (so falling behind shows as latency).
    """
    bot = app.bot
    processor = app.update_processor
    loads, de_json, clock = json.loads, Update.de_json, time.perf_counter
    # long polling's inbox (bot.inbox), fed as InboxRequest feeds it: each getUpdates answer
    # of 100 updates is noted, and written before the next getUpdates confirms it
    services = app.bot_data.get("services")
    inbox = services.inbox if services is not None else None
    answers = {
        at: b'{"ok":true,"result":[' + b",".join(work.raw[at : at + 100]) + b"]}"
        for at in range(0, len(work.raw), 100)
    }
    slots = asyncio.Semaphore(window)
    latencies: list[float] = []
    kinds: list[str] = []
    errors: list[BaseException] = []

    async def one(update: Update, kind: str, entered: float) -> None:
        UPDATE_ID.set(update.update_id)  # Bot API calls made from here on are for it
        try:
            await processor.process_update(update, app.process_update(update))
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        finally:
            latencies.append(clock() - entered)
            kinds.append(kind)
            if rate is None:
                slots.release()

    tasks: set[asyncio.Task[None]] = set()
    wall = time.time()
    cpu = time.process_time()
    began = clock()
    for index, (raw, kind) in enumerate(zip(work.raw, work.kinds, strict=True)):
        if rate is None:
            await slots.acquire()
            arrival = clock()
        else:
            arrival = began + index / rate
            if arrival - clock() > 0.001:
                await asyncio.sleep(arrival - clock())
            arrival = min(arrival, clock())  # early by < 1 ms: count from now
        if inbox is not None and index % 100 == 0:
            await inbox.store()  # the next getUpdates
            inbox.fetched(answers[index])  # its answer
        update = de_json(loads(raw), bot)
        task = asyncio.create_task(one(update, kind, arrival))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    if inbox is not None:
        await inbox.store()  # the getUpdates after the last batch
    seconds = clock() - began
    if errors:
        raise RuntimeError(f"{len(errors)} updates failed, first: {errors[0]!r}")
    run = Run(len(work.raw), seconds, latencies, kinds, began=wall, ended=wall + seconds)
    run.cpu = time.process_time() - cpu
    return run


UPDATE_ID: contextvars.ContextVar[int] = contextvars.ContextVar("update_id", default=0)


class AttributingRequest(RecordingRequest):
    """RecordingRequest that also notes which update each call was made for (0: none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.made_for: list[int] = []

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        before = len(self.calls)
        answer = await super().do_request(*args, **kwargs)
        if len(self.calls) > before:
            self.made_for.append(UPDATE_ID.get())
        return answer

    def by_update(
        self, first: int, end: int, last_update_id: int
    ) -> dict[int, list[tuple[str, dict[str, Any]]]]:
        """Each update's calls among calls[first:end]; those of no update (jobs) go with the
        last one."""
        calls: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for update_id, call in zip(self.made_for[first:end], self.calls[first:end], strict=True):
            calls.setdefault(update_id or last_update_id, []).append((call.method, call.params))
        return calls


RETURNS: dict[str, Any] = {"getChatMember": ChatMember}  # else Message for send*/edit*


async def run_bare(
    work: Workload,
    window: int,
    rate: float | None = None,
    calls: dict[int, list[tuple[str, dict[str, Any]]]] | None = None,
) -> Run:
    """The bare Application; with `calls`, its handler makes, for each update, the Bot API
    calls the full bot made for it (the framework's share of the bot's work)."""

    async def trivial(update: Update, context: Any) -> None:
        if calls is None:
            return
        bot = context.bot
        for method, params in calls.get(update.update_id, ()):
            # Bot._post is what send_message & co. end in (do_api_request warns for them)
            result = await bot._post(method, api_kwargs=dict(params))
            returns = RETURNS.get(method, Message if method[:4] in ("send", "edit") else None)
            if returns is not None and not isinstance(result, bool):
                returns.de_json(result, bot)

    app = (
        ApplicationBuilder()
        .token(TOKEN)
        .request(RecordingRequest())
        .concurrent_updates(256)
        .build()
    )
    app.add_handler(TypeHandler(Update, trivial))
    async with app:
        return await drive(app, work, window, rate)


def bench_settings(url: str, content_dir: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        bot_token=TOKEN,
        database_url=url,
        bot_owners=frozenset({ADMIN["id"]}),
        content_dir=content_dir,
    )


async def count_rows(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return {
                table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
                for table in metadata.sorted_tables
            }
    finally:
        await engine.dispose()


async def prepare(url: str, groups: int, featured: int, start: datetime, content: str) -> tuple:
    """Migrate, add the bot to every group, open lotteries and polls; returns their ids."""
    await upgrade_database_async(url)
    engine = create_engine(url)
    app = build_app(
        bench_settings(url, content),
        engine=engine,
        request=RecordingRequest(),
        rate_limiter=False,
        concurrent=False,
    )
    async with app:
        for update in setup_updates(groups, featured, start):
            await app.process_update(Update.de_json(update, app.bot))
        async with make_sessionmaker(engine)() as session:
            lotteries = {
                chat: lottery
                for chat, lottery in (
                    await session.execute(select(Lottery.chat_id, Lottery.id))
                ).all()
            }
            polls = {
                chat: (poll_id, 3)
                for chat, poll_id in (
                    await session.execute(select(Poll.chat_id, Poll.telegram_poll_id))
                ).all()
            }
    await engine.dispose()
    if len(lotteries) != featured or len(polls) != featured:
        raise SystemExit(f"set-up failed: {len(lotteries)} lotteries, {len(polls)} polls")
    return lotteries, polls


async def serve(
    url: str,
    work: Workload,
    paced: Workload,
    window: int,
    content: str,
    load_share: float,
    ready: Callable[[], Any] | None = None,
    warmup: Workload | None = None,
    inbox: bool = True,
) -> tuple[Run, Run]:
    """The whole bot as `community-bot run` builds it (minus the network and rate limiter).

    First `work` saturated (throughput), then `paced` at `load_share` of the throughput just
    measured (latency under a load the process can sustain).
    """
    engine = create_engine(url)
    request = AttributingRequest()
    app = build_app(
        bench_settings(url, content),
        engine=engine,
        request=request,
        rate_limiter=False,
        inbox=inbox,  # long polling's (bot.inbox); webhook processes have none
    )
    async with app:
        await startup(app)  # what post_init does: caches, the activity flusher, jobs
        await app.start()  # the job queue runs, as in production
        gc.freeze()  # as `community-bot run` does after start-up (bot/cli.py)
        if warmup is not None:
            await drive(app, warmup, window)
            await app.bot_data["services"].activity.flush()
        if ready is not None:
            await ready()
        activity = app.bot_data["services"].activity
        first_call = len(request.calls)
        began, cpu = time.perf_counter(), time.process_time()
        run = await drive(app, work, window)
        await activity.flush()  # the buffered activity's write is part of the cost
        if app.bot_data["services"].inbox is not None:
            await app.bot_data["services"].inbox.forget_handled()  # and the inbox's
        run.seconds = time.perf_counter() - began
        run.cpu = time.process_time() - cpu
        run.ended = run.began + run.seconds
        run.calls = len(request.calls) - first_call
        if work.raw:
            last_id = json.loads(work.raw[-1])["update_id"]
            run.replay = request.by_update(first_call, len(request.calls), last_id)
        paced_run = await drive(app, paced, window, rate=run.rate * load_share)
        await stop(app)
        await app.stop()
    await engine.dispose()
    if request.violations:
        raise SystemExit(f"Bot API contract violations: {request.violations[:3]}")
    return run, paced_run


# --- PostgreSQL: two processes -------------------------------------------------------------


async def _on_server(base_url: str, sql: str) -> None:
    """Run one statement on the `postgres` database of `base_url`'s server."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    connection = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database="postgres",
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def pg_database(base_url: str) -> tuple[str, str]:
    """A fresh database on the server of `base_url`; returns (url, name)."""
    from sqlalchemy.engine import make_url

    name = f"load_{uuid.uuid4().hex[:10]}"
    await _on_server(base_url, f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


async def drop_pg_database(base_url: str, name: str) -> None:
    await _on_server(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def worker(shard_file: str, url: str, window: int, content: str, share: float) -> None:
    """One of the PostgreSQL processes: set up, say ready, wait for "go", run, report."""
    work, paced, warmup = pickle.loads(await asyncio.to_thread(Path(shard_file).read_bytes))

    async def ready() -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    # without the inbox: a webhook process keeps updates in the queue's put (not driven here)
    run, paced_run = await serve(
        url, work, paced, window, content, share, ready, warmup, inbox=False
    )
    run.replay = {}  # only the SQLite run's calls are replayed
    print(json.dumps([run.__dict__, paced_run.__dict__]), flush=True)


def write_shards(
    directory: str, work: Workload, paced: Workload, warmup: Workload, processes: int
) -> list[str]:
    paths = []
    for index in range(processes):
        path = Path(directory) / f"shard{index}.pickle"
        shards = tuple(part.shard(index, processes) for part in (work, paced, warmup))
        path.write_bytes(pickle.dumps(shards))
        paths.append(str(path))
    return paths


def union(runs: list[Run]) -> Run:
    began, ended = min(r.began for r in runs), max(r.ended for r in runs)
    return Run(
        sum(r.updates for r in runs),
        ended - began,
        [x for r in runs for x in r.latencies],
        [k for r in runs for k in r.kinds],
        began=began,
        ended=ended,
        cpu=sum(r.cpu for r in runs),
        calls=sum(r.calls for r in runs),
    )


async def run_pg(
    url: str,
    work: Workload,
    paced: Workload,
    window: int,
    content: str,
    share: float,
    processes: int,
    warmup: Workload,
) -> tuple[Run, Run]:
    """`processes` workers on one database, released together; their union is the run."""
    with tempfile.TemporaryDirectory() as directory:
        children = []
        for path in write_shards(directory, work, paced, warmup, processes):
            command = ["--worker", path, "--db-url", url, "--window", str(window)]
            command += ["--load-share", str(share)]
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    *command,
                    "--content",
                    content,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for child in children:
            line = (await child.stdout.readline()).decode().strip()  # type: ignore[union-attr]
            if line != "ready":
                raise SystemExit(f"a PostgreSQL worker failed to start: {line!r}")
        for child in children:
            child.stdin.write(b"go\n")  # type: ignore[union-attr]
            await child.stdin.drain()  # type: ignore[union-attr]
        runs, paced_runs = [], []
        for child in children:
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"a PostgreSQL worker failed (exit {child.returncode})")
            run, paced_run = json.loads(out.decode().strip().splitlines()[-1])
            runs.append(Run(**run))
            paced_runs.append(Run(**paced_run))
    return union(runs), union(paced_runs)


# --- reporting ------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def describe(label: str, runs: list[Run]) -> str:
    rates = [r.rate for r in runs]
    p50 = [percentile(r.latencies, 0.50) * 1000 for r in runs]
    p99 = [percentile(r.latencies, 0.99) * 1000 for r in runs]
    cpu = [r.cpu_per_update * 1e6 for r in runs]
    return (
        f"{label:<36} {statistics.median(rates):>6,.0f} updates/s "
        f"(runs: {', '.join(f'{x:,.0f}' for x in rates)})  "
        f"p50 {statistics.median(p50):6.2f} ms  p99 {statistics.median(p99):6.2f} ms  "
        f"CPU {statistics.median(cpu):,.0f} µs/update"
    )


def per_kind(run: Run) -> str:
    by_kind: dict[str, list[float]] = {}
    for kind, latency in zip(run.kinds, run.latencies, strict=True):
        by_kind.setdefault(kind, []).append(latency)
    return "  ".join(
        f"{kind} {len(v):,}: {percentile(v, 0.5) * 1000:.1f}/{percentile(v, 0.99) * 1000:.1f}"
        for kind, v in sorted(by_kind.items())
    )


def written(before: dict[str, int], after: dict[str, int]) -> tuple[int, str]:
    delta = {name: after[name] - before.get(name, 0) for name in after}
    changed = {name: n for name, n in delta.items() if n}
    top = ", ".join(f"{name} +{n:,}" for name, n in sorted(changed.items(), key=lambda x: -x[1]))
    return sum(delta.values()), top


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=50_000, help="saturated phase")
    parser.add_argument(
        "--latency-updates", type=int, default=10_000, help="paced phase (latency)"
    )
    parser.add_argument(
        "--load-share",
        type=float,
        default=0.5,
        help="paced phase rate, as a share of the throughput just measured",
    )
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument(
        "--featured", type=int, default=100, help="groups with a lottery and a poll"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=100, help="updates in flight")
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="server for the PostgreSQL runs (a fresh database is made); 'none' skips them",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--only", choices=["bare", "sqlite", "pg"], action="append")
    parser.add_argument("--kinds", help="keep only these kinds, e.g. text or checkin,join")
    parser.add_argument("--profile", action="store_true", help="pyinstrument, one SQLite run")
    parser.add_argument(
        "--without-inbox", action="store_true", help="SQLite run without long polling's inbox"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--content", help=argparse.SUPPRESS)
    return parser.parse_args()


def paced_line(label: str, runs: list[Run]) -> str:
    rates = [r.updates / r.seconds for r in runs]
    p50 = [percentile(r.latencies, 0.50) * 1000 for r in runs]
    p99 = [percentile(r.latencies, 0.99) * 1000 for r in runs]
    return (
        f"{label:<36} paced at {statistics.median(rates):>6,.0f} updates/s: "
        f"p50 {statistics.median(p50):6.2f} ms  p99 {statistics.median(p99):6.2f} ms "
        f"(runs: {', '.join(f'{x:.1f}' for x in p99)}; target < {TARGETS['p99_ms']:.0f})"
    )


async def main(args: argparse.Namespace, scratch: str) -> None:
    if args.worker:
        await worker(args.worker, args.db_url, args.window, args.content, args.load_share)
        return

    only = set(args.only or ["bare", "sqlite", "pg"])
    if args.pg_url == "none":
        only.discard("pg")
    start = datetime.now(UTC).replace(microsecond=0)
    featured = min(args.featured, args.groups)
    content = str(Path(scratch) / "content")  # an empty calendar (made by __main__)
    print(load_average())

    def sqlite_url(round_: int) -> str:
        return f"sqlite+aiosqlite:///{Path(scratch) / f'load{round_}.db'}"

    async def prepared(url: str) -> None:
        if await prepare(url, args.groups, featured, start, content) != (lotteries, polls):
            raise SystemExit("set-up differs between databases")

    lotteries, polls = await prepare(sqlite_url(-1), args.groups, featured, start, content)
    both = make_workload(
        args.updates + args.latency_updates, args.groups, args.members, lotteries, polls, start
    )
    work, paced = both.split(args.updates)
    warmup = warmup_workload(args.groups, args.members, start)
    if args.kinds:  # each phase keeps its own updates of those kinds
        work, paced = (part.only(set(args.kinds.split(","))) for part in (work, paced))
    mix = Counter(work.kinds)
    print(
        f"{len(work.raw):,} updates (then {len(paced.raw):,} paced at {args.load_share:.0%} "
        f"of the throughput) from {args.groups:,} groups ({featured} with a lottery and a "
        f"poll), {args.members:,} members, window {args.window}: "
        + ", ".join(f"{k} {v:,}" for k, v in mix.most_common())
    )

    if args.profile:
        from pyinstrument import Profiler

        url = sqlite_url(0)
        await prepared(url)
        profiler = Profiler(async_mode="disabled")

        async def start_profiling() -> None:  # after start-up and the warm-up
            profiler.start()

        run, _ = await serve(
            url, work, Workload(), args.window, content, args.load_share, start_profiling, warmup
        )
        profiler.stop()
        print(f"full bot: {run.rate:,.0f} updates/s, {run.cpu_per_update * 1e6:,.0f} µs CPU each")
        print(profiler.output_text(unicode=True, show_all=False))
        return

    results: dict[str, list[Run]] = {"bare": [], "calls": [], "sqlite": [], "pg": []}
    paced_results: dict[str, list[Run]] = {"bare": [], "sqlite": [], "pg": []}
    notes: dict[str, str] = {}
    await run_bare(work.split(3000)[0], args.window)  # warm-up
    for round_ in range(args.rounds):
        if "bare" in only:
            results["bare"].append(await run_bare(work, args.window))
        if "sqlite" in only:
            url = sqlite_url(round_)
            await prepared(url)
            before = await count_rows(url)
            run, paced_run = await serve(
                url,
                work,
                paced,
                args.window,
                content,
                args.load_share,
                warmup=warmup,
                inbox=not args.without_inbox,
            )
            total, top = written(before, await count_rows(url))
            notes["sqlite"] = (
                f"rows written {total:,} (the warm-up's included: {top}); "
                f"Bot API calls {run.calls:,}"
            )
            results["sqlite"].append(run)
            paced_results["sqlite"].append(paced_run)
            if "bare" in only:
                # the framework's share: the same updates and the same calls
                results["calls"].append(await run_bare(work, args.window, calls=run.replay))
                # the machine's floor at the same rate
                rate = paced_run.updates / paced_run.seconds
                paced_results["bare"].append(await run_bare(paced, args.window, rate))
        if "pg" in only:
            url, name = await pg_database(args.pg_url)
            try:
                await prepared(url)
                before = await count_rows(url)
                run, paced_run = await run_pg(
                    url,
                    work,
                    paced,
                    args.window,
                    content,
                    args.load_share,
                    args.processes,
                    warmup,
                )
                total, top = written(before, await count_rows(url))
                notes["pg"] = (
                    f"rows written {total:,} (the warm-up's included: {top}); "
                    f"Bot API calls {run.calls:,}"
                )
                results["pg"].append(run)
                paced_results["pg"].append(paced_run)
            finally:
                await drop_pg_database(args.pg_url, name)
        print(f"round {round_ + 1} done; {load_average()}", flush=True)

    labels = {
        "bare": "(a) bare PTB, trivial handler",
        "calls": "(a') bare PTB + the bot's API calls",
        "sqlite": "(b) full bot, 1 process, SQLite",
        "pg": f"(c) full bot, {args.processes} processes, PostgreSQL",
    }
    print(f"\nmedians of {args.rounds} rounds; {load_average()}")
    print("saturated (latency here is mostly queueing in the window):")
    for key, label in labels.items():
        if results[key]:
            print(describe(label, results[key]))
            if key in notes:
                print(f"    {notes[key]}")
    print(
        f"paced at {args.load_share:.0%} of each one's throughput (latency; bare at the "
        "SQLite bot's rate):"
    )
    for key, label in labels.items():
        if paced_results.get(key):
            print(paced_line(label, paced_results[key]))
            print(f"    p50/p99 ms by kind (last round): {per_kind(paced_results[key][-1])}")
    if results["bare"] and results["sqlite"]:
        pairs = list(zip(results["sqlite"], results["bare"], strict=True))
        ratios = [full.rate / bare.rate for full, bare in pairs]
        by_cpu = [bare.cpu_per_update / full.cpu_per_update for full, bare in pairs]
        print(
            f"full (SQLite) / bare throughput: median {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target ≥ {TARGETS['ratio']}); "
            f"by CPU time per update: {statistics.median(by_cpu):.2f}"
        )
    if results["calls"] and results["sqlite"]:
        pairs = list(zip(results["sqlite"], results["calls"], results["bare"], strict=True))
        ceilings = [calls.rate / bare.rate for _, calls, bare in pairs]
        ratios = [full.rate / calls.rate for full, calls, _ in pairs]
        print(
            "bare + the bot's API calls / bare (the most a bot making these calls can reach): "
            f"median {statistics.median(ceilings):.2f}; full (SQLite) / (bare + its calls): "
            f"median {statistics.median(ratios):.2f}"
        )
    if results["bare"] and results["pg"]:
        ratios = [
            pg.rate / bare.rate for pg, bare in zip(results["pg"], results["bare"], strict=True)
        ]
        print(
            f"{args.processes} × PostgreSQL / bare (1 process) throughput: median "
            f"{statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch_directory:
        (Path(scratch_directory) / "content").mkdir()
        asyncio.run(main(arguments(), scratch_directory))
