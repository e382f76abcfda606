"""Run ``_writer_proc.py`` in a subprocess with timeouts, so a hang fails instead of blocking."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

WRITER = Path(__file__).with_name("_writer_proc.py")


class WriterProc:
    """A writer process; ``with WriterProc(...) as p`` SIGKILLs it on the way out if alive."""

    def __init__(self, path: Path, n_rounds: int, sleep_s: float = 0.0, hold: bool = False):
        args = [sys.executable, str(WRITER), str(path), str(n_rounds), str(sleep_s)]
        self.proc = subprocess.Popen(args + (["hold"] if hold else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.lines: list[str] = []
        self._partial = b""

    def wait_for(self, line: str, timeout: float = 120.0) -> None:
        """Read stdout until ``line`` appears; AssertionError on timeout or exit.

        Reads the raw pipe with ``os.read`` and splits lines itself: a buffered ``readline``
        could pull several lines into its buffer, and ``select`` would then wait for data
        that already arrived.
        """
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while line not in self.lines:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(timeout=left):
                self.kill()
                raise AssertionError(f"writer did not print {line!r} in {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")
                raise AssertionError(f"writer exited before {line!r}:\n{err}")
            *done, self._partial = (self._partial + chunk).split(b"\n")
            self.lines.extend(d.decode().strip() for d in done)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for a normal exit; return the exit code."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        assert self.proc.returncode == 0, err
        return self.proc.returncode

    def __enter__(self) -> WriterProc:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()
        self._sel.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
