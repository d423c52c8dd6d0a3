"""The token never reaches the logs, whoever logs it, at any level."""

from __future__ import annotations

import io
import logging

import pytest

from bot.logs import install_redaction, setup_logging
from tests.conftest import TEST_TOKEN


@pytest.fixture
def log_output():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("DEBUG", TEST_TOKEN)
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    install_redaction(TEST_TOKEN)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


async def test_token_is_redacted_from_messages_arguments_and_tracebacks(tg, log_output):
    url = f"https://api.telegram.org/bot{TEST_TOKEN}/getMe"
    logging.getLogger("httpx").warning("HTTP Request: POST %s", url)
    logging.getLogger("telegram.ext").debug("calling %s", url)
    try:
        raise RuntimeError(f"failed at {url}")
    except RuntimeError:
        logging.getLogger("bot").exception("boom")
    # and the real application logging at DEBUG while it works
    await tg.app.bot.get_me()
    await tg.app.bot.send_message(-100, "x")
    text = log_output.getvalue()
    assert "boom" in text and "failed at" in text and "<token>" in text
    assert TEST_TOKEN not in text and TEST_TOKEN.split(":")[1] not in text


def test_httpx_request_lines_are_not_logged_at_info(log_output):
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
