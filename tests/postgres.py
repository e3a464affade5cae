"""A private PostgreSQL server for a test: its own data folder and Unix socket, no TCP port, gone after.

Tests that need one skip (with the reason) where PostgreSQL's server programs or the ``psycopg``
driver are not installed; ``.ci/run`` installs both. The server refuses to run as root, so under
root it runs as ``nobody``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER = "lmcli"


def server_program(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@contextmanager
def postgres_url() -> Iterator[str]:
    """``postgresql://lmcli@/postgres?host=SOCKET_FOLDER`` of a server started for the caller."""
    initdb, pg_ctl = server_program("initdb"), server_program("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's server (initdb, pg_ctl) is not installed (Debian: postgresql)")
    pytest.importorskip("psycopg", reason="the psycopg driver (psycopg[binary]) is not installed")
    base = Path(tempfile.mkdtemp(prefix="lmcli-pg-", dir="/tmp"))  # short: a socket path is at most 107 bytes
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(base, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data = base / "data"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=60)

    try:
        run(initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
        run(pg_ctl, "-D", str(data), "-o", f"-k {base} -c listen_addresses=''", "-w", "-l", str(base / "server.log"), "start")
        try:
            yield f"postgresql://{USER}@/postgres?host={base}"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
