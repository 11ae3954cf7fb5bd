"""Database URLs with several hosts: the form people paste from libpq, the form SQLAlchemy reads.

A PostgreSQL primary with a standby is named by listing both hosts and asking for the one that
takes writes: libpq's URI form ``postgresql://user@h1:5432,h2:5433/recon?target_session_attrs=
read-write`` (what the PostgreSQL documentation and every failover guide show). SQLAlchemy 2
cannot parse that authority (it reads ``5432,h2:5433`` as one port); it reads the same hosts from
the query instead (``?host=h1,h2&port=5432,5433``, its "multiple fallback hosts"), and its
psycopg dialect hands them to libpq unchanged. ``query_form`` turns the first into the second, so
every process (worker, beat, CLI, web page, migrations) takes either.

Each new connection then tries the hosts in order and keeps the first that passes
``target_session_attrs``: after a failover, reconnecting is what finds the new primary.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

#: libpq's values for ``target_session_attrs`` (PostgreSQL 14+ client library).
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
#: The values that make a list of hosts safe for a process that writes: only a primary passes.
WRITABLE_ATTRS = ("read-write", "primary")

# scheme://[userinfo@]hosts[/database][?query]: the userinfo runs to the last "@" before the
# path, as libpq reads it; the hosts are what follows, up to the path or the query.
_AUTHORITY = re.compile(
    r"^(?P<head>[A-Za-z][\w+.\-]*://(?:[^/?#]*@)?)(?P<hosts>[^/?#]*)(?P<tail>.*)$"
)
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d*))?$")


class HostListError(ValueError):
    """The list of hosts in a URL's authority cannot be read; the message never quotes the URL
    (it may hold a password), only the host entry at fault."""


def has_host_list(url: str) -> bool:
    """Whether ``url`` names several hosts in libpq's URI form (``h1:5432,h2:5433``)."""
    match = _AUTHORITY.match(url)
    return bool(match and "," in match.group("hosts"))


def query_form(url: str) -> str:
    """``url`` with libpq's host list moved into the query, as SQLAlchemy reads it; any other
    URL unchanged."""
    match = _AUTHORITY.match(url)
    if match is None or "," not in match.group("hosts"):
        return url
    hosts, ports = _split(match.group("hosts"))
    tail = match.group("tail")
    path, _, query = tail.partition("?")
    if re.search(r"(?:^|&)(?:host|hostaddr|port)=", query):
        raise HostListError(
            "names its hosts twice (a list before the database and host= or port= in the query): "
            "give them once"
        )
    listed = {"host": ",".join(hosts)}
    if any(ports):
        listed["port"] = ",".join(ports)
    extra = urlencode(listed, safe=",:")
    query = f"{query}&{extra}" if query else extra
    return f"{match.group('head')}{path or '/'}?{query}"


def _split(authority_hosts: str) -> tuple[list[str], list[str]]:
    hosts: list[str] = []
    ports: list[str] = []
    for number, entry in enumerate(authority_hosts.split(","), start=1):
        found = _HOST_PORT.match(entry)
        if found is None:
            raise HostListError(
                f"entry {number} of the host list is not host[:port] or [IPv6 address][:port] "
                "(example: postgresql://user@db1:5432,db2:5432/recon?"
                "target_session_attrs=read-write)"
            )
        port = found.group("port") or ""
        if port and not 0 < int(port) < 65536:
            raise HostListError(f"entry {number} of the host list has a port outside 1-65535")
        hosts.append(found.group("v6") or found.group("name"))
        ports.append(port)
    return hosts, ports


def session_attrs_problem(*, hosts: int, attrs: str | None) -> str | None:
    """Why a URL with ``hosts`` hosts and ``target_session_attrs=attrs`` is unsafe; None if it
    is fine. With several hosts and no such setting libpq keeps the first that answers, which
    may be a standby: every write would fail there until someone edits the URL."""
    if attrs is not None and attrs not in SESSION_ATTRS:
        return f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}"
    if hosts > 1 and attrs not in WRITABLE_ATTRS:
        return (
            "names several hosts without target_session_attrs=read-write (or primary): a "
            "process could connect to a standby and be refused every write"
        )
    return None
