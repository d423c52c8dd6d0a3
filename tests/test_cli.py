"""The command line: no token, migrations, and the bot running as a real process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests import factories as f
from tests.conftest import TEST_TOKEN
from tests.standin import BotApiStandIn

ROOT = Path(__file__).resolve().parent.parent


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"BOT_TOKEN", "DATABASE_URL", "TELEGRAM_API_BASE_URL", "WEBHOOK_URL", "BOT_OWNERS"}
    }
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_run_without_token_explains_in_one_line(tmp_path):
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BOT_TOKEN" in lines[0] and "@BotFather" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "community.db").exists()


def test_invalid_configuration_is_one_line_too(tmp_path):
    result = cli("run", cwd=tmp_path, env={"BOT_TOKEN": TEST_TOKEN, "BOT_TIMEZONE": "Mars/Base"})
    assert (
        result.returncode != 0
        and "BOT_TIMEZONE" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_db_upgrade_creates_the_default_sqlite_database(tmp_path):
    result = cli("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "community.db") as connection:
        tables = {
            row[0]
            for row in connection.execute("select name from sqlite_master where type='table'")
        }
    assert {
        "chat",
        "member",
        "daily_activity",
        "chat_admin",
        "user_profile",
        "alembic_version",
    } <= tables


def test_env_file_in_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite+aiosqlite:///from-env-file.db\n")
    assert cli("db", "upgrade", cwd=tmp_path).returncode == 0
    assert (tmp_path / "from-env-file.db").exists()


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_bot_process_polls_records_and_flushes_on_sigterm_without_logging_the_token(tmp_path):
    """`community-bot run` against a Bot API stand-in: migrations, polling with every update
    type, activity recorded, SIGTERM flushes the buffer, and DEBUG logs never show the token."""
    group = f.group(-1001234, "Process Group")
    admin = f.user(10, "Ada")
    now = datetime.now(UTC).replace(microsecond=0)
    with BotApiStandIn(TEST_TOKEN) as api:
        api.updates.append(f.my_chat_member(group, admin, "left", "member", date=now))
        api.updates.extend(
            f.message(
                group,
                f.user(100 + i % 7, f"M{i % 7}"),
                f"message {i}",
                date=now + timedelta(seconds=i),
            )
            for i in range(40)
        )
        last_id = api.updates[-1]["update_id"]
        env = {
            "BOT_TOKEN": TEST_TOKEN,
            "TELEGRAM_API_BASE_URL": api.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        }
        clean = {k: v for k, v in os.environ.items() if k not in {"WEBHOOK_URL", "BOT_OWNERS"}}
        log_path = tmp_path / "bot.log"
        with log_path.open("w") as log_file:  # a file, not a pipe: DEBUG output must not block
            process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run", "--log-level", "DEBUG"],
                cwd=tmp_path,
                env={**clean, **env, "PYTHONPATH": str(ROOT)},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait(lambda: api.acknowledged >= last_id or process.poll() is not None)
                assert process.poll() is None, log_path.read_text()
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
        output = log_path.read_text()
        assert process.returncode == 0, output
        assert TEST_TOKEN not in output and TEST_TOKEN.split(":")[1] not in output
        assert "getUpdates" in output  # DEBUG logging was really on
        get_updates = [params for method, params in api.calls if method == "getUpdates"]
        assert set(get_updates[0]["allowed_updates"]) >= {
            "message",
            "edited_message",
            "callback_query",
            "chat_member",
            "my_chat_member",
            "poll",
            "poll_answer",
            "chat_join_request",
        }
        assert "setMyCommands" in api.methods() and "sendMessage" in api.methods()
        assert not api.violations
    with sqlite3.connect(tmp_path / "bot.db") as connection:
        total = connection.execute("select sum(messages) from daily_activity").fetchone()[0]
        members = connection.execute("select count(*) from member").fetchone()[0]
        active = connection.execute(
            "select active from chat where id = ?", (group["id"],)
        ).fetchone()[0]
    assert (total, members, active) == (40, 7, 1)


def test_network_failure_at_start_is_logged_without_the_token(tmp_path):
    env = {
        "BOT_TOKEN": TEST_TOKEN,
        "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9/bot",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
    }
    result = cli("run", "--log-level", "DEBUG", cwd=tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "the bot stopped" in output
    assert TEST_TOKEN not in output and TEST_TOKEN.split(":")[1] not in output


def test_run_keeps_start_up_objects_out_of_the_collector(tmp_path, monkeypatch):
    """Full collections over the start-up objects stalled the event loop (docs/load.md)."""
    import argparse
    import gc
    from types import SimpleNamespace

    from bot import app as app_module
    from bot import cli as cli_module
    from bot import db, logs
    from bot.services import SERVICES_KEY

    frozen: list[int] = []

    class Started:
        bot_data = {SERVICES_KEY: SimpleNamespace(extras={})}

        def run_polling(self, **_: object) -> None:
            frozen.append(gc.get_freeze_count())

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_TOKEN", TEST_TOKEN)
    monkeypatch.setattr(db, "upgrade_database", lambda url: None)
    monkeypatch.setattr(app_module, "build_app", lambda settings: Started())
    monkeypatch.setattr(logs, "setup_logging", lambda *args: None)
    monkeypatch.setattr(cli_module, "_webhook_in_use", lambda settings: "")  # (offline)
    gc.unfreeze()
    try:
        assert cli_module.cmd_run(argparse.Namespace(log_level="INFO")) == 0
    finally:
        gc.unfreeze()
    assert frozen and frozen[0] > 0
