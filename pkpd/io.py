"""Atomic file output: a file is either written whole or not at all, and never half-replaced.

Every output pkpd writes goes through :func:`atomic_path` (or :func:`atomic_paths` for a
set of files that belong together): the content is written to a temporary file beside
the target, then renamed onto it. The temporary files still being written are
registered here, so that an interrupt can remove them (:func:`abandon_writes`) and
forbid any later rename: after an interrupt no output is replaced, not even by a
computation that carries on for a while (for instance one whose
``KeyboardInterrupt`` was swallowed inside a JAX host callback).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from .errors import PkpdError

__all__ = ["atomic_path", "atomic_paths", "write_text_atomic", "abandon_writes", "writes_abandoned"]

# Guards the registry and every rename; re-entrant so that a signal handler running in
# the thread that holds it (between two bytecodes of a commit) cannot deadlock.
_LOCK = threading.RLock()
_PENDING: set = set()
_ABANDONED = False


def abandon_writes(hold: bool = False) -> list:
    """Remove every temporary file being written and refuse all later commits.

    Parameters
    ----------
    hold : bool
        Keep the registry lock after returning (the caller is about to end the
        process): no other thread can then start or finish a write.

    Returns
    -------
    list of str
        The temporary files removed.
    """
    global _ABANDONED
    _LOCK.acquire()
    try:
        _ABANDONED = True
        removed = sorted(_PENDING)
        for tmp in removed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _PENDING.clear()
        return removed
    finally:
        if not hold:
            _LOCK.release()


def writes_abandoned() -> bool:
    """True once :func:`abandon_writes` has been called in this process."""
    return _ABANDONED


def _reset_for_tests() -> None:  # pragma: no cover - test helper
    global _ABANDONED
    with _LOCK:
        _ABANDONED = False
        _PENDING.clear()


def _commit(tmp: str, target: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``target`` (caller holds the lock)."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:  # link() fails if the target exists: no window in which it could be replaced
        os.link(tmp, target)
    except FileExistsError:
        raise PkpdError(f"{target} exists (created while this run was working): not replaced") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(target):
            raise PkpdError(f"{target} exists (created while this run was working): not replaced") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_paths(paths, suffixes=None, *, overwrite: bool = True):
    """Yield temporary paths beside ``paths``; on success all are renamed onto their targets.

    The renames happen together, under one lock, after the body has finished; if the
    body raises (or the process is interrupted, see :func:`abandon_writes`) every
    temporary file is removed and every existing target is left untouched.

    Parameters
    ----------
    paths : sequence of path-like
        Targets (their folders are created when missing).
    suffixes : sequence of str, optional
        Suffix of each temporary file (``".png"`` lets a writer infer the format).
    overwrite : bool
        If False an existing target is not replaced: :class:`~pkpd.errors.PkpdError`.

    Raises
    ------
    KeyboardInterrupt
        Writes were abandoned (the process is being interrupted).
    """
    targets = [Path(p) for p in paths]
    suffixes = list(suffixes) if suffixes is not None else [""] * len(targets)
    tmps = []
    try:
        for target, suffix in zip(targets, suffixes):
            target.parent.mkdir(parents=True, exist_ok=True)
            with _LOCK:
                if _ABANDONED:
                    raise KeyboardInterrupt
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
                _PENDING.add(tmp)
            os.close(fd)
            tmps.append(tmp)
        yield [Path(t) for t in tmps]
        umask = os.umask(0)
        os.umask(umask)
        with _LOCK:
            if _ABANDONED:
                raise KeyboardInterrupt
            if not overwrite:
                existing = [str(t) for t in targets if os.path.lexists(t)]
                if existing:
                    raise PkpdError(f"{', '.join(existing)} exists (created while this run was working): "
                                    "not replaced")
            for tmp, target in zip(tmps, targets):
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
                _commit(tmp, target, overwrite)
                _PENDING.discard(tmp)
    except BaseException:
        with _LOCK:
            for tmp in tmps:
                _PENDING.discard(tmp)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path, suffix: str = "", *, overwrite: bool = True):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises (or the process is interrupted), the temporary file is removed
    and any existing file at ``path`` is left untouched. With ``overwrite=False`` an
    existing ``path`` is never replaced (:class:`~pkpd.errors.PkpdError`).
    """
    with atomic_paths([path], [suffix], overwrite=overwrite) as (tmp,):
        yield tmp


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
