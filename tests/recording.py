"""A Bot API stand-in for offline tests: records every call, checks it, answers like Telegram.

- Every call is checked against tests/bot_api_contract.json (derived from the official Bot
  API description): the method exists, required parameters are present, no unknown ones.
  HTML texts are checked the way Telegram parses them, with its length limits.
  A violation is answered with 400 like Telegram would, and recorded so the test fails.
- `getMe` is answered locally, so `Application.initialize()` works without a network.
- Results are valid Bot API JSON; tests add `responders` for methods whose answer matters.
- Faults are programmable (`fault`, `fail`, `raise_on`): per method, optionally per chat, for
  a number of calls — Telegram's own error JSON (429 with retry_after, 5xx, 403, 400), so PTB
  raises the real exception types, or a transport failure (TimedOut, NetworkError).
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from telegram.error import NetworkError, TimedOut
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

# What members may do by default in a test group (getChat → permissions).
DEFAULT_PERMISSIONS = {
    "can_send_messages": True,
    "can_send_audios": True,
    "can_send_documents": True,
    "can_send_photos": True,
    "can_send_videos": True,
    "can_send_video_notes": True,
    "can_send_voice_notes": True,
    "can_send_polls": True,
    "can_send_other_messages": True,
    "can_add_web_page_previews": True,
    "can_change_info": False,
    "can_invite_users": True,
    "can_pin_messages": False,
    "can_manage_topics": False,
    "can_react_to_messages": True,
    "can_edit_tag": False,
}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, Any] = field(default_factory=dict)  # uploads: name → (file name, bytes, type)


@dataclass
class Failure:
    error_code: int
    description: str
    parameters: dict[str, Any] | None = None


@dataclass
class Fault:
    """A scripted failure: the next `times` calls of `method` (to `chat_id`, if given)."""

    method: str
    outcome: Failure | BaseException
    chat_id: int | None = None
    times: int = 1

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if method != self.method or self.times <= 0:
            return False
        return self.chat_id is None or str(params.get("chat_id")) == str(self.chat_id)


def flood(retry_after: int = 5) -> Failure:
    """429 as Telegram sends it: the text says the wait, `parameters.retry_after` carries it."""
    return Failure(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


def server_error(code: int = 500) -> Failure:
    descriptions = {500: "Internal Server Error", 502: "Bad Gateway", 504: "Gateway Timeout"}
    return Failure(code, descriptions.get(code, "Internal Server Error"))


def timed_out() -> TimedOut:
    """No answer in time: Telegram may or may not have acted (httpx read timeout)."""
    error = TimedOut()
    error.__cause__ = httpx.ReadTimeout("timed out")
    return error


def connection_refused() -> NetworkError:
    """The request never reached Telegram (as PTB's HTTPXRequest reports httpx.ConnectError)."""
    error = NetworkError("httpx.ConnectError: [Errno 111] Connection refused")
    error.__cause__ = httpx.ConnectError("[Errno 111] Connection refused")
    return error


FAULTS: dict[str, Callable[[], Failure | BaseException]] = {
    "flood": flood,
    "500": server_error,
    "502": lambda: server_error(502),
    "kicked": lambda: Failure(403, "Forbidden: bot was kicked from the supergroup chat"),
    "blocked": lambda: Failure(403, "Forbidden: bot was blocked by the user"),
    "chat not found": lambda: Failure(400, "Bad Request: chat not found"),
    "too long": lambda: Failure(400, "Bad Request: message is too long"),
    "timeout": timed_out,
    "network": connection_refused,
}


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
    problems += [f"{method}: {problem}" for problem in _value_problems(method, params)]
    return problems


def _value_problems(method: str, params: dict[str, Any]) -> list[str]:
    """Telegram's documented value limits of the methods that have them."""
    if method not in ("createChatInviteLink", "editChatInviteLink"):
        return []
    problems = []
    name = params.get("name")
    if name is not None and utf16_length(str(name)) > 32:
        problems.append("invite link name longer than 32 characters")
    limit = params.get("member_limit")
    if limit is not None and not 1 <= int(limit) <= 99999:
        problems.append("member_limit must be 1-99999")
    if limit is not None and params.get("creates_join_request"):
        problems.append("member_limit can't be specified with creates_join_request")
    expire = params.get("expire_date")
    if expire is not None and not isinstance(expire, int):
        problems.append("expire_date must be a Unix time")
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
    # getChat permissions per chat (default: members may do everything but change the group)
    chat_permissions: dict[int, dict[str, bool]] = field(default_factory=dict)
    # getChatMember answers per (chat, user) (default: an ordinary member)
    chat_members: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    member_count: int = 1
    webhook_url: str = ""  # set by setWebhook, cleared by deleteWebhook

    def __post_init__(self) -> None:
        self.faults: list[Fault] = []
        self.faulted: list[tuple[Call, Failure | BaseException]] = []  # calls that got a fault
        self._message_ids = itertools.count(5000)
        self._poll_ids = itertools.count(7_000_000_000_000_000_001)
        self._link_ids = itertools.count(1)
        self.invite_links: dict[str, dict[str, Any]] = {}  # createChatInviteLink's answers
        self.polls: dict[str, dict[str, Any]] = {}  # Telegram's side of the polls sent

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
        uploads: dict[str, Any] = {}
        if request_data is not None:  # uploaded files travel as multipart fields
            uploads = getattr(request_data, "multipart_data", None) or {}
            for name, (filename, *_rest) in uploads.items():
                params.setdefault(name, f"upload://{filename}")
        if api_method == "getMe":
            return self._ok(self.bot_user)
        self.calls.append(Call(api_method, params, dict(uploads)))
        problems = contract_problems(api_method, params)
        if problems:
            self.violations.extend(problems)
            return self._error(Failure(400, "Bad Request: " + "; ".join(problems)))
        fault = next((f for f in self.faults if f.matches(api_method, params)), None)
        if fault is not None:
            fault.times -= 1
            self.faulted.append((self.calls[-1], fault.outcome))
            if isinstance(fault.outcome, BaseException):
                raise fault.outcome
            return self._error(fault.outcome)
        responder = self.responders.get(api_method) or getattr(self, f"_answer_{api_method}", None)
        return self._ok(responder(params) if responder else True)

    # -- scripting -------------------------------------------------------------------------

    def fault(
        self,
        method: str,
        kind: str | Failure | BaseException,
        *,
        chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` (to `chat_id`, if given) fail.

        `kind`: a name from FAULTS ("flood", "500", "502", "kicked", "blocked",
        "chat not found", "too long", "timeout", "network"), a Failure, or an exception.
        """
        outcome = FAULTS[kind]() if isinstance(kind, str) else kind
        self.faults.append(Fault(method, outcome, chat_id, times))

    def fail(
        self,
        method: str,
        error_code: int,
        description: str,
        *,
        chat_id: int | None = None,
        times: int = 1,
        **parameters: Any,
    ) -> None:
        """Make the next call of `method` fail as Telegram would (e.g. 403, 429 retry_after)."""
        failure = Failure(error_code, description, parameters or None)
        self.fault(method, failure, chat_id=chat_id, times=times)

    def raise_on(
        self, method: str, error: BaseException, *, chat_id: int | None = None, times: int = 1
    ) -> None:
        """Make the next call of `method` fail in transport (e.g. TimedOut: no answer came)."""
        self.fault(method, error, chat_id=chat_id, times=times)

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

    def _answer_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook_url = str(params.get("url") or "")
        return True

    def _answer_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook_url = ""
        return True

    def _answer_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }

    def _answer_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        # Telegram returns a message's inline keyboard; a reply keyboard or force_reply is not
        # part of the message
        extra = {"reply_markup": markup} if markup and "inline_keyboard" in markup else {}
        return self.message(params, text=visible_text(params["text"]), **extra)

    def _answer_editMessageText(self, params: dict[str, Any]) -> Any:
        if "inline_message_id" in params:
            return True
        return self.message(params, text=visible_text(params["text"]))

    def _answer_getChatAdministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.admins.get(int(params["chat_id"]), [])

    def _answer_copyMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": next(self._message_ids)}

    # -- polls: Telegram's side is kept, so stopPoll answers with the real counts -------------

    def _answer_sendPoll(self, params: dict[str, Any]) -> dict[str, Any]:
        kind = params.get("type") or "regular"
        options = [
            {
                "persistent_id": f"opt-{position}",
                "text": option["text"] if isinstance(option, dict) else str(option),
                "voter_count": 0,
            }
            for position, option in enumerate(params["options"])
        ]
        poll: dict[str, Any] = {
            "id": str(next(self._poll_ids)),
            "question": params["question"],
            "options": options,
            "total_voter_count": 0,
            "is_closed": bool(params.get("is_closed", False)),
            "is_anonymous": bool(params.get("is_anonymous", True)),
            "type": kind,
            "allows_multiple_answers": bool(params.get("allows_multiple_answers", False)),
            "allows_revoting": bool(params.get("allows_revoting", kind != "quiz")),
            "members_only": False,
        }
        if params.get("correct_option_ids") is not None:
            poll["correct_option_ids"] = list(params["correct_option_ids"])
        if params.get("explanation"):
            poll["explanation"] = params["explanation"]
        message = self.message(params, poll=poll)
        self.polls[poll["id"]] = {
            "poll": poll,
            "chat_id": int(params["chat_id"]),
            "message_id": message["message_id"],
            "votes": {},
        }
        return message

    def _answer_stopPoll(self, params: dict[str, Any]) -> dict[str, Any]:
        for state in self.polls.values():
            if state["chat_id"] == int(params["chat_id"]) and state["message_id"] == int(
                params["message_id"]
            ):
                state["poll"]["is_closed"] = True
                return copy.deepcopy(state["poll"])
        return {  # a poll this stand-in did not send: closed, no votes
            "id": "0",
            "question": "?",
            "options": [],
            "total_voter_count": 0,
            "is_closed": True,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
            "allows_revoting": True,
            "members_only": False,
        }

    def vote(self, poll_id: str, user_id: int, option_ids: list[int]) -> dict[str, Any]:
        """Count a vote the way Telegram does (empty: retracted); returns the poll's new state."""
        state = self.polls[poll_id]
        if option_ids:
            state["votes"][user_id] = list(option_ids)
        else:
            state["votes"].pop(user_id, None)
        poll = state["poll"]
        for position, option in enumerate(poll["options"]):
            option["voter_count"] = sum(position in v for v in state["votes"].values())
        poll["total_voter_count"] = len(state["votes"])
        return copy.deepcopy(poll)

    def _media_extra(self, params: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if "caption" in params:
            extra["caption"] = visible_text(params["caption"])
        if "reply_markup" in params:
            extra["reply_markup"] = params["reply_markup"]
        return extra

    def _file(self, params: dict[str, Any], key: str) -> dict[str, Any]:
        seed = abs(hash(str(params[key]))) % 10**8
        return {"file_id": f"{key}-{seed}", "file_unique_id": f"u{key}{seed}"}

    def _answer_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        photo = [{**self._file(params, "photo"), "width": 64, "height": 64}]
        return self.message(params, photo=photo, **self._media_extra(params))

    def _answer_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        document = self._file(params, "document")
        return self.message(params, document=document, **self._media_extra(params))

    def _answer_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        """Everyone asked about is a plain member (tests override with `responders`)."""
        user = {"id": int(params["user_id"]), "is_bot": False, "first_name": "Member"}
        return {"status": "member", "user": user}

    def _answer_sendVideo(self, params: dict[str, Any]) -> dict[str, Any]:
        video = {**self._file(params, "video"), "width": 640, "height": 360, "duration": 5}
        return self.message(params, video=video, **self._media_extra(params))

    # pinChatMessage, unpinChatMessage and deleteMessage answer True (the default).
    def _answer_getChat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        data: dict[str, Any] = {
            "id": chat_id,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }
        if chat_id < 0:
            data.update(type="supergroup", title="Group")
            data["permissions"] = self.chat_permissions.get(chat_id, DEFAULT_PERMISSIONS)
        else:
            data.update(type="private", first_name="User")
        return data

    def _answer_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        known = self.chat_members.get((chat_id, user_id))
        if known is not None:
            return known
        if user_id == self.bot_user["id"]:
            user = self.bot_user
        else:
            user = {"id": user_id, "is_bot": False, "first_name": "User"}
        return {"status": "member", "user": user}

    def _answer_createChatInviteLink(self, params: dict[str, Any]) -> dict[str, Any]:
        link: dict[str, Any] = {
            "invite_link": f"https://t.me/+Test{next(self._link_ids):012d}",
            "creator": self.bot_user,
            "creates_join_request": bool(params.get("creates_join_request", False)),
            "is_primary": False,
            "is_revoked": False,
        }
        for key in ("name", "expire_date", "member_limit"):
            if params.get(key) is not None:
                link[key] = params[key]
        self.invite_links[link["invite_link"]] = link
        return link

    def _answer_revokeChatInviteLink(self, params: dict[str, Any]) -> dict[str, Any]:
        known = self.invite_links.get(params["invite_link"])
        link = dict(known) if known else {
            "invite_link": params["invite_link"],
            "creator": self.bot_user,
            "creates_join_request": False,
            "is_primary": False,
        }  # fmt: skip
        link["is_revoked"] = True
        return link

    def _answer_getChatMemberCount(self, params: dict[str, Any]) -> int:
        return self.member_count


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
