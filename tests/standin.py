"""A Bot API server stand-in over real HTTP, for running the bot as a separate process.

The bot is started with TELEGRAM_API_BASE_URL=http://127.0.0.1:<port>/bot; this server answers
`getUpdates` from a queue of update dicts (respecting `offset`), records every call, checks it
against the same contract as the in-process RecordingRequest, and answers the rest with the
RecordingRequest's canned results.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.recording import RecordingRequest, contract_problems


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


Predicate = Callable[[str, dict[str, Any]], bool]


class BotApiStandIn:
    """Several bot processes may share one stand-in: each gets its own base URL
    (`url_for(tag)`), so every recorded call says which process made it (`sources`)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.answers = RecordingRequest()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sources: list[str] = []  # the tag of the process that made each call
        self.times: list[float] = []  # time.monotonic() of each call
        self.violations: list[str] = []
        self.acknowledged = 0  # highest update_id the bot has confirmed (offset - 1)
        self.refusals: dict[str, list[tuple[int, str]]] = {}
        # A held call is neither answered nor recorded (Telegram never saw it) until
        # `release()`; `held` lists (tag, method, params) of the calls caught so far.
        self.hold_if: Any = None
        self.held: list[tuple[str, str, dict[str, Any]]] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        # `hold(predicate)`: the call IS recorded as received, then blocks until `release()`
        # and is answered afterwards (if its bot still listens); see `held_calls`.
        self._holds: list[tuple[Predicate, threading.Event]] = []
        self._released = threading.Event()
        self.held_calls: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    def url_for(self, tag: str) -> str:
        """A base URL whose calls are recorded as made by `tag`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/{tag}/bot"

    def refuse(self, method: str, status: int, description: str, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with this error (e.g. 409 Conflict)."""
        self.refusals.setdefault(method, []).extend([(status, description)] * times)

    def hold(self, predicate: Predicate) -> threading.Event:
        """Block the next call matching `predicate` (recorded as received) until `release()`;
        the returned event is set when it arrives."""
        arrived = threading.Event()
        with self._lock:
            self._holds.append((predicate, arrived))
        return arrived

    def release(self) -> None:
        """Let held calls go (their bot may be dead by now); later `hold`s block again."""
        self._release.set()
        with self._lock:
            released, self._released = self._released, threading.Event()
        released.set()

    def of(self, method: str, chat_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                params
                for name, params in self.calls
                if name == method and (chat_id is None or int(params["chat_id"]) == chat_id)
            ]

    def calls_by(self, tag: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [
                call
                for call, source in zip(self.calls, self.sources, strict=True)
                if source == tag
            ]

    def __enter__(self) -> BotApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.calls]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                tag, _, rest = self.path.lstrip("/").partition("/")
                if tag.startswith("bot"):  # the plain base URL: no tag
                    tag, rest = "", self.path.lstrip("/")
                prefix = f"bot{standin.token}/"
                if not rest.startswith(prefix):
                    self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                    return
                method = rest[len(prefix) :]
                content_type = self.headers.get("Content-Type") or ""
                if "json" in content_type:
                    params = json.loads(raw.decode() or "{}")
                elif content_type.startswith("multipart/"):
                    params = _multipart(content_type, raw)
                else:
                    params = {k: _decode(v) for k, v in parse_qsl(raw.decode())}
                if standin.hold_if is not None and standin.hold_if(tag, method, params):
                    with standin._lock:
                        standin.held.append((tag, method, params))
                    standin._release.wait()
                    self.close_connection = True
                    return
                payload = standin.answer(method, params, tag)
                status = payload.get("error_code", 200) if not payload["ok"] else 200
                self._reply(status, payload)

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the bot was killed while we held its request
                    pass

        return Handler

    def answer(self, method: str, params: dict[str, Any], tag: str = "") -> dict[str, Any]:
        if method == "getMe":
            return {"ok": True, "result": self.answers.bot_user}
        with self._lock:
            self.calls.append((method, params))
            self.sources.append(tag)
            self.times.append(time.monotonic())
            refusals = self.refusals.get(method)
            refusal = refusals.pop(0) if refusals else None
        if refusal is not None:
            return {"ok": False, "error_code": refusal[0], "description": refusal[1]}
        problems = [] if method in ("getUpdates",) else contract_problems(method, params)
        if problems:
            self.violations.extend(problems)
            return {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: " + "; ".join(problems),
            }
        with self._lock:
            hold = next(((p, e) for p, e in self._holds if p(method, params)), None)
            if hold is not None:
                self._holds.remove(hold)
                self.held_calls.append((method, params))
            released = self._released
        if hold is not None:
            hold[1].set()
            released.wait(timeout=120)
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            with self._lock:
                # as Telegram: an offset confirms every update before it, for good
                self.acknowledged = max(self.acknowledged, offset - 1)
                pending = [u for u in self.updates if u["update_id"] > self.acknowledged]
            if not pending:
                time.sleep(0.05)
            return {"ok": True, "result": pending[:100]}
        status, raw = asyncio.run(self.answers.do_request(f"/{method}", "POST", _Params(params)))
        return json.loads(raw)


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """Fields of a multipart/form-data body (uploads, e.g. sendPhoto); files become
    `upload://<filename>`, as the in-process RecordingRequest records them."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    params: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        if filename:
            params[name] = f"upload://{filename}"
        else:
            params[name] = _decode(part.get_payload(decode=True).decode())
    return params


class _Params:
    """Just enough of RequestData for RecordingRequest's canned answers."""

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.parameters = parameters
