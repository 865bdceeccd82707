"""The CLI run in the test's process (Click's runner) on a server's MLXD_HOME, or as the
remote CLI against a server (MLXD_URL): what the server tests compare."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner


class Local:
    """The CLI, in this process, on the server's MLXD_HOME."""

    def __init__(self, home, env: dict[str, str | None] | None = None):
        self.home = home
        self.env = env or {}  # more environment (MLXD_URL and MLXD_TOKEN: the remote CLI)

    def invoke(self, *args: str, input: str | None = None):
        import mlxd.cli.context as context
        from mlxd.cli.main import cli

        env = {"MLXD_HOME": str(self.home), "MLXD_URL": None, "MLXD_TOKEN": None, **self.env}
        saved = {k: os.environ.get(k) for k in env}
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        context.reset()
        try:
            return CliRunner().invoke(cli, list(args), input=input)
        finally:
            context.reset()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def json(self, *args: str):
        result = self.invoke(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def error(self, *args: str) -> tuple[int, str]:
        result = self.invoke(*args)
        assert result.exit_code != 0, result.output
        return result.exit_code, result.stderr.strip().removeprefix("Error: ")
