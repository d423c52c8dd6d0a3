"""Serve the dashboard from the bot process, on its event loop (uvicorn), when configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from telegram.ext import Application

from bot.services import services_of
from bot.web.app import create_app

log = logging.getLogger(__name__)
SERVER_KEY = "dashboard_server"


class Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the bot's runner owns the signals and
    stops the server through `stop`."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def start(app: Application[Any, Any, Any, Any, Any, Any]) -> Server | None:
    """Start listening on DASHBOARD_PORT (if set); returns the running server."""
    services = services_of(app)
    settings = services.settings
    if settings.dashboard_port is None:
        return None
    config = uvicorn.Config(
        create_app(services, app.bot),
        host=settings.dashboard_listen,
        port=settings.dashboard_port,
        lifespan="off",
        log_level="warning",
        access_log=False,  # request lines would carry sign-in tokens
        proxy_headers=True,
    )
    server = Server(config)
    try:  # bind here: uvicorn would sys.exit() on a busy port, taking the bot down with it
        sock = bind(settings.dashboard_listen, settings.dashboard_port)
    except OSError as exc:
        log.error("dashboard could not listen on port %s: %s", settings.dashboard_port, exc)
        return None
    task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard-server")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        log.error("dashboard stopped at start-up: %r", task.exception())
        return None
    app.bot_data[SERVER_KEY] = (server, task)
    log.info("dashboard listening on %s:%s", settings.dashboard_listen, settings.dashboard_port)
    return server


async def stop(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    running = app.bot_data.pop(SERVER_KEY, None)
    if running is None:
        return
    server, task = running
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task
