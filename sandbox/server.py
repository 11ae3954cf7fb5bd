"""The running server (a threaded stdlib HTTP server), how to start and stop it, and the CLI."""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from sandbox.app import SandboxApp
from sandbox.config import SandboxConfig
from sandbox.http_handler import RequestHandler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # no list of finished threads to keep or join
    request_queue_size = 1024  # a burst of new connections from many processes waits, not fails
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds on some hosts; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its time-out, a killed worker) leaves a broken pipe behind:
        # that is the client's business, not a sandbox fault worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """End keep-alive connections too, so a stopped sandbox really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """A running sandbox; `stop()` ends it."""

    def __init__(self, server: _Server, thread: threading.Thread, config: SandboxConfig) -> None:
        self._server = server
        self._thread = thread
        self.config = config
        address, self.port = server.server_address[:2]
        host = str(address)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{host}:{self.port}"

    @property
    def app(self) -> SandboxApp:
        return self._server.app

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)


def start_sandbox(
    config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Sandbox:
    """Start in a daemon thread, return once it accepts connections (port 0 = a free port)."""
    config = config or SandboxConfig()
    server = _Server((host, port), SandboxApp(config))  # bound and listening from here on
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.name = f"sandbox-{server.server_address[1]}"
    thread.start()
    return Sandbox(server, thread, config)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_forever(config: SandboxConfig, *, host: str, port: int) -> None:
    """Serve in this thread until SIGINT or SIGTERM (for the CLI)."""
    server = _Server((host, port), SandboxApp(config))
    print(f"sandbox listening on http://{host}:{server.server_address[1]}", flush=True)
    print(describe_logins(config), flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.close_connections()


def describe_logins(config: SandboxConfig) -> str:
    """Who may call the sandbox. The built-in till user's password is shown (it is public, in
    the README); passwords given with --user are not."""
    defaults = SandboxConfig()
    users = []
    for name, password in sorted(config.users.items()):
        shown = defaults.users.get(name) == password
        users.append(f"{name} (password {password})" if shown else name)
    clients = ", ".join(sorted(config.oauth_clients)) or "none"
    return f"till users (Basic auth): {', '.join(users) or 'none'}; OAuth client keys: {clients}"


def _pair(text: str) -> tuple[str, str]:
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:SECRET, got {text!r}")
    return name, secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="A local stand-in for the loyalty platform's API, with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument(
        "--rate-limit", type=int, default=1000, help="requests per minute per API key (0 = none)"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share answered 500/502/503/504, no effect"
    )
    parser.add_argument(
        "--slow-rate", type=float, default=0.0, help="share answered after --slow-seconds"
    )
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share hung up on, no effect")
    parser.add_argument(
        "--lost-rate", type=float, default=0.0, help="share applied, then hung up on"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--token-ttl", type=int, default=3600, help="OAuth token lifetime in seconds"
    )
    parser.add_argument(
        "--user", action="append", type=_pair, metavar="NAME:PASSWORD", help="repeatable"
    )
    parser.add_argument(
        "--oauth-client", action="append", type=_pair, metavar="KEY:SECRET", help="repeatable"
    )
    args = parser.parse_args(argv)
    defaults = SandboxConfig()
    try:
        config = SandboxConfig(
            users=dict(args.user) if args.user else defaults.users,
            oauth_clients=dict(args.oauth_client) if args.oauth_client else defaults.oauth_clients,
            token_ttl_seconds=args.token_ttl,
            rate_limit_per_minute=args.rate_limit,
            error_rate=args.error_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
            drop_rate=args.drop_rate,
            lost_rate=args.lost_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve_forever(config, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
