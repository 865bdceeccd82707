"""mlxd chat driven through a pseudo-terminal, the way a person types at it (Ctrl-C included)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from tests.conftest import add_tiny, mlxd_env

pytest.importorskip("mlx_lm")


class Terminal:
    """A child process on a pty: send keys, wait for text on its screen."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its controlling terminal is the pty
            # Ctrl-C must reach it even when the suite runs in the background of a shell
            # without job control, which starts it with SIGINT ignored (exec keeps that).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(argv[0], argv, env)
        self.screen = ""

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # the child has gone: EIO on Linux
            return False
        self.screen += data.decode(errors="replace")
        return bool(data)

    def expect(self, text: str, timeout: float = 120, start: int = 0) -> int:
        """Wait until ``text`` appears after position ``start``; its end position."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.screen.find(text, start)
            if at >= 0:
                return at + len(text)
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}; screen:\n{self.screen[-2000:]}")
            self._read(0.2)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("the chat did not exit")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def terminal(mlxd_home, tiny_model_dir):
    add_tiny(tiny_model_dir)
    opened = []

    def open_chat(*args: str) -> Terminal:
        t = Terminal([sys.executable, "-m", "mlxd", "chat", "tiny", *args], mlxd_env(mlxd_home))
        opened.append(t)
        return t

    yield open_chat
    for t in opened:
        t.close()


def test_a_scripted_chat_with_reset_stats_and_ctrl_c(terminal):
    # Greedy on random weights does not stop by itself: each reply runs until Ctrl-C.
    t = terminal("--max-tokens", "1000000", "--system", "Be brief.")
    pos = t.expect(">>> ")
    t.send("/stats\n")
    pos = t.expect("[no reply yet]", start=pos)

    for turn in ("Hello there", "Tell me a long story"):
        t.send(turn + "\n")
        pos = t.expect(turn, start=pos)
        # Random weights may stream bytes that are not yet valid text: give the reply a
        # moment to be under way, then interrupt it.
        time.sleep(1.0)
        t.send("\x03")
        pos = t.expect("[reply stopped]", start=pos)
        pos = t.expect(">>> ", start=pos)

    t.send("/stats\n")
    pos = t.expect("[last reply:", start=pos)
    stats = t.screen[pos : t.expect("]", start=pos)]
    assert "stopped" in stats and "(+0 reused" not in stats  # the first turn stayed cached

    t.send("/reset\n")
    pos = t.expect("[conversation cleared]", start=pos)
    t.send("/bogus\n")
    pos = t.expect("Error: unknown command /bogus", start=pos)
    t.send("\x04")  # Ctrl-D at the prompt leaves
    assert t.wait() == 0
