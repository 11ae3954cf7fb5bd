"""`recon web`: serve the read-only audit page with waitress, a production WSGI server."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

DEFAULT_PORT = 8790
#: Worker threads of the one `recon web` process: each page is a few milliseconds of queries.
THREADS = 8
#: Open connections beyond which waitress stops accepting new ones (slow clients included).
CONNECTION_LIMIT = 100
#: Seconds an idle or stalled connection is kept.
CHANNEL_TIMEOUT = 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to bind. Anything but loopback needs RECON_WEB_TOKEN (and TLS in front).",
)  # fmt: skip
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--demo", is_flag=True,
    help="Show the database `make demo` left here (recon-demo/recon.sqlite3), whatever "
    "RECON_DATABASE_URL says.",
)  # fmt: skip
@click.option(
    "--insecure-no-token", is_flag=True,
    help="Serve on an address other than loopback without RECON_WEB_TOKEN: anyone who can "
    "reach it reads the audit trail.",
)  # fmt: skip
def web(host: str, port: int, demo: bool, insecure_no_token: bool) -> None:
    """Serve the audit page: search, timelines, summary, and the lists ops work from.

    Reads the database of RECON_DATABASE_URL (PostgreSQL, or the demo's SQLite file) and
    the dead-letter queue of RECON_BROKER_URL. When RECON_WEB_TOKEN is set every request needs
    it, as `Authorization: Bearer <token>` or through the sign-in form.

    \b
    Examples:
      recon web
      recon web --demo                 (after `make demo`, in the same folder)
      RECON_WEB_TOKEN=s3cret recon web --host 0.0.0.0 --port 8080
    """
    from waitress.server import create_server

    from worker.settings import load_settings
    from worker.web import create_app

    settings = load_settings()
    if demo:
        from worker.tools.demo import DEMO_DB

        if not DEMO_DB.exists():
            raise click.ClickException(
                f"no demo database {DEMO_DB} here: run `make demo` (or `recon demo`) first"
            )
        settings = settings.replace(database_url=f"sqlite:///{DEMO_DB}")
    token = settings.web_token.get_secret_value() or None
    if not is_loopback(host) and token is None:
        if not insecure_no_token:
            raise click.ClickException(
                f"refusing to serve on {host} without RECON_WEB_TOKEN: anyone who can reach it "
                "could read the audit trail; set RECON_WEB_TOKEN, or pass --insecure-no-token"
            )
        click.echo(
            f"warning: serving on {host} without RECON_WEB_TOKEN (--insecure-no-token): anyone "
            "who can reach it can read the audit trail",
            err=True,
        )
    app = create_app(settings, token=token)
    try:
        server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=THREADS,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT,
            ident="recon",
            # With trusted proxies, werkzeug's ProxyFix (in the app) reads X-Forwarded-*; by
            # default waitress strips them, which is right when nothing in front is trusted.
            clear_untrusted_proxy_headers=not settings.web_trusted_proxies,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_host, bound_port = (
        server.effective_listen[0]
        if hasattr(server, "effective_listen")
        else (server.effective_host, server.effective_port)
    )
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    # The port actually bound (``--port 0`` picks a free one): tests and scripts read this line.
    click.echo(
        f"recon web: serving http://{shown}:{bound_port}/ (waitress, {THREADS} threads)", err=True
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def register(group: click.Group) -> None:
    group.add_command(web)
