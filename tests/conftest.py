"""Fixtures shared by every test: a database, the recording Bot API, and the real Application.

`tg` is the harness most tests use:

    async def test_x(tg):
        await tg.feed(factories.message(GROUP, ALICE, "/checkin", date=tg.now()))
        assert tg.api.sent_texts(GROUP_ID)

Every handler exception fails the test (PTB would only log it); so does any Bot API call
that Telegram would refuse (unknown method/parameter, missing required one, bad HTML).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram import Update

from bot.app import build_app
from bot.db import create_engine
from bot.schema import metadata
from bot.services import Services, services_of
from bot.settings import Settings
from tests.recording import RecordingRequest

TEST_TOKEN = "123456789:TESTtokenAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class FakeClock:
    """The time the bot believes it is; tests move it explicitly."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current

    def set(self, moment: datetime) -> datetime:
        self.current = moment
        return moment


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- databases ------------------------------------------------------------------------------

PG_URL = os.environ.get("TEST_DATABASE_URL")


async def _fresh_postgres_database() -> tuple[str, str]:
    """Create an empty database on the test server; returns (url, name)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return base.set(database=name).render_as_string(hide_password=False), name


async def _drop_postgres_database(name: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    connection = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """An empty database. Parametrize with ["sqlite", "postgres"] via `both_databases`."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
        return
    if not PG_URL:
        pytest.skip(
            "PostgreSQL tests need TEST_DATABASE_URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)"
        )
    url, name = await _fresh_postgres_database()
    try:
        yield url
    finally:
        await _drop_postgres_database(name)


both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


# --- the application ------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        bot_token=TEST_TOKEN,
        bot_timezone="UTC",
        bot_language=None,
        bot_owners=frozenset({424242}),
        database_url="sqlite+aiosqlite:///unused.db",
    )


@pytest.fixture
def api(clock: FakeClock) -> RecordingRequest:
    return RecordingRequest(now=lambda: clock().timestamp())


class Harness:
    """The real Application on the recording Bot API, with helpers to drive it."""

    def __init__(self, app: Any, api: RecordingRequest, clock: FakeClock) -> None:
        self.app = app
        self.api = api
        self.clock = clock
        self.errors: list[BaseException] = []

    @property
    def services(self) -> Services:
        return services_of(self.app)

    def now(self) -> datetime:
        return self.clock()

    async def feed(self, *updates: dict[str, Any]) -> None:
        """Process updates one after another, as the real bot receives them."""
        for data in updates:
            await self.app.process_update(Update.de_json(data, self.app.bot))

    async def feed_concurrently(self, *updates: dict[str, Any]) -> None:
        await asyncio.gather(
            *(self.app.process_update(Update.de_json(data, self.app.bot)) for data in updates)
        )

    async def flush(self) -> None:
        await self.services.activity.flush()

    def db(self) -> Any:
        return self.services.db()


@pytest.fixture
async def tg(
    settings: Settings, engine: AsyncEngine, api: RecordingRequest, clock: FakeClock
) -> AsyncIterator[Harness]:
    app = build_app(
        settings, engine=engine, request=api, clock=clock, rate_limiter=False, concurrent=False
    )
    harness = Harness(app, api, clock)

    async def collect(update: object, context: Any) -> None:
        harness.errors.append(context.error)

    app.add_error_handler(collect)
    async with app:
        yield harness
        await harness.services.activity.stop()
    if harness.errors:
        raise AssertionError(f"handler raised: {harness.errors!r}") from harness.errors[0]
    assert not api.violations, f"Telegram would refuse: {api.violations}"
