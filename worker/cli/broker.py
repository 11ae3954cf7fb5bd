"""What a command says when RabbitMQ refuses it: one line, the URL shown with its password masked.

py-amqp raises the broker's refusals (403 for a login or a permission, 530 for a vhost that is
missing or not allowed, 406 for a queue declared with other arguments) as its own exceptions,
which kombu passes on untouched: without this they reached the user as tracebacks.
"""

from __future__ import annotations

from amqp.exceptions import AMQPError
from kombu import Connection

ACCESS_REFUSED = 403


def masked(url: str) -> str:
    """The broker URL as it may be shown: kombu writes the password as ``**``; every node of a
    cluster's list is shown, each masked."""
    try:
        return ";".join(str(Connection(part).as_uri()) for part in url.split(";") if part)
    except Exception:
        return "RECON_BROKER_URL"


def refusal(exc: AMQPError, *, url: str) -> str:
    """One line for a refusal by the broker at ``url``."""
    text = str(getattr(exc, "reply_text", "") or exc).strip()
    reason = text.split(" - ", 1)[-1].splitlines()[0] if text else type(exc).__name__
    where = masked(url)
    if getattr(exc, "reply_code", None) == ACCESS_REFUSED and "Login was refused" in text:
        return (
            f"RabbitMQ at {where} refused the login: check the user name and password in "
            "RECON_BROKER_URL"
        )
    return f"RabbitMQ at {where} refused: {reason} (RECON_BROKER_URL)"


def check_login(url: str) -> None:
    """Raise now if the broker refuses our user or vhost; a broker that does not answer is left
    to the caller (a worker waits for it, however long it is down)."""
    with Connection(url, connect_timeout=10) as connection:
        try:
            connection.connect()
        except AMQPError:
            raise
        except Exception:
            return
