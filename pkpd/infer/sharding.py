"""Subjects sharded across devices: a population problem too large for one device on several.

A :class:`~pkpd.stats.population.PopulationProblem` holds its per-subject inputs as padded
arrays whose leading axis is the subject, ``[n_sub, ...]``: the observations
(``problem.arrays``), the solver's subject data (``problem.data``: dose events, start
times, component data, integration grids), the log covariate factors
(``problem.log_factor``) and column-valued parameters (``problem.column_values``). The
likelihood is one vmapped solve over that axis, so splitting the axis across devices
splits the work: with the arrays placed by :func:`shard_subjects` on a
:class:`jax.sharding.Mesh` with axis ``"subjects"`` (``NamedSharding(mesh,
PartitionSpec("subjects"))``), XLA's SPMD partitioner (GSPMD) runs each device's block of
subjects on that device and sums the log density across devices.

Two details matter:

* The subject count is padded up to a multiple of the device count (on top of the
  :func:`pkpd.buckets.bucket_size` padding the problem already has). Padded subjects
  repeat subject 0's inputs (as the problem's own padding does) with every observation
  masked out, and the NumPyro model only reads the first ``n_real`` subjects, so they
  contribute nothing.
* ``jax.jit`` embeds arrays a function closes over as constants (replicated, not
  partitioned; measured with jax 0.10). The subject arrays must therefore enter the
  compiled function as *arguments*: :func:`log_density` and :func:`numpyro_model` take
  them as an argument (``subjects``, from :func:`subject_arrays`), and the NumPyro model
  returned by :func:`numpyro_model` is meant for ``MCMC(..., jit_model_args=True)`` with
  ``mcmc.run(key, subjects)``.

>>> sharded = shard_subjects(problem)                    # all local devices
>>> f, z0 = log_density(sharded)                         # f(z, subjects) -> log density
>>> value, grad = jax.jit(jax.value_and_grad(f))(z0, subject_arrays(sharded))
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "subject_arrays", "with_subject_arrays", "pad_subjects", "shard_subjects", "subject_mesh",
           "log_density", "numpyro_model"]

#: Name of the mesh axis over which subjects are split.
AXIS = "subjects"

_FIELDS = ("arrays", "data", "log_factor", "column_values")


def subject_arrays(problem) -> dict:
    """The problem's per-subject arrays as one pytree ``{arrays, data, log_factor, column_values}``
    (every leaf ``[n_sub, ...]``)."""
    return {f: getattr(problem, f) for f in _FIELDS}


def with_subject_arrays(problem, subjects: dict):
    """A shallow copy of ``problem`` whose per-subject arrays are ``subjects`` (may be tracers)."""
    out = copy.copy(problem)
    for f in _FIELDS:
        setattr(out, f, subjects[f])
    return out


def pad_subjects(problem, n_sub: int):
    """A copy of ``problem`` padded to ``n_sub`` subjects (>= its ``n_sub``).

    New subjects repeat subject 0's inputs, with no fitted observation (``mask`` and
    ``cens`` False, host ``obs.mask`` False and ``obs.row`` -1): like the problem's own
    bucket padding, they are solved but never enter the likelihood.
    """
    old = problem.n_sub
    if n_sub < old:
        raise ValueError(f"cannot pad {old} subjects down to {n_sub}")
    if n_sub == old:
        return copy.copy(problem)
    extra = n_sub - old

    def pad(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] != old:
            return x
        return jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)], axis=0)

    tree = jax.tree_util.tree_map(pad, subject_arrays(problem))
    no = jnp.arange(n_sub) >= old
    for key in ("mask", "cens"):
        tree["arrays"][key] = jnp.where(no[:, None], False, tree["arrays"][key])
    out = with_subject_arrays(problem, tree)
    out.n_sub = n_sub
    obs = problem.obs
    fields = {}
    for name in obs._fields if hasattr(obs, "_fields") else vars(obs):
        v = np.asarray(getattr(obs, name))
        if v.ndim and v.shape[0] == old:
            v = np.concatenate([v, np.repeat(v[:1], extra, axis=0)], axis=0)
            if name in ("mask", "cens", "subject_mask"):
                v[old:] = False
            elif name == "row":
                v[old:] = -1
        fields[name] = v
    out.obs = obs._replace(**fields) if hasattr(obs, "_replace") else type(obs)(**fields)
    return out


def subject_mesh(devices=None) -> Mesh:
    """A one-axis mesh ``("subjects",)`` over ``devices`` (default: all of ``jax.devices()``)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("no devices to shard over")
    return Mesh(np.array(devices), (AXIS,))


def shard_subjects(problem, devices=None):
    """A copy of ``problem`` whose per-subject arrays are split across ``devices``.

    Parameters
    ----------
    problem : PopulationProblem
    devices : sequence of jax.Device or int, optional
        The devices (default: all of ``jax.devices()``); an int ``n`` takes the first ``n``.

    Returns
    -------
    PopulationProblem
        A shallow copy with ``n_sub`` padded to a multiple of the device count
        (:func:`pad_subjects`), every ``[n_sub, ...]`` array placed with
        ``NamedSharding(mesh, PartitionSpec("subjects"))`` and any other leaf replicated;
        ``.mesh`` holds the mesh. Use its arrays as arguments of the compiled function
        (:func:`log_density`, :func:`numpyro_model`): arrays closed over are compiled in
        as replicated constants.
    """
    if isinstance(devices, int):
        devices = jax.devices()[:devices]
    mesh = subject_mesh(devices)
    n_dev = mesh.devices.size
    n_sub = -(-problem.n_sub // n_dev) * n_dev
    out = pad_subjects(problem, n_sub)
    split = NamedSharding(mesh, PartitionSpec(AXIS))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(x):
        x = jnp.asarray(x)
        return jax.device_put(x, split if x.ndim and x.shape[0] == n_sub else whole)

    out = with_subject_arrays(out, jax.tree_util.tree_map(place, subject_arrays(out)))
    out.mesh = mesh
    return out


def log_density(problem, init: dict | None = None):
    """The joint log density in NumPyro's unconstrained space, as a function of the subject arrays.

    Returns
    -------
    f : callable
        ``f(z, subjects) -> log density`` (minus NumPyro's potential energy), ``z`` a dict
        of unconstrained latent values, ``subjects`` a pytree from :func:`subject_arrays`.
        Jit it (``jax.jit(jax.value_and_grad(f))``): with sharded ``subjects`` it runs
        partitioned across their devices.
    z0 : dict
        Unconstrained values at ``init`` (default ``problem.initial_values()``).
    """
    from numpyro.infer import init_to_value
    from numpyro.infer.util import initialize_model

    model = numpyro_model(problem)
    values = problem.initial_values() if init is None else init
    info = initialize_model(jax.random.PRNGKey(0), model, model_args=(subject_arrays(problem),),
                            init_strategy=init_to_value(values=values), dynamic_args=True)
    potential_gen = info.potential_fn

    def f(z, subjects):
        return -potential_gen(subjects)(z)

    return f, info.param_info.z


def numpyro_model(problem):
    """``model(subjects, observed=True)``: :meth:`PopulationProblem.numpyro_model` with the
    subject arrays as an argument (for ``MCMC(..., jit_model_args=True)``; ``subjects``
    from :func:`subject_arrays`)."""

    def model(subjects, observed: bool = True):
        return with_subject_arrays(problem, subjects).numpyro_model()(observed)

    return model
