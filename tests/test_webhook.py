"""Webhook mode: setWebhook with the secret and every update type; requests without the
right X-Telegram-Bot-Api-Secret-Token header are rejected."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx

from bot.app import ALLOWED_UPDATES, webhook_options
from bot.settings import Settings
from tests import factories as f


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_webhook_rejects_wrong_secret_and_accepts_the_right_one(tg, settings):
    port = free_port()
    settings = Settings(
        _env_file=None,
        bot_token=settings.bot_token,
        port=port,
        webhook_url="https://bot.example.com/telegram/hook",
        webhook_secret="s3cret-Value_1",
    )
    options = webhook_options(settings)
    assert options["url_path"] == "telegram/hook" and options["port"] == port
    options["listen"] = "127.0.0.1"
    await tg.app.updater.start_webhook(**options, allowed_updates=ALLOWED_UPDATES)
    try:
        call = tg.api.of("setWebhook")[0].params
        assert call["url"] == "https://bot.example.com/telegram/hook"
        assert call["secret_token"] == "s3cret-Value_1"
        assert set(call["allowed_updates"]) == set(ALLOWED_UPDATES)
        body = json.dumps(f.message(f.group(), f.user(1), "hi", date=tg.now()))
        url = f"http://127.0.0.1:{port}/telegram/hook"
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient() as client:
            missing = await client.post(url, content=body, headers=headers)
            wrong = await client.post(
                url, content=body, headers={**headers, "X-Telegram-Bot-Api-Secret-Token": "guess"}
            )
            assert (missing.status_code, wrong.status_code) == (403, 403)
            assert tg.app.update_queue.empty()
            right = await client.post(
                url,
                content=body,
                headers={**headers, "X-Telegram-Bot-Api-Secret-Token": "s3cret-Value_1"},
            )
            assert right.status_code == 200
        update = await asyncio.wait_for(tg.app.update_queue.get(), 5)
        assert update.message.text == "hi"
    finally:
        await tg.app.updater.stop()
