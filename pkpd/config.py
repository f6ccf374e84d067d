"""Explicit global switches. Library modules never change JAX's configuration on import.

Entry points (the CLI, benchmark scripts, test configuration) call :func:`enable_x64`.
"""

from __future__ import annotations


def enable_x64(enable: bool = True) -> None:
    """Make JAX use float64 by default (``jax_enable_x64``).

    pkpd's numerics assume float64 (tight ODE tolerances, log-densities summed over
    hundreds of observations). Call this once, before any array is created.
    """
    import jax

    jax.config.update("jax_enable_x64", bool(enable))


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache so compiled programs survive restarts.

    Parameters
    ----------
    path : str, optional
        Cache folder; defaults to ``$PKPD_CACHE_DIR`` or ``~/.cache/pkpd/jax``.

    Returns
    -------
    str
        The folder used.
    """
    import os

    import jax

    folder = path or os.environ.get("PKPD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "pkpd", "jax"
    )
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    _runtime_checks_as_nan()
    return folder


def _runtime_checks_as_nan() -> None:
    """Make equinox's runtime checks (``eqx.error_if``, used inside diffrax) return NaN.

    JAX does not cache programs with host callbacks, and equinox implements a failing
    check that raises as a host callback, so without this no ODE program is ever cached.
    pkpd already treats NaN states as a failed solve (a -inf log density, a failed
    forecast draw). An ``EQX_ON_ERROR`` set by the user in the environment is respected.
    """
    import os

    if "EQX_ON_ERROR" in os.environ:
        return
    try:
        import equinox._errors as eqx_errors  # the mode is read from here at trace time
    except ImportError:  # pragma: no cover - equinox layout changed: keep its default
        return
    if getattr(eqx_errors, "EQX_ON_ERROR", None) == "raise":
        eqx_errors.EQX_ON_ERROR = "nan"
