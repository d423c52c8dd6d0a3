"""Builders for the update JSON Telegram sends, as plain dicts (see core.telegram.org/bots/api).

Dates are datetimes (converted to Unix time here); ids are unique per process.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from tests.recording import BOT_USER

_update_ids = itertools.count(1)
_message_ids = itertools.count(1)
_callback_ids = itertools.count(1)

SERVICE_CHANNEL_BOT = {
    "id": 136817688,
    "is_bot": True,
    "first_name": "Channel",
    "username": "Channel_Bot",
}
ANONYMOUS_ADMIN = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
TELEGRAM_SERVICE = {"id": 777000, "is_bot": False, "first_name": "Telegram"}


def ts(moment: datetime) -> int:
    assert moment.tzinfo is not None, "use aware datetimes in tests"
    return int(moment.timestamp())


def user(
    user_id: int,
    first_name: str = "Member",
    *,
    last_name: str | None = None,
    username: str | None = None,
    language_code: str | None = "en",
    is_bot: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if last_name:
        data["last_name"] = last_name
    if username:
        data["username"] = username
    if language_code:
        data["language_code"] = language_code
    return data


def group(
    chat_id: int = -1001000000001, title: str = "Test Group", type: str = "supergroup"
) -> dict[str, Any]:
    return {"id": chat_id, "title": title, "type": type}


def private(of_user: dict[str, Any]) -> dict[str, Any]:
    return {"id": of_user["id"], "type": "private", "first_name": of_user["first_name"]}


def _update(**content: Any) -> dict[str, Any]:
    return {"update_id": next(_update_ids), **content}


def message_dict(
    chat: dict[str, Any],
    sender: dict[str, Any] | None,
    text: str | None = None,
    *,
    date: datetime,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"message_id": next(_message_ids), "date": ts(date), "chat": chat}
    if sender is not None:
        data["from"] = sender
    if text is not None:
        data["text"] = text
        if text.startswith("/"):
            command = text.split()[0]
            data["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    data.update(extra)
    return data


def message(
    chat: dict[str, Any],
    sender: dict[str, Any] | None,
    text: str | None = "hello",
    *,
    date: datetime,
    **extra: Any,
) -> dict[str, Any]:
    """A message update; texts starting with / carry a bot_command entity."""
    return _update(message=message_dict(chat, sender, text, date=date, **extra))


def edited(
    chat: dict[str, Any],
    sender: dict[str, Any],
    text: str,
    *,
    date: datetime,
    edit_date: datetime,
    message_id: int | None = None,
) -> dict[str, Any]:
    data = message_dict(chat, sender, text, date=date, edit_date=ts(edit_date))
    if message_id is not None:
        data["message_id"] = message_id
    return _update(edited_message=data)


def new_members(
    chat: dict[str, Any],
    members: list[dict[str, Any]],
    *,
    date: datetime,
    adder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return _update(
        message=message_dict(chat, adder or members[0], None, date=date, new_chat_members=members)
    )


def left_member(
    chat: dict[str, Any],
    member: dict[str, Any],
    *,
    date: datetime,
    remover: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return _update(
        message=message_dict(chat, remover or member, None, date=date, left_chat_member=member)
    )


def chat_member_status(member_user: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"status": status, "user": member_user}
    if status == "administrator":
        data.update(
            {
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
        )
    elif status == "creator":
        data["is_anonymous"] = False
    elif status == "kicked":
        data["until_date"] = 0
    elif status == "restricted":
        data.update(
            {
                "is_member": True,
                "can_send_messages": False,
                "can_send_audios": False,
                "can_send_documents": False,
                "can_send_photos": False,
                "can_send_videos": False,
                "can_send_video_notes": False,
                "can_send_voice_notes": False,
                "can_send_polls": False,
                "can_send_other_messages": False,
                "can_add_web_page_previews": False,
                "can_change_info": False,
                "can_invite_users": False,
                "can_pin_messages": False,
                "can_manage_topics": False,
                "can_react_to_messages": False,
                "can_edit_tag": False,
                "until_date": 0,
            }
        )
    data.update(extra)
    return data


def chat_member(
    chat: dict[str, Any],
    actor: dict[str, Any],
    member_user: dict[str, Any],
    old: str,
    new: str,
    *,
    date: datetime,
    old_extra: dict[str, Any] | None = None,
    new_extra: dict[str, Any] | None = None,
    invite_link: dict[str, Any] | None = None,
    via_join_request: bool = False,
) -> dict[str, Any]:
    """A chat_member update (sent when the bot is an administrator)."""
    body: dict[str, Any] = {
        "chat": chat,
        "from": actor,
        "date": ts(date),
        "old_chat_member": chat_member_status(member_user, old, **(old_extra or {})),
        "new_chat_member": chat_member_status(member_user, new, **(new_extra or {})),
    }
    if invite_link:
        body["invite_link"] = invite_link
    if via_join_request:
        body["via_join_request"] = True
    return _update(chat_member=body)


def invite_link(
    url: str,
    *,
    creator: dict[str, Any] | None = None,
    name: str | None = None,
    creates_join_request: bool = False,
) -> dict[str, Any]:
    """A ChatInviteLink as Telegram includes it in chat_member and chat_join_request updates.

    Links created by other administrators come with their second half replaced by "…".
    """
    data: dict[str, Any] = {
        "invite_link": url,
        "creator": creator or BOT_USER,
        "creates_join_request": creates_join_request,
        "is_primary": False,
        "is_revoked": False,
    }
    if name is not None:
        data["name"] = name
    return data


def chat_join_request(
    chat: dict[str, Any],
    member_user: dict[str, Any],
    *,
    date: datetime,
    invite_link: dict[str, Any] | None = None,
    bio: str | None = None,
) -> dict[str, Any]:
    """A chat_join_request update (someone asked to join; the bot may approve or decline)."""
    body: dict[str, Any] = {
        "chat": chat,
        "from": member_user,
        "user_chat_id": member_user["id"],
        "date": ts(date),
    }
    if invite_link:
        body["invite_link"] = invite_link
    if bio:
        body["bio"] = bio
    return _update(chat_join_request=body)


def my_chat_member(
    chat: dict[str, Any],
    actor: dict[str, Any],
    old: str,
    new: str,
    *,
    date: datetime,
    new_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bot's own status changed in a chat (added, promoted, removed)."""
    return _update(
        my_chat_member={
            "chat": chat,
            "from": actor,
            "date": ts(date),
            "old_chat_member": chat_member_status(BOT_USER, old),
            "new_chat_member": chat_member_status(BOT_USER, new, **(new_extra or {})),
        }
    )


