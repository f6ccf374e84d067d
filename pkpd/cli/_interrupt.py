"""Ctrl-C for the command line: exit 130 with one line, at any moment, leaving no trace.

Python turns SIGINT into ``KeyboardInterrupt`` only when the main thread next runs
bytecode. A CLI run spends most of its time elsewhere: in XLA (compiling or running a
program, where the exception waits until the program ends), or in a JAX host callback
(where the exception is raised inside the callback and may be swallowed or turned into
another error, so the run carries on and replaces its output). And a process that
unwinds while XLA's threads are still working can crash in interpreter teardown.

So while a command runs, :class:`InterruptGuard` handles SIGINT itself:
:func:`signal.set_wakeup_fd` makes the C-level handler write the signal number to a
pipe at once, whatever the main thread is doing (the Python-level handler does
nothing, so no ``KeyboardInterrupt`` is raised anywhere); a watcher thread reading that
pipe then

1. abandons every output write in progress (:func:`pkpd.io.abandon_writes`: temporary
   files removed, no rename allowed any more, so an existing output stays untouched),
2. prints one line, ``pkpd <command>: interrupted``, to standard error,
3. ends the process with status 130 (128 + SIGINT) through :func:`os._exit`, without
   unwinding into code that might swallow the interrupt or crash in teardown.

The guard is installed only in the main thread, and only when SIGINT still has
Python's default handler (an embedding program keeps its own); otherwise the CLI falls
back to catching ``KeyboardInterrupt``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _flush_stdout(timeout: float = 0.5) -> None:
    """Flush what the command printed so far, without waiting long for a stuck pipe."""

    def flush():
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stdout must not block the exit
            pass

    t = threading.Thread(target=flush, daemon=True)
    t.start()
    t.join(timeout)


class InterruptGuard:
    """Handle SIGINT for one CLI run (see the module docstring).

    Parameters
    ----------
    label : str
        Prefix of the line printed on interrupt, e.g. ``"pkpd fit"``.
    stderr_fd : int
        File descriptor the line is written to (the real standard error).
    """

    def __init__(self, label: str, stderr_fd: int = 2):
        self.label = label
        self.stderr_fd = stderr_fd
        self._fire_lock = threading.Lock()
        self._installed = False
        self._old_handler = None
        self._old_wakeup = -1
        self._read_fd = self._write_fd = -1
        self._thread = None

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> bool:
        """Take over SIGINT; returns False (doing nothing) where that is not possible."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._old_handler = signal.signal(signal.SIGINT, self._handler)
        self._thread = threading.Thread(target=self._watch, name="pkpd-interrupt", daemon=True)
        self._thread.start()
        self._installed = True
        return True

    def uninstall(self) -> None:
        """Give SIGINT back to Python's handler and stop the watcher."""
        if not self._installed:
            return
        signal.signal(signal.SIGINT, self._old_handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._write_fd)  # the watcher reads end-of-file and returns
        self._thread.join(1.0)
        os.close(self._read_fd)
        self._installed = False

    def __enter__(self):
        self.install()
        return self

    def __exit__(self, *exc):
        self.uninstall()
        return False

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return
            if int(signal.SIGINT) in data:
                self.fire()

    def _handler(self, signum, frame) -> None:
        """Python-level handler: nothing to do, the watcher acts.

        A Python handler must be installed for the C-level handler to write to the
        wakeup pipe; acting here instead would run in the main thread, possibly in
        the middle of a rename (the watcher waits for renames to finish).
        """

    def fire(self) -> None:
        """Abandon the outputs, print the line and end the process with status 130."""
        if not self._fire_lock.acquire(blocking=False):
            return  # already ending the process
        from ..io import abandon_writes

        abandon_writes(hold=True)  # never released: no output can be replaced from now on
        _flush_stdout()
        try:
            os.write(self.stderr_fd, f"{self.label}: interrupted\n".encode())
        except OSError:
            pass
        os._exit(130)
