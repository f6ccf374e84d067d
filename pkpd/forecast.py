r"""Individualised forecasts of blood counts: ``pkpd.forecast(prior, patient, regimen)``.

The per-patient model is the population model of :mod:`pkpd.statmodel` with the
population part replaced by a prior:

* **card prior** (a model-card name or :class:`pkpd.Model`): typical values (with the
  card's covariate effects), IIV SDs ``omega`` and residual SDs ``sigma`` are the card's
  values (plug-in);
* **fit prior** (a :class:`pkpd.Fit` or the path of a saved fit): the population
  quantities are *integrated*. Their posterior draws are mapped to the unconstrained
  scale, ``u = (log TV_p, log omega_p, log sigma_s)``, and approximated by a multivariate
  normal ``N(m, C)`` (sample mean and covariance); with a full IIV covariance the
  posterior-mean correlation matrix is used. Each patient gets its own copy
  ``u_i = m + chol(C) v_i``, ``v_i ~ N(0, I)``, sampled jointly with the random effects.
  A MAP fit (one draw) has no spread, so its point estimate is plugged in.

Patient ``i``'s random effects are non-centred, ``eta_i = omega * (L z_i)``,
``z_i ~ N(0, I)`` (``L`` the Cholesky factor of the IIV correlation, identity for a
diagonal IIV). Every latent variable is therefore standard normal a priori and
unconstrained, and the log density of patient ``i`` is

.. math::

    \log p(x_i \mid y_i) = -\tfrac12 \lVert x_i \rVert^2 + \sum_j \ell_{ij}(x_i) + c,
    \qquad x_i = (z_i, v_i),

with the pointwise log-likelihood :math:`\ell_{ij}` computed by
:meth:`pkpd.statmodel.PopulationProblem.pointwise_loglik` (same residual-error and
censoring code as population fits). Patients are independent: they are processed by
one vectorised (``vmap``) computation over the patient axis.

Inference (``method``):

* ``"nuts"``: NumPyro's NUTS kernel (:func:`numpyro.infer.hmc.hmc`), one chain per patient,
  started at the Laplace mode (below) with the Laplace covariance as a dense mass matrix;
  ``warmup`` iterations tune the step size, then ``draws`` draws, all inside one compiled
  function;
* ``"laplace"``: the posterior mode (BFGS, :func:`jax.scipy.optimize.minimize`) and the
  Hessian there; ``draws`` draws from the normal approximation.

The latent dimension is small (3 random effects for the Kloft card), so gradients and
Hessians use forward-mode sensitivities of the ODE solve (``SolverOptions(adjoint=
"forward")``, forced).

No recompilation: every array is padded to bucketed sizes (patients, observations with a
floor of ``min_obs``, doses, grid length) and the compiled functions take the data as
arguments, so a new patient or one more observation within the same buckets reuses the
compiled code (:func:`trace_counts` counts traces).

Forecast output: for every draw, patient and regimen, the trajectory of ``lineage`` on an
hourly grid from 0 to ``max(last record, last planned dose) + horizon`` (common to all
patients of a call), and endpoint summaries (:func:`pkpd.report.patient_summary`) over
the *forecast cycle*: from ``after`` = the first planned dose of the regimen, or, without
planned doses, the last dose given so far (0 without any dose). The baseline for
"recovery to baseline" is each draw's individual ``Circ0`` (the patient's own baseline).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import endpoints as ep
from .buckets import bucket_size
from .errors import PkpdError
from .model import Model, load_model
from .report import fan_chart, forecast_json, patient_summary, patient_table, write_json
from .solve import SolverOptions, predict_outputs
from .statmodel import FitSpec, PopulationProblem

__all__ = ["forecast", "Forecast", "parse_horizon", "trace_counts", "PatientProblem"]

#: Number of times each compiled function has been traced (a test hook: a trace means a compile).
_TRACES = {"infer": 0, "trajectories": 0}

#: Observation arrays are padded to at least this many slots per patient (one compile
#: covers patients with up to 16 observations; padding is nearly free).
MIN_OBS = 16

_NO_REGIMEN = "doses in data"


def trace_counts() -> dict:
    """How many times the compiled inference and trajectory functions were traced."""
    return dict(_TRACES)


# ----------------------------------------------------------------------------- arguments
def parse_horizon(horizon) -> float:
    """Forecast horizon in hours from a number (hours) or ``"21d"``, ``"504h"``, ``"3w"``.

    Raises
    ------
    PkpdError
        Not a number with unit, or not > 0.
    """
    if isinstance(horizon, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(h|d|w)?\s*", horizon.lower())
        if not m:
            raise PkpdError(f"horizon must be hours or a string like '21d' or '504h', got {horizon!r}")
        value = float(m.group(1)) * {"h": 1.0, "d": 24.0, "w": 168.0, None: 1.0}[m.group(2)]
    else:
        try:
            value = float(horizon)
        except (TypeError, ValueError):
            raise PkpdError(f"horizon must be hours or a string like '21d', got {horizon!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PkpdError(f"horizon must be > 0 hours, got {horizon!r}")
    return value


def _regimens(regimen, names) -> list[tuple[str, object]]:
    """``[(name, Regimen or None)]`` from None, a string/Regimen, a list or a dict."""
    from .regimen import Regimen, parse_regimen

    def one(r):
        if r is None:
            return None
        if isinstance(r, Regimen):
            return r
        if isinstance(r, str):
            return parse_regimen(r)
        raise PkpdError(f"a regimen must be a string or a Regimen, got {type(r).__name__}")

    if isinstance(regimen, dict):
        items = [(str(k), one(v)) for k, v in regimen.items()]
    elif isinstance(regimen, (list, tuple)):
        items = [(None, one(r)) for r in regimen]
    else:
        items = [(None, one(regimen))]
    if not items:
        raise PkpdError("regimen: the list of alternatives is empty")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(items):
            raise PkpdError(f"regimen_names has {len(names)} names for {len(items)} regimens")
        items = [(n, r) for n, (_, r) in zip(names, items)]
    out = [(n if n is not None else (_NO_REGIMEN if r is None else str(r)), r) for n, r in items]
    if len({n for n, _ in out}) != len(out):
        raise PkpdError(f"regimen names must be unique, got {[n for n, _ in out]}")
    return out


def _as_dataset(patient, covariates):
    from .dataset import Dataset, read_dataset

    if isinstance(patient, Dataset):
        ds = patient
    elif isinstance(patient, (str, Path)):
        if not Path(patient).is_file():
            raise PkpdError(f"patient data file {str(patient)!r} does not exist")
        ds = read_dataset(patient)
    elif isinstance(patient, pd.DataFrame):
        ds = read_dataset(patient)
    else:
        raise PkpdError(f"patient must be a Dataset, a CSV path or a DataFrame, got {type(patient).__name__}")
    if covariates:
        df = ds.df
        known = set(ds.ids)
        for name, value in covariates.items():
            if isinstance(value, dict):
                unknown = [i for i in value if i not in known]
                if unknown:
                    raise PkpdError(f"covariates[{name!r}]: unknown patient ID(s) {unknown}")
                mapped = df["ID"].map(value)
                df[name] = mapped if name not in df else mapped.where(mapped.notna(), df[name])
            else:
                df[name] = value
        ds = ds._replace(df)
    return ds


# ----------------------------------------------------------------------------- prior
@dataclass(frozen=True)
class _Prior:
    model: Model
    spec: FitSpec
    name: str
    fit: object = None  # the Fit, or None for a card prior


def _resolve_prior(prior) -> _Prior:
    from .fit import Fit, load_fit

    if isinstance(prior, (str, Path)) and Path(prior).is_file() and Path(prior).suffix.lower() != ".toml":
        fit, name = load_fit(prior), str(prior)
    elif isinstance(prior, Fit):
        fit, name = prior, f"fit of {prior.model_name}"
    else:
        model = prior if isinstance(prior, Model) else load_model(prior)
        return _Prior(model, FitSpec(), model.name)
    model = _fit_model(fit)
    post = fit.idata.posterior
    s = dict(fit.settings.get("spec", {}))
    iiv = tuple(v[len("omega_"):] for v in post.data_vars if v.startswith("omega_"))
    outputs = []
    for v in post.data_vars:
        if v.startswith("sigma_"):
            o = v[len("sigma_"):]
            o = o.rsplit("_", 1)[0] if o.endswith(("_add", "_prop")) else o
            if o not in outputs:
                outputs.append(o)
    solver = s.get("solver") or {}
    spec = FitSpec(
        fixed=tuple(s.get("fixed") or ()),
        iiv=iiv,
        covariance="full" if "L_corr" in post else "diag",
        censoring=s.get("censoring", "M3"),
        outputs=tuple(outputs) or None,
        solver=SolverOptions(**{k: solver[k] for k in ("rtol", "atol", "max_steps", "solver") if k in solver})
        if solver else FitSpec().solver,
    )
    return _Prior(model, spec, name, fit)


def _fit_model(fit) -> Model:
    from .cards import _Validator

    try:
        return load_model(fit.model_name)
    except PkpdError:
        if not fit.card:
            raise
        return Model(_Validator(Path(f"<card of fit {fit.model_name}>")).card(fit.card))


def _layout(problem: PopulationProblem) -> list[str]:
    """Names of the population vector ``u`` (unconstrained scale)."""
    return ([f"log_tv_{p}" for p in problem.estimated] + [f"log_omega_{p}" for p in problem.iiv]
            + [f"log_sigma_{s}" for s in problem.sigma_names()])


def _population(prior: _Prior, problem: PopulationProblem):
    """``(mean [D], chol [D, D], corr_chol [K, K], integrated)`` of the population vector."""
    names = _layout(problem)
    k = len(problem.iiv)
    if prior.fit is None:
        card = prior.model.card
        mean = [problem.prior_loc[p] for p in problem.estimated]
        mean += [math.log(prior.model.parameters[p].omega) for p in problem.iiv]
        for s in problem.sigma_names():
            o = s.split("_")[0]
            es = card.error[o]
            val = es.sd if es.model != "combined" else (es.sd_add if s.endswith("_add") else es.sd_prop)
            if not val or val <= 0:
                raise PkpdError(f"model card {card.name!r}: residual SD of {s} must be > 0 for forecasting")
            mean.append(math.log(val))
        return np.asarray(mean), np.zeros((len(names), len(names))), np.eye(k), False
    post = prior.fit.idata.posterior
    cols = []
    for n in names:
        # log typical values are posterior variables themselves; omegas and sigmas are logged here
        var = n if n.startswith("log_tv_") else n[len("log_"):]
        if var not in post:
            raise PkpdError(f"the fit has no posterior of {var!r} needed by the forecast model "
                            f"(it has {sorted(post.data_vars)})")
        x = np.asarray(post[var].values, dtype=float).reshape(-1)
        cols.append(x if n.startswith("log_tv_") else np.log(x))
    u = np.stack(cols, axis=1)
    mean = u.mean(axis=0)
    if u.shape[0] >= 2:
        cov = np.atleast_2d(np.cov(u, rowvar=False))
        cov = 0.5 * (cov + cov.T) + 1e-12 * np.eye(len(names))
        chol = np.linalg.cholesky(cov)
        integrated = True
    else:
        chol, integrated = np.zeros((len(names), len(names))), False
    corr_chol = np.eye(k)
    if "L_corr" in post and k > 1:
        lc = np.asarray(post["L_corr"].values, dtype=float).reshape((-1, k, k))
        corr = np.einsum("nij,nkj->ik", lc, lc) / lc.shape[0]
        corr_chol = np.linalg.cholesky(0.5 * (corr + corr.T))
    return mean, chol, corr_chol, integrated


# ----------------------------------------------------------------------------- compiled parts
@dataclass(frozen=True)
class _Structure:
    """Everything static (hashable, compared by value) that the compiled inference needs."""

    parameter_names: tuple
    estimated: tuple
    iiv: tuple
    fixed: tuple
    columns: tuple
    factors: tuple
    outputs: tuple
    errors: tuple
    censoring: str
    sigma_names: tuple
    solver: SolverOptions
    integrated: bool
    method: str
    draws: int
    warmup: int
    max_tree_depth: int

    @property
    def n_latent(self) -> int:
        d = len(self.estimated) + len(self.iiv) + len(self.sigma_names)
        return len(self.iiv) + (d if self.integrated else 0)


class PatientProblem(PopulationProblem):
    """The likelihood of :class:`pkpd.statmodel.PopulationProblem` for one patient inside compiled code.

    :meth:`shell` builds an instance from the static :class:`_Structure` and traced arrays
    (no host work), so one compiled function serves every patient with the same buckets.
    """

    @classmethod
    def shell(cls, structure: _Structure, dynamics, pdata: dict) -> PatientProblem:
        """A problem over the subjects of ``pdata`` (arrays with a leading subject axis)."""
        self = object.__new__(cls)
        self.model = SimpleNamespace(parameter_names=structure.parameter_names,
                                     card=SimpleNamespace(error=dict(structure.errors)))
        self.spec = SimpleNamespace(censoring=structure.censoring)
        self.estimated, self.iiv, self.outputs = structure.estimated, structure.iiv, structure.outputs
        self.fixed = dict(structure.fixed)
        self.columns = dict(structure.columns)
        self.arrays = pdata["arrays"]
        self.data = pdata["data"]
        self.log_factor = pdata["log_factor"]
        self.column_values = pdata["column_values"]
        self.dynamics = dynamics
        self.solver = structure.solver
        self.n_sub = self.n_real = pdata["arrays"]["t"].shape[0]
        return self

    @staticmethod
    def unpack(structure: _Structure, x, shared: dict):
        """``(log_tv, eta [1, K], sigma)`` of one patient from its latent vector ``x``."""
        k = len(structure.iiv)
        u = shared["mean"]
        if structure.integrated:
            u = u + shared["chol"] @ x[k:]
        e = len(structure.estimated)
        log_tv = {p: u[i] for i, p in enumerate(structure.estimated)}
        omega = jnp.exp(u[e:e + k])
        sigma = {s: jnp.exp(u[e + k + j]) for j, s in enumerate(structure.sigma_names)}
        eta = ((shared["corr_chol"] @ x[:k]) * omega)[None, :] if k else None
        return log_tv, eta, sigma


def _one_patient(structure, dynamics, pdata_one, shared):
    """Potential (negative log density) and parameter map of one patient (``pdata`` without subject axis)."""
    batched = jax.tree_util.tree_map(lambda a: a[None], pdata_one)
    prob = PatientProblem.shell(structure, dynamics, batched)

    def params(x):
        log_tv, eta, sigma = PatientProblem.unpack(structure, x, shared)
        theta = prob.individual(log_tv, eta)
        return theta, sigma

    def potential(x):
        theta, sigma = params(x)
        ll, _ = prob.pointwise_loglik(theta, sigma)
        total = jnp.sum(ll)
        total = jnp.where(jnp.isnan(total), -jnp.inf, total)
        return 0.5 * jnp.sum(x**2) - total

    return potential, params


def _nuts(structure, potential, key):
    from numpyro.infer.hmc import hmc

    # Start at the Laplace mode with the Laplace covariance as a dense mass matrix: warm-up
    # then only tunes the step size, and trees stay shallow from the first iteration.
    mode, cov, _, _, ok = _mode_and_covariance(structure, potential)
    p = structure.n_latent
    x0 = jnp.where(ok, mode, jnp.zeros(p))
    cov = jnp.where(ok, cov, jnp.eye(p))
    init_kernel, sample_kernel = hmc(potential_fn=potential, algo="NUTS")
    state = init_kernel(x0, num_warmup=structure.warmup, inverse_mass_matrix=cov, dense_mass=True,
                        adapt_mass_matrix=False, max_tree_depth=structure.max_tree_depth, target_accept_prob=0.8,
                        forward_mode_differentiation=True, rng_key=key)

    def body(s, _):
        s = sample_kernel(s)
        return s, (s.z, s.diverging, s.num_steps)

    _, (xs, div, steps) = jax.lax.scan(body, state, None, length=structure.warmup + structure.draws)
    w = structure.warmup
    return xs[w:], {"divergences": jnp.sum(div[w:]), "mean_steps": jnp.mean(steps[w:]),
                    "converged": jnp.asarray(True)}


def _value_and_grad_fwd(potential, p):
    """``x -> (potential(x), gradient)`` by forward mode (one vmapped JVP: ``p`` tangents)."""
    eye = jnp.eye(p)

    def vg(x):
        vals, tangents = jax.vmap(lambda v: jax.jvp(potential, (x,), (v,)))(eye)
        return vals[0], tangents

    return vg


def _bfgs(vg, x0, max_iter=100, gtol=1e-5):
    """BFGS with backtracking (Armijo) line search; one potential+gradient evaluation per loop step
    (so the ODE solve is traced once). Returns ``(x, f, g, iterations)``."""
    p = x0.shape[0]

    def cond(st):
        x, f, g, h, alpha, it, done = st
        return ~done

    def body(st):
        x, f, g, h, alpha, it, done = st
        d = -h @ g
        d = jnp.where(g @ d < 0, d, -g)  # fall back to steepest descent
        x_new = x + alpha * d
        f_new, g_new = vg(x_new)
        ok = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new)) & (f_new <= f + 1e-4 * alpha * (g @ d))
        s_, y_ = x_new - x, g_new - g
        sy = jnp.where(jnp.isfinite(f), s_ @ y_, 0.0)
        rho = 1.0 / jnp.where(sy > 1e-12, sy, 1.0)
        eye = jnp.eye(p)
        h_new = (eye - rho * jnp.outer(s_, y_)) @ h @ (eye - rho * jnp.outer(y_, s_)) + rho * jnp.outer(s_, s_)
        h_new = jnp.where(sy > 1e-12, h_new, h)
        x, f, g, h = (jnp.where(ok, a, b) for a, b in ((x_new, x), (f_new, f), (g_new, g), (h_new, h)))
        alpha = jnp.where(ok, 1.0, alpha * 0.5)
        it = it + 1
        done = (jnp.linalg.norm(g) < gtol) | (it >= max_iter) | (alpha < 1e-8)
        return x, f, g, h, alpha, it, done

    # The first step evaluates x0 itself (g = 0, f = inf: accepted), so vg is traced only once here.
    st = (x0, jnp.asarray(jnp.inf), jnp.zeros(p), jnp.eye(p), jnp.asarray(1.0), jnp.asarray(0), jnp.asarray(False))
    x, f, g, _, _, it, _ = jax.lax.while_loop(cond, body, st)
    return x, f, g, it


def _mode_and_covariance(structure, potential):
    """Posterior mode (BFGS) and the inverse Hessian there: ``(x, cov, scale, iterations, ok)``
    with ``cov = scale @ scale.T`` (eigenvalues of the Hessian floored at 1e-6)."""
    p = structure.n_latent
    vg = _value_and_grad_fwd(potential, p)
    x, f, g, it = _bfgs(vg, jnp.zeros(p), max_iter=8 * p + 50)
    # Hessian by central differences of the exact (forward-mode) gradient: one vmapped trace.
    h = 1e-4
    pts = jnp.concatenate([x + h * jnp.eye(p), x - h * jnp.eye(p)])
    grads = jax.vmap(lambda z: vg(z)[1])(pts)
    hess = (grads[:p] - grads[p:]).T / (2 * h)
    hess = 0.5 * (hess + hess.T)
    w, v = jnp.linalg.eigh(hess)
    w = jnp.maximum(w, 1e-6)
    scale = v / jnp.sqrt(w)  # covariance = V diag(1/w) V^T = scale scale^T
    ok = jnp.isfinite(f) & (jnp.linalg.norm(g) < 1e-3) & jnp.all(jnp.isfinite(hess))
    return x, scale @ scale.T, scale, it, ok


def _laplace(structure, potential, key):
    x, _, scale, it, ok = _mode_and_covariance(structure, potential)
    eps = jax.random.normal(key, (structure.draws, structure.n_latent))
    xs = x + eps @ scale.T
    return xs, {"divergences": jnp.asarray(0), "mean_steps": it.astype(float), "converged": ok}


@eqx.filter_jit
def _infer(structure: _Structure, dynamics, pdata: dict, shared: dict, keys):
    """Posterior draws for every patient (vmapped over the subject axis of ``pdata``)."""
    _TRACES["infer"] += 1

    def one(pdata_one, key):
        potential, params = _one_patient(structure, dynamics, pdata_one, shared)
        run = _nuts if structure.method == "nuts" else _laplace
        xs, diag = run(structure, potential, key)
        theta, sigma = jax.vmap(params)(xs)
        theta = {k: v[:, 0] for k, v in theta.items()}
        return xs, theta, sigma, diag

    return jax.vmap(one)(pdata, keys)


@eqx.filter_jit
def _trajectories(lineage: str, solver: SolverOptions, dynamics, tdata: dict, theta: dict, t):
    """``lineage`` output ``[draws, S, T]`` and solve status ``[draws, S]`` (theta values ``[draws, S]``)."""
    _TRACES["trajectories"] += 1
    order = jnp.full_like(t, jnp.inf)

    def one(th):
        out, ok, _ = predict_outputs(dynamics, tdata, th, t, order, solver)
        return out[lineage], ok

    n = next(iter(theta.values())).shape[0]
    return jax.lax.map(one, theta, batch_size=min(n, 100))


# ----------------------------------------------------------------------------- host helpers
def _pad_subjects(tree, n_real):
    """Padded subjects become copies of subject 0 (real work, no special cases)."""
    def pad(a):
        a = np.array(a)
        if a.ndim and a.shape[0] > n_real:
            a[n_real:] = a[0]
        return jnp.asarray(a)

    return jax.tree_util.tree_map(pad, tree)


def _pad_obs(arrays: dict, n: int) -> dict:
    """Pad ``[S, N]`` observation arrays to ``N = n`` (masked, times = last time)."""
    n0 = arrays["t"].shape[1]
    if n <= n0:
        return arrays
    fill = {"t": None, "order": np.inf, "value": 1.0, "log_value": 0.0, "out": 0, "cens": False, "lloq": 1.0,
            "mask": False}
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        extra = np.repeat(v[:, -1:], n - n0, axis=1) if fill[k] is None else np.full((v.shape[0], n - n0), fill[k],
                                                                                      dtype=v.dtype)
        out[k] = jnp.asarray(np.concatenate([v, extra], axis=1))
    return out


def _structure(problem: PopulationProblem, integrated: bool, method, draws, warmup, depth) -> _Structure:
    card = problem.model.card
    return _Structure(
        parameter_names=tuple(problem.model.parameter_names),
        estimated=tuple(problem.estimated),
        iiv=tuple(problem.iiv),
        fixed=tuple(sorted((k, float(v)) for k, v in problem.fixed.items())),
        columns=tuple(sorted(problem.columns.items())),
        factors=tuple(sorted(problem.log_factor)),
        outputs=tuple(problem.outputs),
        errors=tuple((o, card.error[o]) for o in problem.outputs),
        censoring=problem.spec.censoring,
        sigma_names=tuple(problem.sigma_names()),
        solver=problem.solver,
        integrated=bool(integrated),
        method=method,
        draws=int(draws),
        warmup=int(warmup) if method == "nuts" else 0,  # unused by Laplace: keep one compile for any value
        max_tree_depth=int(max_tree_depth_ok(depth)) if method == "nuts" else 0,
    )


def max_tree_depth_ok(depth) -> int:
    depth = int(depth)
    if depth < 1:
        raise PkpdError(f"max_tree_depth must be >= 1, got {depth}")
    return depth


def _forward_solver(solver) -> SolverOptions:
    s = solver or FitSpec().solver
    if not isinstance(s, SolverOptions):
        raise PkpdError(f"solver must be a pkpd.SolverOptions, got {type(s).__name__}")
    return SolverOptions(rtol=s.rtol, atol=s.atol, max_steps=s.max_steps, solver=s.solver, adjoint="forward",
                         grid_fine=s.grid_fine, grid_medium=s.grid_medium, grid_coarse=s.grid_coarse)


def _record_frame(rec: pd.DataFrame, template: pd.Series, columns) -> pd.DataFrame:
    rec = rec.copy()
    for c in columns:
        if c not in rec:
            rec[c] = template[c] if c in template.index else np.nan
    rec["LLOQ"] = np.nan
    rec["CENS"] = False
    rec["LINE"] = -1
    return rec[list(columns)]


# ----------------------------------------------------------------------------- the result
class Forecast:
    """Result of :func:`forecast`.

    Attributes
    ----------
    entries : list of dict
        One per patient × regimen, in the ``"patients"`` shape of the forecast JSON
        (:data:`pkpd.report.FORECAST_SCHEMA`).
    trajectories : numpy.ndarray, shape [draws, patients, regimens, T]
        Posterior draws of the ``lineage`` trajectory on :attr:`time_h` (NaN for a failed solve).
    time_h : numpy.ndarray, shape [T]
        Hourly grid from 0 to ``max(last record, last planned dose) + horizon``.
    draws : pandas.DataFrame
        Posterior draws of each patient's parameters (``id``, ``draw``, individual
        parameters, residual SDs ``sigma_<output>``, standardised effects ``z_<p>``).
    ids, regimens : list
        Patient IDs and regimen names (the axes of :attr:`trajectories`).
    after : numpy.ndarray, shape [patients, regimens]
        Start of the forecast cycle (h).
    diagnostics : dict
        Per patient: divergences, mean leapfrog steps (NUTS) or BFGS iterations (Laplace),
        convergence flag; inference and total wall times (s).
    model_name, prior_name, interval, horizon_h, lineage
    """

    def __init__(self, *, entries, trajectories, time_h, draws, ids, regimens, after, diagnostics, model_name,
                 prior_name, interval, horizon_h, lineage, observed, context):
        self.entries = entries
        self.trajectories = trajectories
        self.time_h = time_h
        self.draws = draws
        self.ids = ids
        self.regimens = regimens
        self.after = after
        self.diagnostics = diagnostics
        self.model_name = model_name
        self.prior_name = prior_name
        self.interval = interval
        self.horizon_h = horizon_h
        self.lineage = lineage
        self._observed = observed
        self._context = context

    def __repr__(self):
        return (f"Forecast({self.model_name!r}, prior={self.prior_name!r}, {len(self.ids)} patient(s) x "
                f"{len(self.regimens)} regimen(s), {self.trajectories.shape[0]} draws)")

    def table(self) -> pd.DataFrame:
        """One row per patient × regimen (:func:`pkpd.report.patient_table`)."""
        return patient_table(self.entries)

    def to_json(self, path=None) -> dict:
        """The forecast JSON (validated); written atomically to ``path`` when given."""
        obj = forecast_json(self.model_name, self.prior_name, self.interval, self.horizon_h, self.entries)
        if path is not None:
            write_json(path, obj)
        return obj

    def plot(self, path, patient=None, *, log=False) -> None:
        """Fan chart (median, 50% and ``interval`` bands, observed counts as points), one panel per regimen.

        Plots one patient (``patient``: an ID; default the first); call once per patient
        for several.
        """
        pid = self.ids[0] if patient is None else patient
        if pid not in self.ids:
            raise PkpdError(f"unknown patient ID {pid!r}: the forecast has {self.ids}")
        i = self.ids.index(pid)
        lo, hi = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        obs_t, obs_y = self._observed.get(pid, (np.array([]), np.array([])))
        panels = []
        for r, name in enumerate(self.regimens):
            y = self.trajectories[:, i, r, :]
            y = y[np.all(np.isfinite(y), axis=1)]
            q = np.quantile(y, [0.5, 0.25, 0.75, lo, hi], axis=0)
            panels.append({"title": name, "t_h": self.time_h, "median": q[0], "lo50": q[1], "hi50": q[2],
                           "lo90": q[3], "hi90": q[4], "obs_t_h": obs_t, "obs": obs_y})
        fan_chart(path, panels, lineage=self.lineage, title=f"patient {pid}: {self.model_name}", log=log)

    def predictive(self, time_h, seed=0) -> np.ndarray:
        """Posterior-predictive draws of a new observation of ``lineage`` at ``time_h``
        (residual error included): ``[draws, patients, regimens]``."""
        t = float(time_h)
        if not (self.time_h[0] <= t <= self.time_h[-1]):
            raise PkpdError(f"time {t} h is outside the forecast grid [0, {self.time_h[-1]}]")
        f = ep.interpolate_at(self.time_h, self.trajectories, t)
        spec = self._context["model"].card.error[self.lineage]
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal(f.shape)
        sig = self._context["sigma"]
        if spec.model == "combined":
            a = sig[f"{self.lineage}_add"].T[:, :, None]
            p = sig[f"{self.lineage}_prop"].T[:, :, None]
            return f + np.sqrt(a**2 + (p * f) ** 2) * eps
        s = sig[self.lineage].T[:, :, None]
        if spec.model == "log_additive":
            return f * np.exp(s * eps)
        if spec.model == "proportional":
            return f * (1 + s * eps)
        return f + s * eps

    def project(self, regimen, regimen_names=None) -> Forecast:
        """The same posterior draws projected under other regimens (no new inference)."""
        ctx = self._context
        return _project(ctx, _regimens(regimen, regimen_names), self.diagnostics)


# ----------------------------------------------------------------------------- forecast
def forecast(prior, patient, regimen=None, horizon="21d", method="nuts", *, lineage="ANC", interval=0.9,
             ready=((504.0, 1.5),), seed=0, draws=500, warmup=100, max_tree_depth=6, solver=None,
             regimen_names=None, covariates=None, ids=None, progress=False) -> Forecast:
    """Forecast blood counts of one or several patients from their data so far.

    Parameters
    ----------
    prior : str, Model, Fit or path
        A model card (name, path or :class:`pkpd.Model`): population values plugged in;
        or a :class:`pkpd.Fit` / path of a saved fit: population uncertainty integrated
        (see the module docstring).
    patient : Dataset, str or DataFrame
        Doses and observations so far of one or more patients (independent).
    regimen : None, str, Regimen, list or dict
        Planned doses added to every patient's data (amounts from their covariates, e.g.
        BSA): None (only the doses in the data), one regimen, or alternatives (a list, or
        a dict name -> regimen). ``@<start>`` gives the first dose time (h from time 0 of
        the data); a planned dose before the patient's last record is an error.
    horizon : float or str
        Hours (``504``) or ``"21d"``, ``"504h"``; the grid runs hourly from 0 to
        ``max(last record, last planned dose) + horizon`` over all patients.
    method : {"nuts", "laplace"}
    lineage : str
        Output forecast and summarised (a model output, e.g. ``"ANC"``).
    interval : float
        Central interval mass of the reported ``lo``/``hi``.
    ready : sequence of (hours, threshold)
        Readiness checks ``P(count >= threshold)`` at ``hours`` *after the start of the
        forecast cycle* (``after``); checks beyond the grid are left out.
    seed : int
    draws, warmup, max_tree_depth : int
        Posterior draws (both methods); NUTS warm-up iterations and tree depth. NUTS starts
        at the Laplace mode with the Laplace covariance as its mass matrix, so warm-up only
        tunes the step size (100 iterations suffice; trees are typically 2-3 deep).
    solver : SolverOptions, optional
        ODE settings (default: those of population fits); the adjoint is forced to
        forward mode.
    regimen_names : list of str, optional
        Names of the regimen alternatives (default: the regimen strings).
    covariates : dict, optional
        Column values set on the patients' data (a scalar for every patient, or a dict
        ID -> value), e.g. ``{"BSA": 1.8}``.
    ids : list, optional
        Forecast only these patients of ``patient``.
    progress : bool
        Print timings.

    Returns
    -------
    Forecast

    Raises
    ------
    PkpdError
        Unknown patient IDs, a patient without observations of ``lineage``, a planned dose
        in the past, horizon <= 0, bad method or sizes.
    """
    start_time = time.perf_counter()
    if method not in ("nuts", "laplace"):
        raise PkpdError(f"method must be 'nuts' or 'laplace', got {method!r}")
    horizon_h = parse_horizon(horizon)
    if not (0 < float(interval) < 1):
        raise PkpdError(f"interval must be in (0, 1), got {interval!r}")
    for name, value, low in (("draws", draws, 2), ("warmup", warmup, 1 if method == "nuts" else 0)):
        if int(value) < low:
            raise PkpdError(f"{name} must be >= {low}, got {value}")
    pr = _resolve_prior(prior)
    model = pr.model
    if lineage not in model.outputs:
        raise PkpdError(f"lineage {lineage!r} is not an output of model {model.name!r} ({list(model.outputs)})")
    ds = _as_dataset(patient, covariates)
    if ids is not None:
        ids = list(ids) if isinstance(ids, (list, tuple, np.ndarray, pd.Index)) else [ids]
        unknown = [i for i in ids if i not in set(ds.ids)]
        if unknown:
            raise PkpdError(f"unknown patient ID(s) {unknown}: the data have IDs {ds.ids[:20]}")
        ds = ds.subset(ids)
    if ds.n_subjects == 0:
        raise PkpdError("the patient data hold no subject")
    names = _regimens(regimen, regimen_names)
    _design(model, ds, names)  # validates the regimens (e.g. "regimen in the past") before any inference
    df = ds.df
    types = ds.observation_types
    is_obs = (df["EVID"] == 0) & (df["MDV"] == 0)
    counts = df[is_obs & (df["DVID"].map(types) == lineage)].groupby("ID").size()
    none = [i for i in ds.ids if counts.get(i, 0) == 0]
    if none:
        raise PkpdError(f"patient(s) {none} have no {lineage} observations: nothing to condition the forecast on")

    spec = pr.spec
    spec = FitSpec(**{**{k: getattr(spec, k) for k in spec.__dataclass_fields__}, "solver": _forward_solver(
        solver if solver is not None else (spec.solver if pr.fit is not None else None))})
    problem = PopulationProblem(model, ds, spec)
    mean, chol, corr_chol, integrated = _population(pr, problem)
    n_real, n_sub = problem.n_real, problem.n_sub
    pdata = {
        "arrays": _pad_obs(problem.arrays, bucket_size(problem.arrays["t"].shape[1], MIN_OBS)),
        "data": problem.data,
        "log_factor": problem.log_factor,
        "column_values": problem.column_values,
    }
    pdata = _pad_subjects(pdata, n_real)
    shared = {"mean": jnp.asarray(mean), "chol": jnp.asarray(chol), "corr_chol": jnp.asarray(corr_chol)}
    structure = _structure(problem, integrated, method, draws, warmup, max_tree_depth)
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), n_sub)
    t0 = time.perf_counter()
    xs, theta, sigma, diag = _infer(structure, problem.dynamics, pdata, shared, keys)
    xs = np.asarray(xs)[:n_real]
    infer_s = time.perf_counter() - t0
    theta = {k: np.asarray(v)[:n_real] for k, v in theta.items()}
    sigma = {k: np.asarray(v)[:n_real] for k, v in sigma.items()}
    diagnostics = {
        "divergences": np.asarray(diag["divergences"])[:n_real].tolist(),
        "mean_steps": np.asarray(diag["mean_steps"])[:n_real].tolist(),
        "converged": np.asarray(diag["converged"])[:n_real].tolist(),
        "inference_s": infer_s,
        "integrated_population": integrated,
    }
    observed = {}
    for pid in ds.ids:
        sel = is_obs & (df["ID"] == pid) & (df["DVID"].map(types) == lineage)
        observed[pid] = (df.loc[sel, "TIME"].to_numpy(float), df.loc[sel, "DV"].to_numpy(float))
    rows = []
    for i, pid in enumerate(ds.ids):
        frame = {"id": pid, "draw": np.arange(int(draws))}
        frame.update({k: v[i] for k, v in theta.items()})
        frame.update({f"sigma_{k}": v[i] for k, v in sigma.items()})
        frame.update({f"z_{p}": xs[i, :, j] for j, p in enumerate(problem.iiv)})
        rows.append(pd.DataFrame(frame))
    context = {
        "model": model, "dataset": ds, "theta": theta, "sigma": sigma, "draws_df": pd.concat(rows, ignore_index=True),
        "solver": spec.solver, "lineage": lineage, "interval": float(interval), "ready": tuple(ready),
        "horizon_h": horizon_h, "prior_name": pr.name, "observed": observed, "start_time": start_time,
        "progress": progress,
    }
    return _project(context, names, diagnostics)


def _design(model: Model, ds, names):
    """Per (regimen, patient) frames with the planned doses added (IDs ``"<id>\\x1f<r>"``), the patient
    index of each, the cycle start ``after [patients, regimens]`` and the last record/dose time.

    Raises PkpdError for a planned dose before the patient's last record ("regimen in the past").
    """
    df = ds.df
    ids = ds.ids
    n_real = len(ids)
    first = df.groupby("ID", sort=False).head(1).set_index("ID")
    last_record = df.groupby("ID", sort=False)["TIME"].max()
    doses = df[df["EVID"].isin([1, 4])]
    last_dose = doses.groupby("ID", sort=False)["TIME"].max()
    molar_mass = model.card.pk.molar_mass
    frames, subject_of, after = [], [], np.zeros((n_real, len(names)))
    end = 0.0
    columns = list(df.columns)
    for r, (name, reg) in enumerate(names):
        for i, pid in enumerate(ids):
            sub = df[df["ID"] == pid]
            tid = f"{pid}\x1f{r}"
            t_last = float(last_record[pid])
            parts = [sub]
            planned = []
            if reg is not None:
                cov = {k: first.loc[pid, k] for k in first.columns if k not in ("TIME", "DV")}
                try:
                    rec = reg.to_records(cov, dose_unit="mg", molar_mass=molar_mass, id=pid)
                except PkpdError as err:
                    raise PkpdError(f"regimen {name!r} for patient {pid}: {err}") from None
                for _, d in rec.iterrows():
                    times = [float(d["TIME"]) + j * float(d["II"]) for j in range(int(d["ADDL"]) + 1)]
                    planned += times
                    if float(d["TIME"]) < t_last:
                        raise PkpdError(
                            f"regimen in the past: regimen {name!r} gives a dose at {float(d['TIME']):g} h, before "
                            f"the last record of patient {pid} at {t_last:g} h; start it later (e.g. '@{t_last:g}h')")
                parts.append(_record_frame(rec, first.loc[pid].reindex(columns).rename(None), columns))
            both = pd.concat(parts, ignore_index=True)
            both["ID"] = tid
            frames.append(both)
            subject_of.append(i)
            if planned:
                after[i, r] = min(planned)
            elif pid in last_dose.index:
                after[i, r] = float(last_dose[pid])
            end = max(end, t_last, max(planned, default=0.0))
    return frames, subject_of, after, end


def _project(context: dict, names, diagnostics) -> Forecast:
    """Trajectories and endpoint summaries of the posterior draws under each regimen."""
    start_time = context.get("start_time") or time.perf_counter()
    model, ds, lineage = context["model"], context["dataset"], context["lineage"]
    df = ds.df
    ids = ds.ids
    n_real = len(ids)
    theta = context["theta"]
    n_draws = next(iter(theta.values())).shape[1]
    frames, subject_of, after, end = _design(model, ds, names)
    end += context["horizon_h"]
    grid = np.arange(0.0, end + 1e-9, 1.0)
    if grid[-1] < end - 1e-9:
        grid = np.append(grid, end)
    t_real = grid.size
    t_bucket = bucket_size(t_real)
    tgrid = np.concatenate([grid, np.full(t_bucket - t_real, grid[-1])])
    design = pd.concat(frames, ignore_index=True)
    tids = list(pd.unique(design["ID"]))
    n_traj = len(tids)
    s_traj = bucket_size(n_traj)
    solver = context["solver"]
    t_eval = np.tile(tgrid, (s_traj, 1))
    dynamics, tdata = model.prepare(design, tids, n_subjects=s_traj, eval_times=t_eval,
                                    eval_mask=np.ones_like(t_eval, dtype=bool), options=solver)
    tdata = _pad_subjects(tdata, n_traj)
    index = np.array(subject_of + [subject_of[0]] * (s_traj - n_traj))
    th = {k: jnp.asarray(np.ascontiguousarray(v[index].T)) for k, v in theta.items()}  # [draws, S]
    t1 = time.perf_counter()
    y, ok = _trajectories(lineage, solver, dynamics, tdata, th, jnp.asarray(t_eval))
    y, ok = np.asarray(y)[:, :n_traj, :t_real], np.asarray(ok)[:, :n_traj]
    traj_s = time.perf_counter() - t1
    y = np.where(ok[:, :, None], y, np.nan)
    traj = np.empty((n_draws, n_real, len(names), t_real))
    for s in range(n_traj):
        r, i = divmod(s, n_real)
        traj[:, i, r, :] = y[:, s, :]
    baseline_name = "Circ0" if "Circ0" in theta else None
    entries = []
    failed = {}
    for i, pid in enumerate(ids):
        for r, (name, _) in enumerate(names):
            good = np.all(np.isfinite(traj[:, i, r, :]), axis=1)
            if good.sum() < 2:
                raise PkpdError(f"the ODE solve failed for nearly every draw of patient {pid} ({name})")
            failed[(pid, name)] = int((~good).sum())
            a = float(after[i, r])
            ready = [(a + float(h), float(thr)) for h, thr in context["ready"] if a + float(h) <= grid[-1]]
            base = theta[baseline_name][i][good] if baseline_name else None
            entries.append(patient_summary(grid, traj[good, i, r, :], patient_id=pid, regimen=name, lineage=lineage,
                                           baseline=base, interval=context["interval"], ready=ready, after=a))
    diagnostics = dict(diagnostics)
    diagnostics["trajectory_s"] = traj_s
    diagnostics["failed_draws"] = {f"{k[0]}|{k[1]}": v for k, v in failed.items()}
    diagnostics["total_s"] = time.perf_counter() - start_time
    if context.get("progress"):
        print(f"forecast: inference {diagnostics.get('inference_s', 0):.2f} s, trajectories {traj_s:.2f} s, "
              f"total {diagnostics['total_s']:.2f} s")
    ctx = dict(context)
    ctx["start_time"] = None
    return Forecast(entries=entries, trajectories=traj, time_h=grid, draws=context["draws_df"], ids=ids,
                    regimens=[n for n, _ in names], after=after, diagnostics=diagnostics,
                    model_name=model.name, prior_name=context["prior_name"], interval=context["interval"],
                    horizon_h=context["horizon_h"], lineage=lineage, observed=context["observed"], context=ctx)
