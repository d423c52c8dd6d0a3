"""Safe HTML for Telegram: escaping, mentions, and splitting long texts within the limits."""

from __future__ import annotations

import html
import re

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


# What Telegram's HTML parser does not count: tags (zero width) and entities (one character).
_MARKUP = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)[^>]*>|&(?:#[0-9]+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


def visible_len(text: str) -> int:
    """The length Telegram checks for an HTML text: UTF-16 units after parsing the markup."""
    total, position = 0, 0
    for match in _MARKUP.finditer(text):
        total += utf16_len(text[position : match.start()])
        if match.group().startswith("&"):
            total += utf16_len(html.unescape(match.group()))
        position = match.end()
    return total + utf16_len(text[position:])


def split_message(text: str, limit: int = MAX_MESSAGE_UTF16, *, markup: bool = True) -> list[str]:
    """Split on line boundaries so each part fits `limit` UTF-16 units.

    Lengths are counted as Telegram counts them: for HTML (`markup`), after parsing, so a
    formatted text is split only when it really is too long. Lines are never cut unless a single
    line is longer than the limit; then it is cut between characters, never inside a tag or an
    entity, and tags open at the cut are closed and opened again. Callers keep HTML tags within
    one line so every part stays well-formed.
    """
    measure = visible_len if markup else utf16_len
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        width = measure(line)
        pieces = [(line, width)]
        if width > limit:
            pieces = _cut_markup(line, limit) if markup else _cut(line, limit)
        for piece, width in pieces:
            extra = width + (1 if current else 0)
            if current and size + extra > limit:
                parts.append("\n".join(current))
                current, size = [], 0
                extra = width
            current.append(piece)
            size += extra
    if current:
        parts.append("\n".join(current))
    return [part for part in parts if part.strip()] or [""]


def _cut(line: str, limit: int) -> list[tuple[str, int]]:
    pieces: list[tuple[str, int]] = []
    piece: list[str] = []
    size = 0
    for char in line:
        width = utf16_len(char)
        if size + width > limit:
            pieces.append(("".join(piece), size))
            piece, size = [], 0
        piece.append(char)
        size += width
    if piece:
        pieces.append(("".join(piece), size))
    return pieces


def _cut_markup(line: str, limit: int) -> list[tuple[str, int]]:
    """Cut an HTML line between characters; tags open at a cut are closed and reopened."""
    tokens: list[tuple[str, int, str | None, bool]] = []  # text, width, tag name, closing
    position = 0
    for match in _MARKUP.finditer(line):
        text = line[position : match.start()]
        tokens.extend((char, utf16_len(char), None, False) for char in text)
        token = match.group()
        if token.startswith("&"):
            tokens.append((token, utf16_len(html.unescape(token)), None, False))
        else:
            tokens.append((token, 0, match.group(2).lower(), match.group(1) == "/"))
        position = match.end()
    tokens.extend((char, utf16_len(char), None, False) for char in line[position:])
    pieces: list[tuple[str, int]] = []
    opened: list[tuple[str, str]] = []  # (name, opening tag) of the tags open here
    piece: list[str] = []
    size = 0
    for token, width, name, closing in tokens:
        if width and size + width > limit:
            piece.extend(f"</{tag}>" for tag, _ in reversed(opened))
            pieces.append(("".join(piece), size))
            piece, size = [opening for _, opening in opened], 0
        piece.append(token)
        size += width
        if name is not None:
            if closing:
                if opened and opened[-1][0] == name:
                    opened.pop()
            else:
                opened.append((name, token))
    if piece:
        pieces.append(("".join(piece), size))
    return pieces
