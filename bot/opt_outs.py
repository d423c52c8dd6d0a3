"""The hashed opt-outs in memory (see bot.privacy): a set lookup on the activity hot path.

No imports from the rest of the bot, so the activity recorder can use it.
"""

from __future__ import annotations

import hashlib
import hmac


def opt_out_key(*, privacy_salt: str | None, token: str | None) -> bytes:
    """The HMAC key of opt-out digests: PRIVACY_SALT, else derived from the bot token."""
    material = privacy_salt or token or ""
    return hashlib.sha256(b"community-bot opt-out\0" + material.encode()).digest()


class OptOuts:
    """The opted-out people, in memory: `excluded(chat_id, user_id)` is a set lookup.

    `clear` holds user ids found not opted out everywhere, `out` those found opted out, so a
    user id is hashed once; chats with a per-group opt-out (an operator's /forget) are few and
    checked through `by_chat`.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.everywhere: set[str] = set()
        self.by_chat: dict[int, set[str]] = {}
        self.clear: set[int] = set()
        self.out: set[int] = set()
        self._digests: dict[int, str] = {}  # users seen in chats with per-group opt-outs

    def digest(self, user_id: int) -> str:
        return hmac.new(self._key, str(user_id).encode("ascii"), hashlib.sha256).hexdigest()

    def excluded(self, chat_id: int | None, user_id: int) -> bool:
        """Whether this person's activity (in this group) must not be recorded."""
        if user_id in self.out:
            return True
        if user_id not in self.clear:
            if self.digest(user_id) in self.everywhere:
                self.out.add(user_id)
                return True
            self.clear.add(user_id)
        hashes = self.by_chat.get(chat_id) if chat_id is not None else None
        if not hashes:
            return False
        known = self._digests.get(user_id)
        if known is None:
            known = self._digests[user_id] = self.digest(user_id)
        return known in hashes

    def replace(self, rows: list[tuple[str, int | None]]) -> None:
        """Load the opt-outs (digest, chat or None); caches reset only when they changed."""
        everywhere: set[str] = set()
        by_chat: dict[int, set[str]] = {}
        for digest, chat_id in rows:
            if chat_id is None:
                everywhere.add(digest)
            else:
                by_chat.setdefault(chat_id, set()).add(digest)
        if everywhere == self.everywhere and by_chat == self.by_chat:
            return
        self.everywhere, self.by_chat = everywhere, by_chat
        self.clear, self.out, self._digests = set(), set(), {}

    def add(self, user_id: int, chat_id: int | None) -> None:
        digest = self.digest(user_id)
        if chat_id is None:
            self.everywhere.add(digest)
            self.out.add(user_id)
            self.clear.discard(user_id)
        else:
            self.by_chat.setdefault(chat_id, set()).add(digest)

    def remove(self, user_id: int) -> None:
        digest = self.digest(user_id)
        self.everywhere.discard(digest)
        for hashes in self.by_chat.values():
            hashes.discard(digest)
        self.by_chat = {chat: hashes for chat, hashes in self.by_chat.items() if hashes}
        self.out.discard(user_id)
        self.clear.discard(user_id)


__all__ = ["OptOuts", "opt_out_key"]