def callback(
    sender: dict[str, Any],
    data: str,
    *,
    message: dict[str, Any] | None = None,
    chat: dict[str, Any] | None = None,
    date: datetime | None = None,
) -> dict[str, Any]:
    """A button press on `message` (by default a bot message in `chat`)."""
    if message is None:
        assert chat is not None and date is not None
        message = message_dict(chat, BOT_USER, "buttons", date=date)
    return _update(
        callback_query={
            "id": str(next(_callback_ids)),
            "from": sender,
            "chat_instance": "ci-1",
            "message": message,
            "data": data,
        }
    )


def poll_answer(
    poll_id: str, voter: dict[str, Any], option_ids: list[int], *, voter_chat: Any = None
) -> dict[str, Any]:
    """A poll_answer update (non-anonymous polls); an empty `option_ids` is a retraction."""
    body: dict[str, Any] = {
        "poll_id": poll_id,
        "option_ids": option_ids,
        "option_persistent_ids": [f"opt-{i}" for i in option_ids],
    }
    if voter_chat is not None:
        body["voter_chat"] = voter_chat
    else:
        body["user"] = voter
    return _update(poll_answer=body)


def poll_state(poll: dict[str, Any]) -> dict[str, Any]:
    """A poll update: Telegram's new state of a poll (counts, closed)."""
    return _update(poll=poll)
