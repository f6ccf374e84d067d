"""Ctrl-C at any moment: exit 130, one line, no traceback, no temporary file, old output intact.

Every test starts a real ``pkpd simulate`` process (``python -m pkpd``, or a ``-c`` shim
that wraps one library function to mark a moment and hold it there) and sends it a
real SIGINT with ``os.kill`` at that moment: during the imports, during an XLA
computation, inside a JAX host callback, and during the final write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SIMULATE = ["simulate", "kloft2006_docetaxel", "--regimen", "100 mg/m2 1h q21d x1", "--n", "2",
            "--covariates", "BSA=1.8,SEX=1,PERF=0,PC=0,AAG=1.34", "--out", "out.csv"]
PREVIOUS = "previous output\n"


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """Children start with SIGINT at its default, as a program started from a terminal does.

    A process started in the background by a shell without job control (``cmd &`` in a
    script, as CI runners may do) inherits SIGINT *ignored*; Python then keeps it ignored
    and so, rightly, does the CLI. These tests are about an interactive user's Ctrl-C, so
    while each runs this (pytest) process handles SIGINT with Python's own handler: a
    handled signal is reset to its default in an exec'd child, an ignored one would stay
    ignored. (``preexec_fn`` would do it in the child, but forces a fork of this
    multithreaded, JAX-importing process.)
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is not None:  # None: a handler installed outside Python, which cannot be put back
        signal.signal(signal.SIGINT, previous)


class Run:
    """A subprocess whose stdout and stderr are read by threads, line by line."""

    def __init__(self, cmd, cwd):
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self._seen = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _read(self, stream, lines):
        for line in stream:
            with self._lock:
                lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, stream="out", timeout=240.0):
        """Block until a line of ``stream`` satisfies ``predicate`` (or the process ends)."""
        lines = self.out if stream == "out" else self.err
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if any(predicate(line) for line in lines):
                    return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                with self._lock:
                    return any(predicate(line) for line in lines)
            time.sleep(0.02)
        return False

    def interrupt_and_wait(self, timeout=120.0):
        """SIGINT now; returns (exit status, seconds until exit)."""
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._threads:
            t.join(5)
        return rc, time.monotonic() - t0


def shim(prelude: str, argv) -> list:
    """``python -c``: run ``prelude``, then ``pkpd.cli.main()`` as the program with ``argv``."""
    code = f"import sys\nsys.argv[1:] = {list(argv)!r}\n{prelude}\nfrom pkpd.cli import main\nsys.exit(main())\n"
    return [sys.executable, "-c", code]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "out.csv").write_text(PREVIOUS)
    return tmp_path


def assert_clean(run, rc, workdir, *, noise=("import time:",)):
    err = [line for line in run.err if line.strip() and not line.startswith(noise)
           and "exists and will be replaced" not in line]  # the notice printed at the start
    text = "\n".join(run.err)
    assert rc == 130, f"exit status {rc}, stderr:\n{text}"
    assert "Traceback" not in text, text
    assert len(err) == 1 and err[0] in ("pkpd simulate: interrupted", "pkpd: interrupted"), text
    assert (workdir / "out.csv").read_text() == PREVIOUS, "the existing output was replaced"
    assert sorted(p.name for p in workdir.iterdir()) == ["out.csv"], "a temporary or partial file was left"
    assert not any(line.startswith("wrote") for line in run.out), run.out


def _root_imports_jax() -> bool:
    code = "import sys, pkpd.cli; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip() == "True"


def test_interrupt_during_imports(workdir):
    """SIGINT while JAX is being imported (start-up): clean exit, not a KeyboardInterrupt traceback.

    The CLI's guard is installed at the start of ``pkpd.cli.main``; an interrupt can only
    be caught there if importing ``pkpd.cli`` does not already import JAX, i.e. if the
    package root imports its submodules lazily.
    """
    assert not _root_imports_jax(), "importing pkpd.cli must not import JAX (lazy package root)"
    run = Run([sys.executable, "-X", "importtime", "-m", "pkpd", *SIMULATE], workdir)
    assert run.wait_for(lambda line: line.startswith("import time:") and "jax" in line, stream="err")
    rc, _ = run.interrupt_and_wait()
    assert_clean(run, rc, workdir)


