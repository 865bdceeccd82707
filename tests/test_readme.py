"""The README's tour works as printed on a fresh MLXD_HOME."""

from __future__ import annotations

import os
import re
import shlex
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_mlxd

README = Path(__file__).resolve().parent.parent / "README.md"


def tour_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"## A tour\n.*?```\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0]
        for part in line.split(";"):
            words = shlex.split(part)
            if words:
                assert words[0] == "mlxd", part
                commands.append(words[1:])
    return commands


@pytest.mark.daemon
def test_the_tour_runs_as_printed(mlxd_home):
    commands = tour_commands()
    assert ["daemon", "start"] in commands and len(commands) >= 10
    try:
        for args in commands:
            proc = run_mlxd(*args, timeout=300)
            assert proc.returncode == 0, f"mlxd {' '.join(args)}: {proc.stderr}"
    finally:
        pidfile = mlxd_home / "daemon.pid"
        if pidfile.exists():  # the tour stops its daemon; if it failed first, we do
            pid = int(pidfile.read_text().split()[0])
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGTERM)
                psutil.Process(pid).wait(30)
