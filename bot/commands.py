"""The command catalogue: who may use which command, /help text, and setMyCommands scopes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeDefault,
)

from bot.i18n import t
from bot.settings import LANGUAGES


class Audience(StrEnum):
    MEMBER = "member"  # anyone, in groups (and privately where it makes sense)
    OPERATOR = "operator"  # group operators; also from a private chat via /groups
    PRIVATE = "private"  # private chat with the bot only


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command; its description is the translation key `<feature>.cmd.<name>`."""

    name: str
    audience: Audience
    feature: str

    def description(self, lang: str) -> str:
        return t(lang, f"{self.feature}.cmd.{self.name}")


def help_text(lang: str, specs: Sequence[CommandSpec], *, operator: bool, private: bool) -> str:
    """/help: the commands the caller may use, grouped by audience (HTML)."""
    sections: list[tuple[str, list[CommandSpec]]] = []
    members = [s for s in specs if s.audience is Audience.MEMBER]
    sections.append((t(lang, "core.help_members"), members))
    if private:
        sections.append(
            (t(lang, "core.help_private"), [s for s in specs if s.audience is Audience.PRIVATE])
        )
    if operator or private:
        title = t(lang, "core.help_operators" if operator else "core.help_operators_private")
        sections.append((title, [s for s in specs if s.audience is Audience.OPERATOR]))
    lines = [t(lang, "core.help_intro"), ""]
    for title, items in sections:
        if not items:
            continue
        lines.append(f"<b>{title}</b>")
        lines.extend(f"/{s.name} — {s.description(lang)}" for s in items)
        lines.append("")
    return "\n".join(lines).strip()


def _commands(
    specs: Iterable[CommandSpec], lang: str, audiences: set[Audience]
) -> list[BotCommand]:
    return [BotCommand(s.name, s.description(lang)) for s in specs if s.audience in audiences]


async def publish_commands(bot: Bot, specs: Sequence[CommandSpec]) -> None:
    """setMyCommands per scope and language: members' and admins' menus differ."""
    scopes = [
        (BotCommandScopeDefault(), {Audience.MEMBER, Audience.PRIVATE}),
        (BotCommandScopeAllGroupChats(), {Audience.MEMBER}),
        (BotCommandScopeAllChatAdministrators(), {Audience.MEMBER, Audience.OPERATOR}),
    ]
    for scope, audiences in scopes:
        for lang in LANGUAGES:
            await bot.set_my_commands(
                _commands(specs, lang, audiences),
                scope=scope,
                language_code=None if lang == "en" else lang,
            )
