"""The `community-bot` command line. The only place that reads the environment."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from bot.settings import Settings

NO_TOKEN = (
    "community-bot: BOT_TOKEN is not set. Create a bot with @BotFather in Telegram "
    "(send /newbot), then run: BOT_TOKEN=123456:ABC... community-bot run"
)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SystemExit(f"community-bot: invalid configuration: {problems}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Start the bot: migrate the database, then long polling (or the webhook)."""
    settings = load_settings()
    if not settings.token:
        print(NO_TOKEN, file=sys.stderr)
        return 2
    from bot.app import ALLOWED_UPDATES, build_app, webhook_options
    from bot.db import upgrade_database
    from bot.logs import setup_logging

    setup_logging(args.log_level, settings.token)
    log = logging.getLogger("community-bot")
    try:
        upgrade_database(settings.database_url)
        app = build_app(settings)
        if settings.webhook_url:
            log.info("starting in webhook mode on port %s", settings.port)
            app.run_webhook(**webhook_options(settings), allowed_updates=ALLOWED_UPDATES)
        else:
            log.info("starting with long polling")
            app.run_polling(allowed_updates=ALLOWED_UPDATES)
    except Exception as exc:  # logged through the redacting handlers, never printed raw
        log.critical("the bot stopped: %s", exc, exc_info=True)
        return 1
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    from bot.db import upgrade_database

    settings = load_settings()
    logging.basicConfig(level=logging.INFO)
    upgrade_database(settings.database_url)
    print("database is up to date")
    return 0


def cmd_kpi(args: argparse.Namespace) -> int:
    """Print a chat's daily KPIs (DESIGN.md §4) as a table, CSV or JSON."""
    import asyncio

    from bot.kpi_export import export

    settings = load_settings()
    try:
        output = asyncio.run(
            export(
                settings.database_url, args.chat_id, days=args.days, end=args.end, fmt=args.format
            )
        )
    except LookupError as exc:
        print(f"community-bot: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="community-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the bot (applies migrations first)")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=cmd_run)

    kpi = commands.add_parser("kpi", help="a group's daily KPIs from the database")
    kpi.add_argument("chat_id", type=int, metavar="CHAT_ID")
    kpi.add_argument("--days", type=_positive, default=30, help="how many days (default 30)")
    kpi.add_argument(
        "--end", type=_day, default=None, help="last day, YYYY-MM-DD (default: today, chat-local)"
    )
    kpi.add_argument("--format", choices=("table", "csv", "json"), default="table")
    kpi.set_defaults(func=cmd_kpi)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 3660:
        raise argparse.ArgumentTypeError("must be between 1 and 3660")
    return value


def _day(text: str) -> object:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use YYYY-MM-DD") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
