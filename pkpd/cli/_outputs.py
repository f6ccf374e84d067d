"""Output paths of a CLI command, checked before any work starts.

A command lists its inputs (data file, model card, saved fit) and its outputs;
:func:`plan_outputs` refuses, with one clear message (exit status 2), any output that

- is one of the inputs, or a link (symbolic or hard) to one: ``pkpd forecast --data
  p.csv --json p.csv`` would otherwise replace the patient's data;
- names the same file as another output;
- is a folder, or exists but is not a regular file (``/dev/null``, a pipe);
- lies in a folder that does not exist, is not a folder, or cannot be written (tested
  by creating and removing a temporary file there, which also catches read-only file
  systems);
- exists and is read-only, or exists while ``--no-clobber`` is given.

An existing output that will be replaced is announced at once, on standard error
(``pkpd fit: fit.nc exists and will be replaced when the run succeeds``), and the
final ``wrote`` line says ``(replaced the previous file)``. Outputs are written
atomically (:mod:`pkpd.io`): an interrupted or failed run leaves the old file as it was.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import PkpdError


@dataclass(frozen=True)
class Output:
    """One checked output file.

    Attributes
    ----------
    option : str
        The option that named it (``"--out"``) or a description.
    path : pathlib.Path
        The path as given.
    existed : bool
        The file existed when the run started (it will be replaced).
    """

    option: str
    path: Path
    existed: bool

    def wrote(self) -> str:
        """``"wrote PATH"``, plus ``" (replaced the previous file)"`` when it existed."""
        return f"wrote {self.path}" + (" (replaced the previous file)" if self.existed else "")


def add_output_options(p) -> None:
    """``--no-clobber``: refuse to replace an existing output file."""
    p.add_argument("--no-clobber", action="store_true",
                   help="refuse to replace an existing output file (exit 2 before any work)")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _writable_folder(folder: Path) -> str | None:
    """None when a file can be created in ``folder``, else the reason."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def _check_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise PkpdError(f"{what}: the folder {str(folder)!r} does not exist (create it first)")
    if not folder.is_dir():
        raise PkpdError(f"{what}: {str(folder)!r} is not a folder")
    reason = _writable_folder(folder)
    if reason:
        raise PkpdError(f"{what}: cannot write in the folder {str(folder)!r} ({reason})")


def plan_outputs(command: str, outputs, inputs=(), *, no_clobber: bool = False, announce: bool = True) -> list:
    """Check every output before the work starts (see the module docstring).

    Parameters
    ----------
    command : str
        For messages, e.g. ``"fit"``.
    outputs : iterable of (option, path)
        Output files; ``path`` None is skipped.
    inputs : iterable of (option, path)
        Files the command reads; names that are not existing files (a model card
        given by name) are ignored.
    no_clobber : bool
        Refuse an existing output.
    announce : bool
        Print one line on standard error for each existing output that will be replaced.

    Returns
    -------
    list of Output

    Raises
    ------
    PkpdError
        The first problem found, naming the option and the path.
    """
    read = [(opt, Path(p)) for opt, p in inputs if p is not None and Path(p).is_file()]
    planned = []
    for option, path in outputs:
        if path is None:
            continue
        if not str(path).strip():
            raise PkpdError(f"{option}: empty file name")
        path = Path(path)
        what = f"{option} {str(path)!r}"
        for in_option, in_path in read:
            if _same_file(path, in_path):
                link = "" if os.path.abspath(path) == os.path.abspath(in_path) else \
                    " (the same file under another name or through a link)"
                raise PkpdError(f"{what} is the input {in_option} {str(in_path)!r}{link}: refusing to write "
                                "an output onto an input (choose another file name)")
        for other in planned:
            if os.path.realpath(other.path) == os.path.realpath(path):
                raise PkpdError(f"{what} and {other.option} name the same file (expected different files)")
        if path.is_dir():
            raise PkpdError(f"{what} is a folder (expected a file name, e.g. {str(path / 'out')!r}...)")
        existed = os.path.lexists(path)
        if existed:
            mode = os.stat(path).st_mode if path.exists() else 0
            if path.exists() and not stat.S_ISREG(mode):
                raise PkpdError(f"{what} exists and is not a regular file (expected a file name)")
            if path.exists() and not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                raise PkpdError(f"{what} exists and is read-only: not replaced")
            if no_clobber:
                raise PkpdError(f"{what} exists and --no-clobber is given: not replaced")
        _check_folder(path.parent if str(path.parent) else Path("."), what)
        planned.append(Output(option, path, existed))
    if announce:
        for out in planned:
            if out.existed:
                print(f"pkpd {command}: {out.path} exists and will be replaced when the run succeeds "
                      "(--no-clobber refuses)", file=sys.stderr)
    return planned


def plan_folder(command: str, option: str, folder, names, inputs=(), *, no_clobber: bool = False) -> list:
    """Check an output folder (created at the end) and the files that will be written in it.

    The folder may exist (then it must be a writable folder) or not (then its parent
    must exist and be writable); a file in its place is an error.
    """
    folder = Path(folder)
    what = f"{option} {str(folder)!r}"
    if folder.exists() and not folder.is_dir():
        raise PkpdError(f"{what} exists and is not a folder (expected a folder for the outputs)")
    if folder.exists():
        _check_folder(folder, what)
        return plan_outputs(command, [(f"{option} file", folder / n) for n in names], inputs, no_clobber=no_clobber)
    parent = folder.parent if str(folder.parent) else Path(".")
    _check_folder(parent, what)
    for in_option, in_path in inputs:
        if in_path is not None and os.path.realpath(folder) == os.path.realpath(in_path):
            raise PkpdError(f"{what} is the input {in_option}: refusing to write there")
    return [Output(f"{option} file", folder / n, False) for n in names]
