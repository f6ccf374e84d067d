"""The installed package version (``pkpd-myelo``), or the source tree's when not installed."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("pkpd-myelo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"
