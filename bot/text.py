"""Safe HTML for Telegram: escaping, mentions, and splitting long texts within the limits."""

from __future__ import annotations

import html

MAX_MESSAGE_UTF16 = 4096
MAX_CAPTION_UTF16 = 1024


def escape(text: object) -> str:
    """Escape any user-supplied value for parse_mode=HTML (names, titles, reasons, prizes)."""
    return html.escape(str(text), quote=False)


def display_name(first_name: str | None, last_name: str | None = None) -> str:
    name = " ".join(part for part in (first_name, last_name) if part)
    return name or "?"


def mention(user_id: int, name: str) -> str:
    """An HTML mention that works for members without a username; `name` is escaped here."""
    return f'<a href="tg://user?id={int(user_id)}">{escape(name)}</a>'


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = MAX_MESSAGE_UTF16) -> list[str]:
    """Split on line boundaries so each part fits `limit` UTF-16 units.

    Lines are never cut unless a single line is longer than the limit (then it is cut by
    characters). Callers keep HTML tags within one line so every part stays well-formed.
    """
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        pieces = [line]
        if utf16_len(line) > limit:
            pieces = _cut(line, limit)
        for piece in pieces:
            extra = utf16_len(piece) + (1 if current else 0)
            if current and size + extra > limit:
                parts.append("\n".join(current))
                current, size = [], 0
                extra = utf16_len(piece)
            current.append(piece)
            size += extra
    if current:
        parts.append("\n".join(current))
    return [part for part in parts if part.strip()] or [""]


def _cut(line: str, limit: int) -> list[str]:
    pieces, piece, size = [], [], 0
    for char in line:
        width = utf16_len(char)
        if size + width > limit:
            pieces.append("".join(piece))
            piece, size = [], 0
        piece.append(char)
        size += width
    if piece:
        pieces.append("".join(piece))
    return pieces
