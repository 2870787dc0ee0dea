"""Child processes of the tests: a free port for torchrun jobs, and children killed at a chosen point (SIGKILL once the
child prints a marker)."""
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List


def free_port() -> int:
    """A TCP port of the loopback address that nothing listens on now (a torchrun job's master port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_when_printed(code: str, args: List[str], marker: str, env: Dict[str, str], cwd, timeout: float) -> None:
    """Runs ``python -c code *args`` and SIGKILLs it as soon as it prints a line holding ``marker``.

    Raises:
        AssertionError: the child ended, or ``timeout`` seconds passed, before it printed ``marker``.
    """
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env, cwd=cwd)
    try:
        deadline, line = time.monotonic() + timeout, ""
        while marker not in line and time.monotonic() < deadline and child.poll() is None:
            line = child.stdout.readline()
        assert marker in line, f"the child never printed {marker!r}, the point to be killed at"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
