"""Scale-out settings that are wrong are refused at start, saying what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import make_settings


@pytest.mark.parametrize("url", ["http://127.0.0.1:8125", "udp://", "udp://127.0.0.1:notaport"])
def test_a_dogstatsd_url_that_is_not_udp_host_port_is_refused(tmp_path: Path, url: str) -> None:
    """The exporter speaks UDP only; anything else would silently send nothing."""
    with pytest.raises(ValidationError, match="udp://"):
        make_settings(tmp_path, dogstatsd_url=url)


def test_serve_with_several_workers_on_sqlite_says_postgresql_is_needed(
    env: dict[str, str], tmp_path: Path
) -> None:
    """SQLite is one process's: `--workers 2` stops at once and names the fix."""
    done = subprocess.run(
        [sys.executable, "-m", "roleferry", "serve", "--workers", "2", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "--workers needs PostgreSQL" in done.stderr
    assert "ROLEFERRY_DATABASE_URL=postgresql://" in done.stderr
