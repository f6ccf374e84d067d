"""Independent rows (a batch forecast's patients) split across the local devices.

A batch forecast's patients are independent: their inference is one computation batched
over a leading *row* axis. With several local devices the rows are split across them
(:func:`jax.shard_map` over a one-axis mesh, :data:`DEVICE_AXIS`), each device running its
block of rows. On a CPU, JAX runs one computation on one core; several *host* devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts, which ``pkpd
forecast`` and ``pkpd plan`` set) give each core its block of patients.

The split needs a row count that is a multiple of the device count, and pays only when
every device gets the same number of real rows: :func:`deal_rows` extends the rows (copies
of row 0, to be skipped or discarded) and deals the real ones round-robin (real row ``i`` to
device ``i % d``); :func:`undeal_rows` restores the original order. With one device every
function here is the identity.

Compare :mod:`pkpd.infer.sharding`, which splits the *subjects of one population
likelihood* across devices (GSPMD over a sum); here the rows never meet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DEVICE_AXIS", "device_mesh", "over_devices", "rows_for_devices", "balanced_rows", "deal_rows",
           "undeal_rows"]

#: Mesh axis over which the rows are split.
DEVICE_AXIS = "rows"


def device_mesh():
    """A one-axis mesh (:data:`DEVICE_AXIS`) of the local devices, or None with one device."""
    devices = jax.local_devices()
    return jax.sharding.Mesh(np.array(devices), (DEVICE_AXIS,)) if len(devices) > 1 else None


def over_devices(f):
    """``f`` (every argument and output batched on its leading axis, independent rows) with the
    rows split across the local devices when there are several (:func:`jax.shard_map`), else ``f``.

    The leading axis must be a multiple of the device count (:func:`rows_for_devices`). Rows are
    independent and each keeps its own random key, so the split changes a result only through
    floating-point rounding (the compiled programs differ in their batch shapes: a forecast's
    Laplace draws agree to ~1e-10 relative), which a NUTS chain's accept/reject steps can
    amplify into a different, equally valid chain: a fixed seed gives identical results for a
    given device count.
    """
    mesh = device_mesh()
    if mesh is None:
        return f
    spec = jax.sharding.PartitionSpec(DEVICE_AXIS)
    return jax.shard_map(f, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def rows_for_devices(n: int, n_devices: int | None = None) -> int:
    """``n`` rounded up to a multiple of the device count (default: the local devices')."""
    d = n_devices or len(jax.local_devices())
    return -(-n // d) * d


def balanced_rows(n_real: int, n_rows: int, n_devices: int | None = None) -> np.ndarray:
    """Order of ``n_rows`` rows (the first ``n_real`` real, the rest padding) that gives each of the
    devices' equal blocks (:func:`over_devices`; default: the local devices) the same number of
    real rows, +-1: real row ``i`` goes to device ``i % d``. The identity with one device."""
    d = n_devices or len(jax.local_devices())
    if n_rows % d:
        raise ValueError(f"n_rows must be a multiple of the device count {d}, got {n_rows}")
    per = n_rows // d
    padding = iter(range(n_real, n_rows))
    blocks = []
    for k in range(d):
        rows = list(range(k, n_real, d))
        blocks += rows + [next(padding) for _ in range(per - len(rows))]
    return np.asarray(blocks)


def _extend_rows(tree, n: int):
    """Leading axis of every leaf extended to ``n`` rows by repeating row 0."""
    def extend(a):
        a = jnp.asarray(a)
        if a.shape[0] >= n:
            return a
        return jnp.concatenate([a, jnp.repeat(a[:1], n - a.shape[0], axis=0)])

    return jax.tree_util.tree_map(extend, tree)


def deal_rows(tree, n_real: int):
    """Rows of ``tree`` (leading axis; the first ``n_real`` real, any further ones padding)
    extended to a multiple of the device count and dealt to the devices (:func:`balanced_rows`).

    Returns
    -------
    dealt : pytree
        ``tree`` with its rows reordered (and extended by copies of row 0).
    order : numpy.ndarray of int
        ``dealt`` row ``k`` is original row ``order[k]`` (``>= n_real``: padding); pass it to
        :func:`undeal_rows`.
    """
    n = jax.tree_util.tree_leaves(tree)[0].shape[0]
    n_rows = rows_for_devices(n)
    order = balanced_rows(n_real, n_rows)
    return jax.tree_util.tree_map(lambda a: a[order], _extend_rows(tree, n_rows)), order


def undeal_rows(tree, order: np.ndarray):
    """The rows of a :func:`deal_rows` result (or of what was computed from it, row by row) back
    in their original order; the first ``n_real`` rows are the real ones."""
    back = np.argsort(order)
    return jax.tree_util.tree_map(lambda a: a[back], tree)