def test_interrupt_during_xla_computation(workdir):
    """SIGINT while the main thread waits on a long XLA program: the run ends at once."""
    prelude = """
import jax, jax.numpy as jnp
from pkpd.config import enable_x64
enable_x64()
import pkpd.stats.simulate as S
_orig = S.simulate
def slow(*a, **k):
    spin = jax.jit(lambda x: jax.lax.while_loop(lambda c: c[0] < 3e10,
                                                lambda c: (c[0] + 1.0, c[1] * 0.9999999 + 1e-9), (0.0, x))[1])
    print("COMPUTING", flush=True)
    spin(jnp.float64(1.0)).block_until_ready()
    return _orig(*a, **k)
S.simulate = slow
"""
    run = Run(shim(prelude, SIMULATE), workdir)
    assert run.wait_for(lambda line: line == "COMPUTING"), run.err
    time.sleep(1.0)
    rc, seconds = run.interrupt_and_wait()
    assert_clean(run, rc, workdir)
    assert seconds < 10, f"took {seconds:.1f} s to stop: the interrupt waited for the XLA program"


def test_interrupt_inside_jax_callback_does_not_let_the_run_finish(workdir):
    """SIGINT while Python code runs inside a JAX host callback cannot be swallowed."""
    prelude = """
import time
import jax, jax.numpy as jnp
from pkpd.config import enable_x64
enable_x64()
import pkpd.stats.simulate as S
_orig = S.simulate
def cb(x):
    print("IN CALLBACK", flush=True)
    time.sleep(6)
    return x
def slow(*a, **k):
    f = jax.jit(lambda x: jax.pure_callback(cb, jax.ShapeDtypeStruct((), jnp.float64), x))
    f(jnp.float64(1.0)).block_until_ready()
    return _orig(*a, **k)
S.simulate = slow
"""
    run = Run(shim(prelude, SIMULATE), workdir)
    assert run.wait_for(lambda line: line == "IN CALLBACK"), run.err
    time.sleep(0.5)
    rc, seconds = run.interrupt_and_wait()
    assert_clean(run, rc, workdir)
    assert seconds < 5, f"took {seconds:.1f} s to stop"


def test_interrupt_during_final_write(workdir):
    """SIGINT while the output is being written: no partial or temporary file, old file intact."""
    prelude = """
import time
import pandas as pd
_orig = pd.DataFrame.to_csv
def slow_to_csv(self, path=None, *a, **k):
    result = _orig(self, path, *a, **k)
    print("WRITING", flush=True)
    time.sleep(8)
    return result
pd.DataFrame.to_csv = slow_to_csv
"""
    run = Run(shim(prelude, SIMULATE), workdir)
    assert run.wait_for(lambda line: line == "WRITING"), run.err
    assert any(p.name.startswith(".out.csv.") for p in workdir.iterdir()), "no temporary file while writing"
    rc, seconds = run.interrupt_and_wait()
    assert_clean(run, rc, workdir)
    assert seconds < 5, f"took {seconds:.1f} s to stop"


def test_uninterrupted_run_replaces_the_output(workdir):
    """Control: the same command, not interrupted, replaces the file and says so."""
    proc = subprocess.run([sys.executable, "-m", "pkpd", *SIMULATE], cwd=workdir, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "replaced" in proc.stdout and "out.csv" in proc.stdout
    assert "out.csv exists and will be replaced" in proc.stderr
    assert (workdir / "out.csv").read_text().startswith("ID,")
    assert sorted(p.name for p in workdir.iterdir()) == ["out.csv"]
