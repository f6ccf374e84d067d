"""Test configuration: float64 everywhere, and the location of the shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkpd.config import enable_compilation_cache, enable_x64

enable_x64()
# Tests build the same model structures repeatedly (every fit makes new jitted functions):
# JAX's persistent cache turns the repeated compilations into cache hits.
enable_compilation_cache(os.environ.get("PKPD_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "pkpd", "jax-tests")))

#: ``../shared/external`` beside the checkout (or $PKPD_EXTERNAL), used by opt-in tests.
EXTERNAL = Path(os.environ.get("PKPD_EXTERNAL", Path(__file__).resolve().parents[1].parent / "shared" / "external"))


@pytest.fixture
def external():
    """Path to the shared reference datasets; skips the test with a reason when absent."""
    if not EXTERNAL.is_dir():
        pytest.skip(f"reference datasets not found at {EXTERNAL} (set PKPD_EXTERNAL to run this test)")
    return EXTERNAL


def assert_directional_derivatives(f, flat, grad, *, n, seed, h=1e-5, rtol=1e-4, atol=1e-4):
    """Gradient against central finite differences along ``n`` random directions.

    ``f(x)`` returns ``(value, grad)``; directions are scaled by ``max(|x|, 0.1)`` so each
    step stays inside the support (positive SDs) and then normalised.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = np.maximum(np.abs(np.asarray(flat)), 0.1)
    for _ in range(n):
        v = rng.normal(size=np.shape(flat)) * scale
        v /= np.linalg.norm(v)
        fd = (float(f(flat + h * v)[0]) - float(f(flat - h * v)[0])) / (2 * h)
        assert fd == pytest.approx(float(np.asarray(grad) @ v), rel=rtol, abs=atol)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each test module's compiled programs when it ends: a worker runs many modules
    (``--dist loadfile``) and JAX keeps every executable in memory otherwise (a worker grew to
    6 GB), which the later, larger models (21-state marrow) then compile on top of. Programs
    needed again come back from the persistent cache."""
    yield
    import jax

    jax.clear_caches()
