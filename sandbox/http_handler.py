"""The wire: read one HTTP/1.1 request off a keep-alive connection, write one answer back.

Speed matters (the benchmark sends thousands of requests a second from several processes), so:
keep-alive with Content-Length on every answer, a buffered writer so headers and body leave in
one send, Nagle off, no per-request logging, and a small header parser in place of the stdlib's
`email`-based one, which cost more than everything the sandbox does with a request.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from collections.abc import Mapping
from decimal import Decimal
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from sandbox import pipeline
from sandbox.endpoint import NOT_JSON, Request
from sandbox.handlers import admin
from sandbox.replies import Reply, json_reply

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

MAX_BODY = 64 * 1024 * 1024
MAX_HEADERS = 100
MAX_LINE = 65536

# Unique per answer: a random prefix per process, then a counter (next() is atomic under the GIL).
_REQUEST_PREFIX = os.urandom(6).hex()
_REQUEST_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_REQUEST_PREFIX}{next(_REQUEST_COUNTER):012x}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """JSON with exact decimals (points keep their decimal places), or NOT_JSON."""
    if not raw.strip():
        return NOT_JSON
    try:
        return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return NOT_JSON


class Headers:
    """Request headers: case-insensitive get, original names kept for the request log."""

    __slots__ = ("_by_name", "_items")

    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}
        self._items: list[tuple[str, str]] = []

    def add(self, name: str, value: str) -> None:
        self._by_name.setdefault(name.lower(), value)  # the first one wins, as in http.client
        self._items.append((name, value))

    def get(self, name: str, default: Any = None) -> Any:
        return self._by_name.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoyaltySandbox/1.0"
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body go out in one send, flushed after each request
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection frees its thread after this long
    _date_cache: tuple[int, str] = (0, "")

    def version_string(self) -> str:
        return self.server_version

    @property
    def app(self) -> SandboxApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a line per request would cost more than answering it."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Framing errors answer like everything else: JSON, a request id, then close."""
        self.close_connection = True
        self._write(json_reply(code, {"error": message or "bad request"}), new_request_id())

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header changes once a second; format it once a second.
        second = int(time.time() if timestamp is None else timestamp)
        cached = RequestHandler._date_cache
        if cached[0] != second:
            cached = (second, formatdate(second, usegmt=True))
            RequestHandler._date_cache = cached
        return cached[1]

    def parse_request(self) -> bool:
        """Request line and headers, as BaseHTTPRequestHandler.parse_request, minus `email`."""
        self.command = None  # type: ignore[assignment]
        self.request_version = "HTTP/1.1"  # HTTP/0.9 is not served; errors get a status line
        self.close_connection = True
        raw_line: bytes = self.raw_requestline  # type: ignore[attr-defined]
        self.requestline = str(raw_line, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3:
            self.send_error(400, "Bad request line")
            return False
        command, path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, "HTTP version not supported")
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(431, "Header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep or not name.strip():
                self.send_error(400, "Bad header line")
                return False
            headers.add(name.strip(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("Connection", "").lower()
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        self.close_connection = not keep_alive
        if headers.get("Expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def _read_body(self) -> bytes | None:
        """The body, or None when its framing is broken (the connection is then closed)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(MAX_LINE).split(b";")[0].strip() or b"0", 16)
                total += size
                if total > MAX_BODY:
                    return None
                if size == 0:
                    while self.rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(MAX_LINE)
        length = self.headers.get("Content-Length", "0").strip() or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            return None
        return self.rfile.read(int(length)) if int(length) else b""

    def _serve(self) -> None:
        request_id = new_request_id()
        try:
            raw = self._read_body()
        except ValueError:
            raw = None
        if raw is None:
            self.close_connection = True  # the rest of the stream cannot be framed
            self._write(
                json_reply(400, {"error": "bad Content-Length or chunked body"}), request_id
            )
            return
        path, _, query_string = self.path.partition("?")
        query = {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        try:
            if path == "/_admin" or path.startswith("/_admin/"):
                body = parse_json(raw) if raw.strip() else {}
                reply = admin.handle(self.app, self.command, path, query, body)
            else:
                # The message object itself: its look-ups are case-insensitive, as HTTP's are.
                headers = cast(Mapping[str, str], self.headers)
                request = Request(self.command, path, query, headers, parse_json(raw))
                reply = pipeline.answer(self.app, request, request_id, raw)
        except Exception:
            traceback.print_exc()  # a sandbox bug: say so loudly, answer 500
            reply = json_reply(500, {"error": "sandbox internal error"})
        self._write(reply, request_id)

    def _write(self, reply: Reply, request_id: str) -> None:
        if reply.hang_up:
            # Write nothing; the server shuts the socket down cleanly, so the client sees
            # "remote end closed connection without response" at once.
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("X-Cap-Requestid", request_id)
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve
