"""What `REDIS_URL` and `DATABASE_URL` name, read without connecting: whether each is well formed (checked at start),
the parts of Sentinel and Cluster URLs, and where each points, for messages that never show a password."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

# redis-py and SQLAlchemy are imported where used: gunicorn's master and every `flask` command load this module.
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
DATABASE_SCHEMES = ("sqlite://", "postgresql+psycopg://", "postgresql://")
NODE_SCHEMES = ("redis+sentinel", "redis+cluster")  # list nodes; the others name one address


class RedisNodes(NamedTuple):
    """A Sentinel or Cluster URL: its nodes, password, and (Sentinel only) master name and database."""

    nodes: list[tuple[str, int]]
    password: str | None
    master: str | None
    db: int


def redis_scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def redis_nodes(url: str) -> RedisNodes:
    """The parts of a `redis+sentinel://` or `redis+cluster://` URL; ValueError when one is malformed."""
    parts = urlsplit(url)
    nodes = [_host_port(node) for node in parts.netloc.rpartition("@")[2].split(",") if node]
    if not nodes:
        raise ValueError("no host")
    path = [segment for segment in parts.path.split("/") if segment]
    master, db = None, 0
    if redis_scheme(url) == "redis+sentinel":
        if not path:
            raise ValueError("no master name")
        master, db = path[0], int(path[1]) if len(path) > 1 else 0
    return RedisNodes(nodes, unquote(parts.password) if parts.password else None, master, db)


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never repeat it; None when a client can be built from it."""
    import redis

    scheme = redis_scheme(url)
    if scheme not in REDIS_SCHEMES:
        return f"must be a {', '.join(s + '://' for s in REDIS_SCHEMES)} URL"
    try:
        if scheme in NODE_SCHEMES:
            redis_nodes(url)
        else:
            # redis-py's own reading, options included (an unknown one is a TypeError); nothing connects yet.
            redis.ConnectionPool.from_url(url).make_connection()
    except (ValueError, TypeError, redis.RedisError):  # their messages may quote part of the URL
        if scheme == "redis+sentinel":
            return "not a valid Redis URL: redis+sentinel://[:password@]host:port[,host:port...]/<master>[/<db>]"
        return "not a valid Redis URL: check the host, port, database number and options (see docs/configuration.md)"
    return None


def redis_address(url: str) -> str:
    """Where a Redis URL points: host:port (each node for Sentinel and Cluster) or the socket path; never a password."""
    scheme, parts = redis_scheme(url), urlsplit(url)
    if scheme == "unix":
        return parts.path
    if scheme in NODE_SCHEMES:
        return ",".join(f"{host}:{port}" for host, port in redis_nodes(url).nodes)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL, in words that never repeat it; None when the engine can be built from it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url.startswith(DATABASE_SCHEMES):
        return "must be a sqlite:/// or postgresql+psycopg:// URL"
    try:
        parsed = make_url(url)  # SQLAlchemy's own reading, the one the engine connects with
    except (ArgumentError, ValueError):  # a port that is not a number, an unclosed [IPv6 address, ...
        return "not a valid SQLAlchemy URL: check the host and port (see docs/configuration.md)"
    if "@" in (parsed.host or ""):  # read as part of the host, the rest of the password would appear in messages
        return "a user name or password contains '@': percent-encode it as %40"
    in_memory = parsed.database in (None, "", ":memory:")
    if parsed.get_backend_name() == "sqlite" and not in_memory and not can_create(Path(parsed.database).parent):
        return "the SQLite file's folder cannot be created or written there"
    return None


def database_address(url: str) -> str:
    """Which database a URL names: the SQLite file, or dialect, host, port and name; never a password."""
    from sqlalchemy.engine import make_url

    parts = make_url(url)
    if parts.get_backend_name() == "sqlite":
        return f"sqlite at {parts.database}"
    return f"{parts.get_backend_name()} at {parts.host or 'localhost'}:{parts.port or 5432}/{parts.database or ''}"


def _host_port(node: str) -> tuple[str, int]:
    """`host`, `host:port`, `[IPv6]` or `[IPv6]:port`; ValueError for anything else."""
    if node.startswith("["):
        host, bracket, port = node[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError("malformed IPv6 address")
        return host, int(port[1:] or 6379)
    host, _, port = node.rpartition(":")
    return (host, int(port)) if host else (node, 6379)


def can_create(folder: Path) -> bool:
    """True when `folder` is, or could be made, a folder this process writes in (the nearest existing one decides)."""
    try:
        for existing in (folder, *folder.parents):
            if existing.exists():
                return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    except OSError:  # a parent this process may not search
        return False
    return False
