"""A Bot API server stand-in over real HTTP, for running the bot as a separate process.

The bot is started with TELEGRAM_API_BASE_URL=http://127.0.0.1:<port>/bot; this server answers
`getUpdates` from a queue of update dicts (respecting `offset`), records every call, checks it
against the same contract as the in-process RecordingRequest, and answers the rest with the
RecordingRequest's canned results. Uploads (multipart/form-data) are understood too.

For kill drills, `hold(predicate)` makes the next matching call block — Telegram has it, the
bot waits for the answer — until `release()`; the test kills the bot meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.recording import RecordingRequest, contract_problems


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields as parameters; uploaded files as "upload://<file name>" (as recorded
    in-process by RecordingRequest)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    params: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        params[name] = f"upload://{filename}" if filename else _decode(payload.decode())
    return params


Predicate = Callable[[str, dict[str, Any]], bool]


class BotApiStandIn:
    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.answers = RecordingRequest()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.violations: list[str] = []
        self.acknowledged = 0  # highest update_id the bot has confirmed (offset - 1)
        self._lock = threading.Lock()
        self._holds: list[tuple[Predicate, threading.Event]] = []
        self._released = threading.Event()
        self.held: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    def __enter__(self) -> BotApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, predicate: Predicate) -> threading.Event:
        """Block the next call matching `predicate` (recorded as received) until `release()`;
        the returned event is set when it arrives."""
        arrived = threading.Event()
        with self._lock:
            self._holds.append((predicate, arrived))
        return arrived

    def release(self) -> None:
        """Let held calls go (their bot may be dead by now); later holds block again."""
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
                prefix = f"/bot{standin.token}/"
                if not self.path.startswith(prefix):
                    self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                    return
                method = self.path[len(prefix) :]
                content_type = self.headers.get("Content-Type") or ""
                if "json" in content_type:
                    params = json.loads(raw or b"{}")
                elif content_type.startswith("multipart/"):
                    params = _multipart(content_type, raw)
                else:
                    params = {k: _decode(v) for k, v in parse_qsl(raw.decode())}
                self._reply(200, standin.answer(method, params))

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

    def answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "getMe":
            return {"ok": True, "result": self.answers.bot_user}
        with self._lock:
            self.calls.append((method, params))
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
                self.held.append((method, params))
            released = self._released
        if hold is not None:
            hold[1].set()
            released.wait(timeout=120)
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            with self._lock:
                self.acknowledged = max(self.acknowledged, offset - 1)
                pending = [u for u in self.updates if u["update_id"] >= offset]
            if not pending:
                time.sleep(0.05)
            return {"ok": True, "result": pending[:100]}
        status, raw = asyncio.run(self.answers.do_request(f"/{method}", "POST", _Params(params)))
        return json.loads(raw)


class _Params:
    """Just enough of RequestData for RecordingRequest's canned answers."""

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.parameters = parameters
