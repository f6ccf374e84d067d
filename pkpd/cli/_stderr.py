"""Drop known-useless native log lines from the process's standard error.

XLA writes its C++ log straight to file descriptor 2, so it cannot be filtered through
``sys.stderr``. :class:`StderrFilter` puts a pipe in place of descriptor 2 and a thread
copies everything from the pipe to the real standard error, line by line, except the
lines that contain one of the given byte strings (see :mod:`pkpd.cli` for the one
dropped and why). Python's own ``sys.stderr`` writes go through the same pipe, in order.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading


class StderrFilter:
    """Filter descriptor 2 while started.

    Parameters
    ----------
    drop : tuple of bytes
        A line containing any of these is not copied.

    Attributes
    ----------
    real_fd : int
        A descriptor of the real standard error (valid after :meth:`start`, kept open
        after :meth:`stop`), for writing past the filter.
    """

    def __init__(self, drop):
        self.drop = tuple(drop)
        self.real_fd = 2
        self._thread = None
        self._read_fd = -1
        self._active = False

    def start(self) -> bool:
        """Install the pipe; False (nothing changed) when descriptor 2 is not usable."""
        try:
            self.real_fd = os.dup(2)
        except OSError:
            return False
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._copy, name="pkpd-stderr", daemon=True)
        self._thread.start()
        self._active = True
        return True

    def _keep(self, line: bytes) -> bool:
        return not any(d in line for d in self.drop)

    def _write(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self.real_fd, data)
            except OSError:
                return
            data = data[n:]

    def _copy(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if self._keep(line))
            if out:
                self._write(out)
        if pending and self._keep(pending):
            self._write(pending)
        with contextlib.suppress(OSError):
            os.close(self._read_fd)

    def stop(self) -> None:
        """Put the real standard error back on descriptor 2 and copy what is left."""
        if not self._active:
            return
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(self.real_fd, 2)  # closes the pipe's last write end: the thread sees the end
        self._thread.join(5.0)
        self._active = False
