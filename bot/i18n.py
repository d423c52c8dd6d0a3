"""The one translation function, `t(lang, key, **values)`, over English and Chinese catalogues.

Catalogues are YAML files under bot/locales/<lang>/, one per feature (core.yaml, rules.yaml, …),
merged into one flat namespace of dotted keys. Values are `str.format` templates; whoever
passes user-supplied text in `values` escapes it for the parse mode first (see bot.text).
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bot.settings import LANGUAGES

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LANGUAGE = "en"
log = logging.getLogger(__name__)


def _flatten(prefix: str, node: Any, into: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, into)
    else:
        into[prefix] = str(node)


@cache
def catalogue(lang: str) -> dict[str, str]:
    """All messages of one language, keyed `feature.key`; loaded once."""
    messages: dict[str, str] = {}
    for path in sorted((LOCALES_DIR / lang).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        _flatten(path.stem, data, messages)
    return messages


def normalize_language(code: str | None) -> str:
    """Map a Telegram `language_code` (zh-hans, zh-CN, en-US, …) to a supported language."""
    if code and code.lower().startswith("zh"):
        return "zh"
    return "en" if code is None or code.lower() not in LANGUAGES else code.lower()


def t(lang: str | None, key: str, /, **values: Any) -> str:
    """Translate `key` into `lang` and fill in `values`; falls back to English, then the key."""
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    template = catalogue(lang).get(key)
    if template is None:
        template = catalogue(DEFAULT_LANGUAGE).get(key)
        if template is None:
            log.error("missing translation key %s", key)
            return key
    return template.format(**values)
