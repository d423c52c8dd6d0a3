"""The services a callback or job reaches through `context.services` (typed, no globals)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from telegram.ext import Application, CallbackContext, ExtBot

from bot.activity import ActivityRecorder
from bot.chats import ChatDirectory
from bot.driver_session import DriverSession, driver_session
from bot.inbox import UpdateInbox
from bot.operators import OperatorCheck
from bot.opt_outs import OptOuts
from bot.settings import Settings


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything domain code needs, built once by `bot.app.build_app`."""

    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    chats: ChatDirectory
    activity: ActivityRecorder
    operators: OperatorCheck
    opt_outs: OptOuts  # people whose activity is not recorded (bot.privacy)
    clock: Callable[[], datetime] = system_clock
    bot_sees_all_messages: bool = False  # privacy mode off (from getMe at start-up)
    extras: dict[str, Any] = field(default_factory=dict)  # feature services by name
    inbox: UpdateInbox | None = None  # long polling: fetched updates kept until handled
    # This process's name in claims and heartbeats (bot.cluster): unique per run.
    process_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def hot(self, *, write: bool = True) -> AbstractAsyncContextManager[DriverSession]:
        """A transaction for the hot paths (check-ins, entries, votes, joins, /me …): Core
        statements on the driver connection, without the ORM session's overhead
        (bot/driver_session.py). `write=False` for reads."""
        return driver_session(self.engine, write=write)


SERVICES_KEY = "services"


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """CallbackContext with typed access to the services."""

    @property
    def services(self) -> Services:
        return self.application.bot_data[SERVICES_KEY]


def services_of(app: Application[Any, Any, Any, Any, Any, Any]) -> Services:
    return app.bot_data[SERVICES_KEY]
