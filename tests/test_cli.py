"""The `flask --app service ...` commands: help needs no configuration; check-config checks what it can reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _flask(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "service", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [[], ["check-config"], ["sign-url"], ["db"], ["db", "upgrade"], ["profiles"], ["profiles", "pending"]],
    ids=lambda command: " ".join(command) or "flask",
)
def test_help_works_without_any_configuration(command, tmp_path):
    result = _flask([*command, "--help"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: flask") and result.stderr == ""


def test_the_top_level_help_lists_every_command_without_configuration(tmp_path):
    listed = _flask(["--help"], {}, tmp_path).stdout
    for command in ("check-config", "sign-url", "db", "profiles"):
        assert f"  {command} " in listed


@pytest.mark.parametrize(
    "command", [["check-config"], ["sign-url", "alice"], ["db", "upgrade"], ["profiles", "list"], ["routes"]]
)
def test_a_real_command_without_configuration_ends_with_the_one_line_error_and_exit_code_2(command, tmp_path):
    result = _flask(command, {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr == "configuration error: AYRSHARE_API_KEY: is required but not set\n"
    assert result.stdout == ""
