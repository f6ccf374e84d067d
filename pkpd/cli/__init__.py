"""Command-line interface: ``pkpd <command> ...``.

Each command lives in its own module of this package and provides
``add_parser(subparsers)`` (registering its arguments and ``func``). Errors caused by
the user's input (:class:`pkpd.errors.PkpdError`, bad arguments) print one clear
message and exit with status 2, never a Python traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order `pkpd --help` lists them.
_COMMANDS = ["demo", "check", "pk", "models", "simulate", "fit", "forecast"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep the message plain
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from pkpd import __version__

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


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (also used as the console script)."""
    from pkpd.config import enable_x64
    from pkpd.errors import PkpdError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    enable_x64()
    try:
        status = args.func(args)
    except PkpdError as err:
        print(f"pkpd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pkpd {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
