"""Regenerate tests/bot_api_contract.json from the official Bot API description.

Usage: python tests/tools/make_contract.py ../shared/telegram-bot-api/api.min.json

The contract keeps only what the recording request checks (method names, parameter names and
whether each is required), so the suite runs in a clone without ../shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(source: str) -> None:
    spec = json.loads(Path(source).read_text(encoding="utf-8"))
    methods = {
        name: {field["name"]: bool(field["required"]) for field in method.get("fields", [])}
        for name, method in sorted(spec["methods"].items())
    }
    contract = {"version": spec.get("version"), "methods": methods}
    target = Path(__file__).resolve().parent.parent / "bot_api_contract.json"
    target.write_text(json.dumps(contract, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(methods)} methods to {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/telegram-bot-api/api.min.json")
