"""Both catalogues say the same things: same keys, same placeholders; commands described."""

from __future__ import annotations

import string

import pytest

from bot.app import FEATURES
from bot.i18n import catalogue, normalize_language, t


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_catalogues_have_the_same_keys():
    en, zh = catalogue("en"), catalogue("zh")
    assert set(en) == set(zh), f"only en: {set(en) - set(zh)}; only zh: {set(zh) - set(en)}"


@pytest.mark.parametrize("key", sorted(catalogue("en")))
def test_placeholders_match(key):
    assert placeholders(catalogue("en")[key]) == placeholders(catalogue("zh")[key])


def test_every_command_has_a_description_in_both_languages():
    for feature in FEATURES:
        for spec in getattr(feature, "COMMANDS", []):
            for lang in ("en", "zh"):
                key = f"{spec.feature}.cmd.{spec.name}"
                assert key in catalogue(lang), f"{key} missing in {lang}"


def test_language_detection_and_fallback():
    assert normalize_language("zh-hans") == "zh" and normalize_language("zh-TW") == "zh"
    assert normalize_language("en-US") == "en" and normalize_language(None) == "en"
    assert normalize_language("de") == "en"
    assert t("fr", "core.start_group") == t("en", "core.start_group")
    assert t("zh", "core.timezone_unknown", zone="X/Y").count("X/Y") == 1
