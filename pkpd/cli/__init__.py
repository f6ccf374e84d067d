"""Command-line interface: ``pkpd <command> ...``.

Each command lives in its own module of this package and provides
``add_parser(subparsers)`` (registering its arguments and ``func``). Errors caused by
the user's input (:class:`pkpd.errors.PkpdError`, bad arguments) print one clear
message and exit with status 2, never a Python traceback.

Safety of the user's files and of finished work:

- every output path is checked before the work starts (:mod:`pkpd.cli._outputs`): no
  output onto an input, no folder, missing or unwritable folder; an existing output
  is announced before it is replaced, ``--no-clobber`` refuses it; outputs are written
  atomically (:mod:`pkpd.io`);
- Ctrl-C at any moment ends the run with status 130 and one line, leaving no partial
  or temporary file and any existing output untouched (:mod:`pkpd.cli._interrupt`).

XLA log noise: compiling some of pkpd's programs (the gradients of the ODE solves of
``fit``) makes XLA's algebraic simplifier print "Algebraic simplifier is likely stuck
in a circular simplification loop" as an ``E`` (error) log line, dozens of times per
run. The line is a compile-time diagnostic about XLA's own rewrite rules (the pass
stops after 50 rounds and the program is correct); it is not actionable for a user and
buries real messages. When ``main`` runs as the program (``pkpd ...``, ``python -m
pkpd ...``) it therefore sets ``TF_CPP_MIN_LOG_LEVEL=3`` (XLA's C++ log threshold: only
fatal messages) unless the user has set it (``TF_CPP_MIN_LOG_LEVEL=0 pkpd ...`` shows
XLA's log again), which takes effect when JAX has not been imported yet, and -- because
XLA reads that setting once, so it is too late when ``import pkpd`` has already loaded
JAX -- also drops exactly that line from the process's standard error
(:mod:`pkpd.cli._stderr`). Errors that matter reach the user as Python exceptions, not
through XLA's log. The line comes from compiling the subject-batched diffrax solve
(``jit_batch``) and the optimiser loop (``jit_run_chunk``) of ``pkpd fit``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command modules, in the order `pkpd --help` lists them.
_COMMANDS = ["demo", "check", "pk", "models", "simulate", "fit", "forecast", "plan", "report"]

#: XLA log lines dropped from the CLI's standard error (see the module docstring).
XLA_NOISE = (b"circular simplification loop",)

#: Commands whose work is split across the CPU's cores, each a JAX host device (a batch
#: forecast's patients in its inference: :mod:`pkpd.forecasting.devices`).
#: Not ``fit`` or ``demo``: with as many devices as chains NumPyro would run the chains with
#: ``pmap``, whose memory grows steadily on a CPU (benchmarks/nuts_friberg.py).
CORE_COMMANDS = ("forecast", "plan")


def _quiet_xla_logs() -> None:
    """Silence XLA's C++ log below FATAL for this process, unless the user chose a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _cores_as_devices() -> None:
    """One JAX host device per available CPU core (``--xla_force_host_platform_device_count``),
    unless the user's ``XLA_FLAGS`` set a count; takes effect when JAX's CPU backend has not
    started in this process yet (as in a CLI run)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep the message plain
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = _Parser(
        prog="pkpd",
        description=(
            "Bayesian PK/PD modelling of chemotherapy-induced myelosuppression: "
            "validate NONMEM-style datasets, simulate, fit and forecast blood counts."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pkpd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        module = importlib.import_module(f"pkpd.cli.{name}")
        module.add_parser(sub)
    return parser


def _caused_by_interrupt(err: BaseException) -> bool:
    """True when ``err`` is, or was raised while handling, a KeyboardInterrupt.

    An interrupt inside a JAX host callback can come back as another exception
    (an XLA runtime error) that carries the KeyboardInterrupt as its cause or context.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt) or "KeyboardInterrupt" in str(err)[:2000]:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (also used as the console script).

    With ``argv`` None the command line of the process is used and ``main`` is the
    program: the interrupt guard stays in place until the process exits, and XLA's
    "circular simplification loop" lines are filtered out of standard error.
    """
    from ._interrupt import InterruptGuard
    from ._stderr import StderrFilter

    as_program = argv is None
    noise = None
    if as_program:
        _quiet_xla_logs()
        noise = StderrFilter(XLA_NOISE)
        noise.start()
    guard = InterruptGuard("pkpd", stderr_fd=noise.real_fd if noise is not None else 2)
    guard.install()
    command = "pkpd"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        command = guard.label = f"pkpd {args.command}"
        if as_program and args.command in CORE_COMMANDS:
            _cores_as_devices()
        from ..config import enable_x64
        from ..errors import PkpdError

        enable_x64()
        try:
            status = args.func(args)
        except PkpdError as err:
            print(f"{command}: error: {err}", file=sys.stderr)
            return 2
        return int(status or 0)
    except BrokenPipeError:  # the reader went away (`pkpd models | head`): stop quietly, as Unix tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KeyboardInterrupt:  # only without the guard (another thread, or an embedding handler)
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if _caused_by_interrupt(err):
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        raise
    finally:
        if not as_program:
            guard.uninstall()
        if noise is not None:
            noise.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
