"""The README's quick start and walkthrough, run as written on a fresh clone of HEAD.

The commands come from the README's own code blocks, so the test fails when README and reality
part ways: a command that no longer works, an output that changed, or a command here with no
check (each command of the walkthrough must have one below). Only the port differs: the test
serves on a free one. The clone gets a `.venv` of its own that reuses this test run's installed
packages and imports the clone's source, so nothing is installed and this run's virtualenv is
never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import typer.core
import typer.main

from roleferry.cli import app
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = "127.0.0.1:8000"

# Each walkthrough command (by how it starts) and what its output must contain. Assignments
# (`NAME=...`) are checked for a non-empty value.
CHECKS: list[tuple[str, str]] = [
    ("curl -s $RF/readyz", r'"status":\s*"ready"'),
    ("curl -s $RF/api/v1/me ", r'"email":\s*"local@roleferry\.localhost"'),
    ("curl -s $RF/api/v1/integrations ", r'"provider":\s*"apollo".*"mode":\s*"sandbox"'),
    ('curl -s "$RF/sandbox/_world/companies?limit=3"', r'"companies":\s*\['),
    (".venv/bin/roleferry search $DOMAIN --title VP --title Head", r"\d+ (person|people) \(via "),
    ("curl -s -X POST $RF/api/v1/contacts/search ", r'"contacts":\s*\[\{.*"email":\s*"[^"]+@'),
    ('curl -s "$RF/sandbox/_world/companies/$DOMAIN"', r"\A\Z"),  # quiet; `enrich` reads it
    (".venv/bin/roleferry enrich ", r"job \S+: \d+ contacts[\s\S]*succeeded: \d+ found"),
    ("head -3 $WORK/enriched.csv", r"^line,first_name,last_name,domain"),
    ("curl -s -X PUT $RF/sandbox/_control/apollo ", r'"down":\s*true'),
    ("curl -s $RF/sandbox/_control\n", r'"apollo":\s*\{[^}]*"down":\s*true'),
    (".venv/bin/roleferry search $DOMAIN --title Director", r"apollo unavailable"),
    ("curl -s $RF/sandbox/_control/stats", r'"providers":.*"apollo":.*"503"'),
    ("curl -s -X POST $RF/sandbox/_control/reset", r'"status":\s*"reset"'),
]


def code_blocks(markdown: str, section: str) -> list[str]:
    """The ```sh blocks of a level-2 section, subsections included."""
    start = markdown.index(f"\n## {section}\n")
    end = markdown.find("\n## ", start + 1)
    text = markdown[start : end if end > 0 else None]
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """One command per line; a trailing backslash continues it."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


ASSIGNMENT = re.compile(r"([A-Z_]+)=(.*)")


def check_for(command: str) -> str:
    if ASSIGNMENT.fullmatch(command):
        return r"."
    for prefix, pattern in CHECKS:
        if (command + "\n").startswith(prefix):
            return pattern
    raise AssertionError(f"README command without a check in {__file__}: {command}")


def borrow_installed_packages(clone: Path) -> None:
    """A `.venv` in the clone whose Python sees the clone's `src` first, then every package of
    the running environment; with `roleferry` and make's install stamp, as `make install` leaves."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site_packages) / "_quickstart_borrowed.pth").write_text(
        f"{clone / 'src'}\nimport site; site.addsitedir({ours!r})\n"
    )
    script = venv / "bin" / "roleferry"
    script.write_text(f"#!{python}\nfrom roleferry.cli import main\n\nmain()\n")
    script.chmod(0o755)
    (venv / ".installed").touch()
    imported = subprocess.run(
        [str(python), "-c", "import roleferry; print(roleferry.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert imported.startswith(str(clone / "src")), imported


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    target = tmp_path / "roleferry"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", head.stdout.strip()], check=True)
    borrow_installed_packages(target)
    return target


def test_readme_quick_start_and_walkthrough_work_as_written(clone: Path) -> None:
    """`make run` then every walkthrough command, each checked by what it prints, leaving
    nothing behind in the clone."""
    readme = (clone / "README.md").read_text()
    quick = commands("\n".join(code_blocks(readme, "Quick start")))
    assert [c.split()[:2] for c in quick] == [["make", "run"], ["make", "test"]]
    walkthrough = [c for block in code_blocks(readme, "Walkthrough") for c in commands(block)]
    assert walkthrough, "the README has a walkthrough"
    for command in walkthrough:
        check_for(command)

    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEFERRY_")}
    env.pop("HOST", None)
    env.pop("PORT", None)
    env["COLUMNS"] = "160"
    log = clone.parent / "make-run.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "Stop with Ctrl-C." not in log.read_text():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        banner = log.read_text()
        assert f"RoleFerry is ready at http://{address}" in banner
        assert f"http://{address}/docs" in banner
        assert (clone / ".roleferry" / "local-api-key").read_text().startswith("rf_")
        assert httpx.get(f"http://{address}/docs").status_code == 200

        state: dict[str, str] = {}
        for command in walkthrough:
            command = command.replace(DEFAULT_ADDRESS, address)
            pattern = check_for(command.replace(address, DEFAULT_ADDRESS))
            assignment = ASSIGNMENT.fullmatch(command)
            script = f'{command}; printf %s "${assignment.group(1)}"' if assignment else command
            result = subprocess.run(
                ["bash", "-c", "set -eo pipefail; " + script],
                cwd=clone,
                env={**env, **state},
                capture_output=True,
                text=True,
                timeout=60,
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, (command, output)
            if assignment:
                assert result.stdout.strip(), (command, output)
                state[assignment.group(1)] = result.stdout.strip()
            else:
                assert re.search(pattern, output, flags=re.S | re.M), (command, pattern, output)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=clone, capture_output=True, text=True
    )
    assert status.stdout == "", f"the walkthrough left files in the repository: {status.stdout}"


def test_readme_command_table_matches_the_cli() -> None:
    """The README's command table has one row per command the CLI has, and no other."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `roleferry ([a-z]+)(?: ([a-z]+))?", readme, flags=re.M)
    documented = [f"{a} {b}".strip() for a, b in rows]
    cli = typer.main.get_command(app)
    assert isinstance(cli, typer.core.TyperGroup)
    commands = []
    for name, command in cli.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            commands += [f"{name} {sub}" for sub in command.commands]
        else:
            commands.append(name)
    assert sorted(documented) == sorted(commands)
