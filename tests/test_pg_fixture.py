"""The PostgreSQL test fixtures (tests/pg_support.py) give a real server: a real
`postgres` process on loopback, reached with psycopg, one fresh database per test."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.pg_support import SERVER_SETTINGS, PgServer, _major, fresh_database


def test_the_server_is_postgresql_on_loopback(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SELECT version()").fetchone()
        assert version is not None and str(version[0]).startswith("PostgreSQL "), version
        row = conn.execute("SELECT inet_server_addr()::text, inet_server_port()").fetchone()
    assert row == ("127.0.0.1/32", pg_server.port)


def test_the_url_names_user_host_port_and_database_and_no_password(
    pg_server: PgServer, pg_url: str
) -> None:
    parts = urlsplit(pg_url)
    assert parts.scheme == "postgresql"
    assert parts.password is None and ":" not in parts.netloc.split("@")[0]
    assert (parts.username, parts.hostname, parts.port) == ("postgres", "127.0.0.1", pg_server.port)
    assert parts.path.startswith("/t_")
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT current_database(), current_user").fetchone()
    assert row == (parts.path[1:], "postgres")


def test_each_test_database_is_its_own(pg_server: PgServer, pg_url: str) -> None:
    with fresh_database(pg_server) as other_url:
        assert other_url != pg_url
        with psycopg.connect(pg_url) as conn:
            conn.execute("CREATE TABLE jobs (id text PRIMARY KEY)")
            conn.execute("INSERT INTO jobs VALUES ('job-1')")
        with psycopg.connect(other_url) as other:
            found = other.execute("SELECT to_regclass('jobs')").fetchone()
        assert found == (None,)
        other_name = urlsplit(other_url).path[1:]
    # Dropped on the way out, even with a connection still open in a failed test.
    with psycopg.connect(pg_server.url()) as admin:
        left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (other_name,))
        assert left.fetchone() is None


def test_the_database_is_dropped_even_with_a_connection_left_open(pg_server: PgServer) -> None:
    with fresh_database(pg_server) as url:
        left_open = psycopg.connect(url)
        name = urlsplit(url).path[1:]
    try:
        with psycopg.connect(pg_server.url()) as admin:
            row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert row.fetchone() is None
    finally:
        left_open.close()


def test_the_server_runs_with_the_fast_test_settings(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            row = conn.execute(f"SHOW {name}").fetchone()
            assert row == (SERVER_SETTINGS[name],), name
        encoding = conn.execute("SHOW server_encoding").fetchone()
    assert encoding == ("UTF8",)


def test_only_loopback_clients_are_trusted(pg_server: PgServer) -> None:
    hba = (pg_server.data_dir / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and line[0] != "#"]
    hosts = [rule for rule in rules if rule[0].startswith("host")]
    assert hosts and all(rule[3] in ("127.0.0.1/32", "::1/128") for rule in hosts), hosts


def test_fixture_users_are_marked_postgres(request: pytest.FixtureRequest, pg_url: str) -> None:
    assert request.node.get_closest_marker("postgres") is not None


def test_the_newest_debian_major_sorts_first() -> None:
    dirs = [Path(f"/usr/lib/postgresql/{v}/bin") for v in ("9.6", "15", "10", "17")]
    assert [d.parent.name for d in sorted(dirs, key=_major, reverse=True)] == [
        "17", "15", "10", "9.6"
    ]  # fmt: skip
