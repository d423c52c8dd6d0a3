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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.recording import RecordingRequest, contract_problems


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class BotApiStandIn:
    def __init__(self, token: str) -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.answers = RecordingRequest()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.violations: list[str] = []
        self.acknowledged = 0  # highest update_id the bot has confirmed (offset - 1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/bot"

    def __enter__(self) -> BotApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
                body = self.rfile.read(length).decode()
                prefix = f"/bot{standin.token}/"
                if not self.path.startswith(prefix):
                    self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                    return
                method = self.path[len(prefix) :]
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(body or "{}")
                else:
                    params = {k: _decode(v) for k, v in parse_qsl(body)}
                self._reply(200, standin.answer(method, params))

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
