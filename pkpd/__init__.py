"""pkpd: Bayesian PK/PD modelling of chemotherapy-induced myelosuppression in JAX.

Importing pkpd changes no global JAX setting; call :func:`pkpd.enable_x64` at your
entry point (the CLI does) before creating arrays.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("pkpd-myelo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

from .config import enable_compilation_cache as enable_compilation_cache
from .config import enable_x64 as enable_x64
from .errors import DatasetError as DatasetError
from .errors import ModelError as ModelError
from .errors import PkpdError as PkpdError
