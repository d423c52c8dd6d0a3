"""A Bot API stand-in for offline tests: records every call, checks it, answers like Telegram.

- Every call is checked against tests/bot_api_contract.json (derived from the official Bot
  API description): the method exists, required parameters are present, no unknown ones.
  HTML texts are checked the way Telegram parses them, with its length limits.
  A violation is answered with 400 like Telegram would, and recorded so the test fails.
- `getMe` is answered locally, so `Application.initialize()` works without a network.
- Results are valid Bot API JSON; tests add `responders` for methods whose answer matters
  and queue errors with `fail(method, …)`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegram.request import BaseRequest, RequestData

from tests.telegram_html import check_html, utf16_length, visible_text

CONTRACT = json.loads((Path(__file__).parent / "bot_api_contract.json").read_text("utf-8"))[
    "methods"
]

BOT_USER = {
    "id": 999000,
    "is_bot": True,
    "first_name": "Community Bot",
    "username": "community_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}

TEXT_LIMITS = {"text": 4096, "caption": 1024}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # uploaded files by part name


@dataclass
class Failure:
    error_code: int
    description: str
    parameters: dict[str, Any] | None = None


def contract_problems(method: str, params: dict[str, Any]) -> list[str]:
    """What Telegram would object to in a call, by the contract (empty list: fine)."""
    if method not in CONTRACT:
        return [f"unknown method {method}"]
    fields = CONTRACT[method]
    problems = [
        f"{method}: missing required {name}"
        for name, req in fields.items()
        if req and params.get(name) is None
    ]
    problems += [f"{method}: unknown parameter {name}" for name in params if name not in fields]
    mode = params.get("parse_mode")
    for key, limit in TEXT_LIMITS.items():
        value = params.get(key)
        if not isinstance(value, str):
            continue
        if mode == "HTML":
            reason = check_html(value)
            if reason:
                problems.append(f"{method}: can't parse entities: {reason} in {value!r}")
                continue
            value = visible_text(value)
        if utf16_length(value) > limit:
            problems.append(f"{method}: {key} is too long ({utf16_length(value)} > {limit})")
    return problems


@dataclass
class RecordingRequest(BaseRequest):
    """Records calls; answers getMe locally and everything else with plausible results."""

    bot_user: dict[str, Any] = field(default_factory=lambda: dict(BOT_USER))
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    responders: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    admins: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    now: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._failures: dict[str, list[Failure]] = {}
        self._message_ids = itertools.count(5000)

    # -- BaseRequest -----------------------------------------------------------------------

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self, url: str, method: str, request_data: RequestData | None = None, **_: Any
    ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        params = dict(request_data.parameters) if request_data else {}
        if api_method == "getMe":
            return self._ok(self.bot_user)
        files = _uploads(request_data)
        for name in files:  # a file uploaded as the parameter itself (not attach://)
            params.setdefault(name, f"<upload {name}>")
        self.calls.append(Call(api_method, params, files))
        problems = contract_problems(api_method, params)
        if problems:
            self.violations.extend(problems)
            return self._error(Failure(400, "Bad Request: " + "; ".join(problems)))
        queued = self._failures.get(api_method)
        if queued:
            return self._error(queued.pop(0))
        responder = self.responders.get(api_method) or getattr(self, f"_answer_{api_method}", None)
        return self._ok(responder(params) if responder else True)

    # -- scripting -------------------------------------------------------------------------

    def fail(self, method: str, error_code: int, description: str, **parameters: Any) -> None:
        """Make the next call of `method` fail as Telegram would (e.g. 403, 429 retry_after)."""
        self._failures.setdefault(method, []).append(
            Failure(error_code, description, parameters or None)
        )

    def set_admins(
        self, chat_id: int, *users: dict[str, Any], owner: dict[str, Any] | None = None
    ) -> None:
        """Who getChatAdministrators reports for a chat."""
        members = [admin_member(u) for u in users]
        if owner is not None:
            members.insert(0, {"status": "creator", "user": owner, "is_anonymous": False})
        self.admins[chat_id] = members

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def sent_texts(self, chat_id: int | None = None) -> list[str]:
        return [
            call.params["text"]
            for call in self.of("sendMessage")
            if chat_id is None or call.params["chat_id"] == chat_id
        ]

    def clear(self) -> None:
        self.calls.clear()

    # -- answers -----------------------------------------------------------------------------

    def _ok(self, result: Any) -> tuple[int, bytes]:
        return 200, json.dumps({"ok": True, "result": result}).encode()

    def _error(self, failure: Failure) -> tuple[int, bytes]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": failure.error_code,
            "description": failure.description,
        }
        if failure.parameters:
            body["parameters"] = failure.parameters
        return failure.error_code, json.dumps(body).encode()

    def message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = params["chat_id"]
        chat = {"id": chat_id, "type": "supergroup" if int(chat_id) < 0 else "private"}
        if int(chat_id) < 0:
            chat["title"] = "Group"
        else:
            chat["first_name"] = "User"
        return {
            "message_id": next(self._message_ids),
            "date": int(self.now()),
            "chat": chat,
            "from": self.bot_user,
            **content,
        }

    def _answer_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        extra = {"reply_markup": params["reply_markup"]} if "reply_markup" in params else {}
        return self.message(params, text=visible_text(params["text"]), **extra)

    def _answer_editMessageText(self, params: dict[str, Any]) -> Any:
        if "inline_message_id" in params:
            return True
        return self.message(params, text=visible_text(params["text"]))

    def _answer_getChatAdministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.admins.get(int(params["chat_id"]), [])

    def _answer_copyMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": next(self._message_ids)}

    def _answer_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        photo = [
            {"file_id": f"photo-{n}", "file_unique_id": f"u{n}", "width": 90, "height": 45}
            for n in (next(self._message_ids),)
        ]
        extra = {"caption": visible_text(params["caption"])} if "caption" in params else {}
        return self.message(params, photo=photo, **extra)


def _uploads(request_data: RequestData | None) -> dict[str, bytes]:
    """The bytes of files sent as multipart parts, by part name."""
    if request_data is None or not getattr(request_data, "contains_files", False):
        return {}
    uploads = {}
    for name, part in request_data.multipart_data.items():
        content = part[1]
        uploads[name] = content if isinstance(content, bytes) else content.read()
    return uploads


def admin_member(user: dict[str, Any], **rights: bool) -> dict[str, Any]:
    """A ChatMemberAdministrator as Telegram sends it."""
    flags = {
        "can_be_edited": False,
        "can_manage_chat": True,
        "can_delete_messages": True,
        "can_manage_video_chats": True,
        "can_restrict_members": True,
        "can_promote_members": False,
        "can_change_info": True,
        "can_invite_users": True,
        "can_post_stories": False,
        "can_edit_stories": False,
        "can_delete_stories": False,
        "can_pin_messages": True,
        "is_anonymous": False,
    }
    flags.update(rights)
    return {"status": "administrator", "user": user, **flags}
