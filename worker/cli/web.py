"""`recon web`: serve the read-only audit page."""

from __future__ import annotations

import click

DEFAULT_PORT = 8790


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to bind. Anything but loopback should sit behind RECON_WEB_TOKEN and TLS.",
)  # fmt: skip
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--demo", is_flag=True,
    help="Show the database `make demo` left here (recon-demo/recon.sqlite3), whatever "
    "RECON_DATABASE_URL says.",
)  # fmt: skip
def web(host: str, port: int, demo: bool) -> None:
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
    from werkzeug.serving import make_server

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
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        click.echo(
            f"warning: serving on {host} without RECON_WEB_TOKEN: anyone who can reach it "
            "can read the audit trail",
            err=True,
        )
    app = create_app(settings, token=token)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # The port actually bound (``--port 0`` picks a free one): tests and scripts read this line.
    click.echo(f"recon web: serving http://{host}:{server.server_port}/", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(group: click.Group) -> None:
    group.add_command(web)
