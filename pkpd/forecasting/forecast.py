r"""Individualised forecasts of blood counts: ``pkpd.forecast(prior, patient, regimen)``.

The per-patient model is the population model of :mod:`pkpd.stats.population` with the
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
:meth:`pkpd.stats.population.PopulationProblem.pointwise_loglik` of the forecast's own
:class:`~pkpd.stats.population.PopulationProblem` (same residual-error and censoring
code as population fits), given one patient's data at a time (:class:`PatientProblem`).
Patients are independent: they are processed by one vectorised (``vmap``) computation
over the patient axis (NUTS on a CPU: one patient after the other, ``lax.map``), split
across the devices when there are several (on a CPU, host devices: one per core with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which ``pkpd forecast`` and ``pkpd
plan`` set; :mod:`pkpd.forecasting.devices`). The trajectories run on one device (see
:func:`_trajectories`).

Inference (``method``):

* ``"laplace"``: the posterior mode :math:`\hat x` by BFGS (:class:`optimistix.BFGS`,
  backtracking Armijo line search, gradients in forward mode) and the Hessian
  :math:`H = \nabla^2 (-\log p)(\hat x)` by forward-over-forward differentiation
  (:func:`jax.jacfwd` of the forward-mode gradient); the draws are
  :math:`x = \hat x + H^{-1/2}\varepsilon`, with the eigenvalues of :math:`H` floored
  at 1e-6 (Tierney & Kadane, J Am Stat Assoc 1986;81:82);
* ``"nuts"``: NumPyro's NUTS kernel (:func:`numpyro.infer.hmc.hmc`), one chain per
  patient (with fewer patients than devices, ``devices // patients`` chains sharing the
  draws: :func:`chains_per_patient`), started at the Laplace mode with the Laplace
  covariance as a dense mass matrix; ``warmup`` iterations tune the step size, then the
  draws, all inside one compiled function.

The latent dimension is small (3 random effects for the Kloft card), so gradients and
Hessians use forward-mode sensitivities of the ODE solve (``SolverOptions(adjoint=
"forward")``, forced); reverse mode is never needed. A requested ``rk4-grid`` serves the
likelihood only; trajectories are solved adaptively (:func:`_forecast_solvers`).

No recompilation: every array is padded to bucketed sizes (patients, observations with a
floor of :data:`MIN_OBS`, doses, grid length) and the compiled functions take the data
as arguments, so a new patient or one more observation within the same buckets reuses
the compiled code (the tests check this with JAX's own compile log,
:func:`jax.log_compiles`).

Forecast output, per *lineage* (the blood counts of the lineage table
:data:`pkpd.forecasting.lineage.LINEAGES`: ``ANC``, ``PLT``, ``HGB``, ``WBC``; by default
every one the model outputs): for every draw, patient and regimen, the trajectory on an
hourly grid from 0 to ``max(last record, last planned dose) + horizon`` (common to all
patients of a call), and endpoint summaries (:func:`pkpd.forecasting.endpoints.patient_summary`)
over the *forecast cycle*: from ``after`` = the first planned dose of the regimen, or,
without planned doses, the last dose given so far (0 without any dose). Grades,
recovery, readiness and transfusion thresholds are the lineage's; the baseline for
"recovery to baseline" is each draw's individual value of the lineage's baseline
parameter (:func:`pkpd.forecasting.lineage.baseline_parameter`: ``Circ0`` for the
Friberg cards), i.e. the patient's own baseline.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd

from . import endpoints as ep
from .devices import deal_rows, over_devices, undeal_rows
from .lineage import baseline_parameter, get_lineage, model_lineages
from .lineage_endpoints import lineage_endpoints
from ..buckets import bucket_size
from ..errors import PkpdError
from ..model.model import Model, load_model
from ..solve.solver import GRID_SOLVER, SolverOptions, predict_outputs
from ..stats.population import FitSpec, PopulationProblem

__all__ = ["forecast", "Forecast", "parse_horizon", "PatientProblem", "laplace_approximation"]

#: Observation arrays are padded to at least this many slots per patient (one compile
#: covers patients with up to 16 observations; padding is nearly free).
MIN_OBS = 16
#: Smallest padded length of a patient's ``rk4-grid`` integration grid (inference).
MIN_GRID = 64
#: Accuracy required of a likelihood ``rk4-grid`` at the observation times (relative; see
#: :func:`_forecast_solvers`). Tighter than population fits' 1e-4: a deep nadir amplifies the
#: posterior's shift (measured, Kloft docetaxel patient observed to day 7: the 1e-4 grid moved the
#: nadir median by 1.9%, a 1e-5 grid by 0.05%).
GRID_TOLERANCE = 1e-5

#: Default readiness check: hours after the start of the forecast cycle (21 days).
READY_AFTER_H = 504.0
#: A patient's largest split R-hat across its chains above this is reported by
#: :meth:`Forecast.check` (short per-patient chains: see there).
R_HAT_WARN = 1.05

_NO_REGIMEN = "doses in data"

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
    """``[(name, Regimen or None)]`` from None, a string/Regimen, a list or a dict (``"none"``: no
    planned doses, as None)."""
    from ..dosing.regimen import Regimen, parse_regimen

    def one(r):
        if r is None:
            return None
        if isinstance(r, Regimen):
            return r
        if isinstance(r, str):
            return None if r.strip().lower() == "none" else parse_regimen(r)
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
    from ..data.dataset import Dataset, read_dataset

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
    from ..infer.fit import Fit, load_fit

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
    from ..model.card import _Validator

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
        corr_chol = np.linalg.cholesky(prior.model.iiv_correlation(problem.iiv))
        return np.asarray(mean), np.zeros((len(names), len(names))), corr_chol, False
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
def _likelihood_key(problem: PopulationProblem) -> tuple:
    """Everything static that the likelihood of ``problem`` depends on, as a hashable value.

    The card (its TOML content), the :class:`FitSpec`, the parameter partition, the
    fitted outputs and the solver settings: two forecasts with equal keys trace the same
    likelihood, so the compiled code of the first serves the second.
    """
    return (
        json.dumps(problem.model.card.raw, sort_keys=True, default=str),
        json.dumps(problem.spec.as_dict(), sort_keys=True, default=str),
        tuple(problem.model.parameter_names),
        tuple(problem.estimated),
        tuple(problem.iiv),
        tuple(sorted((k, float(v)) for k, v in problem.fixed.items())),
        tuple(sorted(problem.columns.items())),
        tuple(sorted(problem.log_factor)),
        tuple(problem.outputs),
        tuple(problem.sigma_names()),
        problem.solver,
    )


@dataclass(frozen=True)
class _Structure:
    """Everything static that the compiled inference needs: hashable and compared by value.

    ``problem`` is the forecast's host :class:`PopulationProblem` (model, spec, parameter
    partition; the template of every :class:`PatientProblem`). It is carried but not
    compared: ``likelihood_key`` (:func:`_likelihood_key`) stands for it, so a new
    problem object with the same structure reuses the compiled code.
    """

    likelihood_key: tuple
    estimated: tuple
    iiv: tuple
    sigma_names: tuple
    integrated: bool
    method: str
    draws: int
    warmup: int
    max_tree_depth: int
    chains: int
    problem: PopulationProblem = field(compare=False, repr=False)

    @property
    def chain_draws(self) -> int:
        """Draws per chain: ``ceil(draws / chains)`` (the last chain's surplus is dropped)."""
        return -(-self.draws // self.chains)

    @property
    def n_latent(self) -> int:
        d = len(self.estimated) + len(self.iiv) + len(self.sigma_names)
        return len(self.iiv) + (d if self.integrated else 0)

    def latent_names(self) -> list[str]:
        """Names of the latent vector ``x``: ``z_<p>`` (random effects), then ``v_<u>`` (population)."""
        names = [f"z_{p}" for p in self.iiv]
        if self.integrated:
            names += [f"v_{n}" for n in ([f"log_tv_{p}" for p in self.estimated] + [f"log_omega_{p}" for p in self.iiv]
                                         + [f"log_sigma_{s}" for s in self.sigma_names])]
        return names


@dataclass(frozen=True)
class PatientProblem:
    """One patient's posterior inside compiled code.

    Holds the patient's data (the :data:`SUBJECT_DATA` attributes of a
    :class:`~pkpd.stats.population.PopulationProblem`, each with a leading subject axis
    of length 1, traced inside the compiled inference), the model's ``dynamics`` and the
    forecast's host problem ``template`` (model, spec, parameter partition, outputs).
    :meth:`likelihood` is a copy of the template holding this patient's data, so the
    individual parameters and the pointwise log-likelihood are computed by the
    population code itself (:meth:`~pkpd.stats.population.PopulationProblem.individual`,
    :meth:`~pkpd.stats.population.PopulationProblem.pointwise_loglik`).
    """

    template: PopulationProblem
    dynamics: object
    arrays: dict
    data: dict
    log_factor: dict
    column_values: dict

    #: Attributes of a PopulationProblem that hold per-subject data (leading subject axis).
    SUBJECT_DATA = ("arrays", "data", "log_factor", "column_values")

    @classmethod
    def subject_data(cls, problem: PopulationProblem) -> dict:
        """The per-subject data of a population problem, ``{attribute: pytree [S, ...]}``."""
        return {name: getattr(problem, name) for name in cls.SUBJECT_DATA}

    def likelihood(self) -> PopulationProblem:
        """The template problem restricted to this patient (a shallow copy holding its data)."""
        problem = copy.copy(self.template)
        for name in self.SUBJECT_DATA:
            setattr(problem, name, getattr(self, name))
        problem.dynamics = self.dynamics
        problem.n_sub = problem.n_real = 1
        return problem

    @staticmethod
    def unpack(structure: _Structure, x, shared: dict):
        """``(log_tv, eta [1, K], sigma)`` of one patient from its latent vector ``x``.

        ``u = mean + chol @ v`` (integrated population) or ``u = mean`` (plug-in);
        ``eta = omega * (L z)`` with ``L`` the Cholesky factor of the IIV correlation.
        """
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

    def potential_and_parameters(self, structure: _Structure, shared: dict):
        """``(potential, params)``: ``x -> -log p(x | y) + c`` and ``x -> (theta, sigma)``."""
        problem = self.likelihood()

        def params(x):
            log_tv, eta, sigma = self.unpack(structure, x, shared)
            return problem.individual(log_tv, eta), sigma

        def potential(x):
            theta, sigma = params(x)
            ll, _ = problem.pointwise_loglik(theta, sigma)
            total = jnp.sum(ll)
            total = jnp.where(jnp.isnan(total), -jnp.inf, total)
            return 0.5 * jnp.sum(x**2) - total

        return potential, params


def _with_forward_gradient(potential):
    r"""``potential`` with its JVP :math:`\dot U = \nabla U(x) \cdot t` written through its gradient, the
    gradient computed by one vectorised forward-mode pass (:func:`jax.jacfwd`).

    The same values and derivatives as ``potential``; what changes is the cost of
    linearising it (:func:`jax.linearize`, as :class:`optimistix.BFGS` does at every
    step): the linear map is a dot product with the stored gradient instead of a replay of
    the ODE solve's tangent integration once per direction.
    """

    @jax.custom_jvp
    def u(x):
        return potential(x)

    @u.defjvp
    def u_jvp(primals, tangents):
        (x,), (t,) = primals, tangents

        def value_twice(z):
            v = potential(z)
            return v, v

        grad, value = jax.jacfwd(value_twice, has_aux=True)(x)
        return value, grad @ t

    return u


def laplace_approximation(potential, n_latent: int, *, max_steps: int | None = None, rtol=1e-6, atol=1e-6):
    r"""Laplace approximation of the density :math:`\propto e^{-U(x)}` on :math:`\mathbb{R}^p`.

    The mode :math:`\hat x = \arg\min U` by BFGS from 0 (:class:`optimistix.BFGS`:
    backtracking Armijo line search, Cauchy termination with ``rtol``/``atol`` on the
    steps of ``x`` and ``U``; gradients in forward mode, ``autodiff_mode="fwd"``, which the
    forward-mode ODE sensitivities require), and the Hessian :math:`H = \nabla^2 U(\hat x)`
    by forward-over-forward differentiation (:func:`jax.jacfwd` of the forward-mode
    gradient). The covariance is :math:`H^{-1} = V \mathrm{diag}(1/w) V^\top` from the
    eigendecomposition :math:`H = V \mathrm{diag}(w) V^\top`, eigenvalues floored at 1e-6.

    Parameters
    ----------
    potential : callable
        :math:`U`: ``[p] -> scalar`` (``+inf``/NaN where the density is 0).
    n_latent : int
        :math:`p`.
    max_steps : int, optional
        BFGS step budget (default ``8 p + 50``).
    rtol, atol : float
        Termination tolerances of :class:`optimistix.BFGS`.

    Returns
    -------
    mode : [p]
    cov : [p, p]
        :math:`H^{-1}` (``cov = scale @ scale.T``).
    scale : [p, p]
        :math:`V \mathrm{diag}(w^{-1/2})`.
    num_steps : int
        BFGS steps taken.
    ok : bool
        Converged: BFGS reported success, :math:`U(\hat x)` and :math:`H` are finite and
        the gradient norm is below 1e-3.

    References
    ----------
    Tierney L, Kadane JB. Accurate approximations for posterior moments and marginal
    densities. J Am Stat Assoc 1986;81(393):82-86.
    """
    p = int(n_latent)
    max_steps = 8 * p + 50 if max_steps is None else int(max_steps)
    solution = optx.minimise(lambda x, _: _with_forward_gradient(potential)(x), optx.BFGS(rtol=rtol, atol=atol),
                             jnp.zeros(p), options={"autodiff_mode": "fwd"}, max_steps=max_steps, throw=False)
    mode = solution.value

    def gradient_twice(x):
        g = jax.jacfwd(potential)(x)
        return g, g

    hess, grad = jax.jacfwd(gradient_twice, has_aux=True)(mode)
    hess = 0.5 * (hess + hess.T)
    w, v = jnp.linalg.eigh(hess)
    scale = v / jnp.sqrt(jnp.maximum(w, 1e-6))
    ok = ((solution.result == optx.RESULTS.successful) & jnp.isfinite(potential(mode))
          & (jnp.linalg.norm(grad) < 1e-3) & jnp.all(jnp.isfinite(hess)))
    return mode, scale @ scale.T, scale, solution.stats["num_steps"], ok


def _nuts(structure: _Structure, potential, key, mode, cov, ok):
    from numpyro.infer.hmc import hmc

    # Start at the Laplace mode with the Laplace covariance as a dense mass matrix: warm-up
    # then only tunes the step size, and trees stay shallow from the first iteration.
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

    last, (xs, div, steps) = jax.lax.scan(body, state, None, length=structure.warmup + structure.chain_draws)
    w = structure.warmup
    return xs[w:], {"divergences": jnp.sum(div[w:]), "mean_steps": jnp.mean(steps[w:]),
                    "warmup_steps": jnp.sum(steps[:w]).astype(float), "step_size": last.adapt_state.step_size,
                    "converged": jnp.asarray(True)}


@eqx.filter_jit
def _infer(structure: _Structure, dynamics, pdata: dict, shared: dict, patient_of_row, keys, real):
    """Posterior draws for every *row* (one chain of one patient): the Laplace approximation
    vmapped over the subject axis of ``pdata``, then each row's draws for its patient
    ``patient_of_row`` with its key (NUTS on a CPU maps over the rows one after the other,
    skipping the padded ones, ``real`` False), with the rows split across the devices when
    there are several (:func:`pkpd.forecasting.devices.over_devices`)."""

    def patient(pdata_one):
        one = PatientProblem(structure.problem, dynamics, **jax.tree_util.tree_map(lambda a: a[None], pdata_one))
        return one.potential_and_parameters(structure, shared)

    def laplace(pdata_one):
        potential, _ = patient(pdata_one)
        return laplace_approximation(potential, structure.n_latent)

    # Outside the device split: optimistix's BFGS fails inside shard_map (lineax checks the
    # operator's input and output structures, one of which carries the mesh; lineax issue #185).
    approx = jax.vmap(laplace)(pdata)
    pdata, approx = jax.tree_util.tree_map(lambda a: a[patient_of_row], (pdata, approx))

    def draw(pdata_one, key, approx_one):
        potential, params = patient(pdata_one)
        mode, cov, scale, steps, ok = approx_one
        if structure.method == "nuts":
            xs, diag = _nuts(structure, potential, key, mode, cov, ok)
        else:
            eps = jax.random.normal(key, (structure.chain_draws, structure.n_latent))
            xs = mode + eps @ scale.T
            diag = {"divergences": jnp.asarray(0), "mean_steps": steps.astype(float), "warmup_steps": jnp.asarray(0.0),
                    "step_size": jnp.asarray(jnp.nan), "converged": ok}
        diag = {**diag, "laplace_mode": mode, "laplace_covariance": cov}
        theta, sigma = jax.vmap(params)(xs)
        theta = {k: v[:, 0] for k, v in theta.items()}
        return xs, theta, sigma, diag

    if structure.method == "nuts" and jax.default_backend() == "cpu":
        # On a CPU, patients' NUTS chains run one after the other: vmapped, every patient
        # waits for the deepest tree of any patient at each iteration, and vectorising a
        # one-subject gradient gains little there (8 patients: 21.7 s against 51.1 s, 2.4x;
        # benchmarks/batch_forecast.py). On an accelerator the vmap is the point. A padded
        # patient (a copy of patient 0, for the bucketed shapes) is skipped: zeros instead.
        def block(pdata, keys, real, approx):
            def step(args):
                *inputs, is_real = args
                skipped = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(draw, *inputs))
                return jax.lax.cond(is_real, lambda: draw(*inputs), lambda: skipped)

            return jax.lax.map(step, (pdata, keys, approx, real))
    else:
        def block(pdata, keys, real, approx):
            return jax.vmap(draw)(pdata, keys, approx)
    return over_devices(block)(pdata, keys, real, approx)


#: Output block of the trajectory solves (``save_chunk`` of :func:`pkpd.solve.solver.solve_subject`):
#: a dense hourly grid is saved block by block instead of once per dose segment.
SAVE_CHUNK = 128


@eqx.filter_jit
def _trajectories(outputs: tuple, solver: SolverOptions, dynamics, tdata: dict, theta: dict, t):
    """``{output: [draws, S, T]}`` and solve status ``[draws, S]`` (theta values ``[draws, S]``).

    Runs on one device. Split across CPU host devices (``shard_map`` over the draws), it
    deadlocks on jax 0.10: the PK modes' batched ``jnp.linalg.eigh`` (LAPACK) hands its batch to
    the intra-op thread pool and blocks, while every pool thread runs a device's program (gdb;
    benchmarks/README.md, 2026-12-03). A LAPACK-free eigen-decomposition (cyclic Jacobi) removed
    the deadlock but made fits much slower; not shipped."""
    order = jnp.full_like(t, jnp.inf)

    def one(th):
        out, ok, _ = predict_outputs(dynamics, tdata, th, t, order, solver, SAVE_CHUNK)
        return {o: out[o] for o in outputs}, ok

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


#: Fill values of observation slots added by :func:`_pad_obs` (masked); other arrays
#: repeat their last slot.
_OBS_FILL = {"order": np.inf, "value": 1.0, "log_value": 0.0, "out": 0, "cens": False, "lloq": 1.0, "mask": False}


def _pad_columns(v, n: int, fill=None) -> jnp.ndarray:
    """Pad ``[S, N]`` to ``[S, n]`` with ``fill``, or by repeating the last column when ``fill`` is None."""
    v = np.asarray(v)
    if fill is None:
        extra = np.repeat(v[:, -1:], n - v.shape[1], axis=1)
    else:
        extra = np.full((v.shape[0], n - v.shape[1]), fill, dtype=v.dtype)
    return jnp.asarray(np.concatenate([v, extra], axis=1))


def _pad_obs(arrays: dict, n: int) -> dict:
    """Pad ``[S, N]`` observation arrays to ``N = n`` (masked, times = last time)."""
    if n <= arrays["t"].shape[1]:
        return arrays
    return {k: _pad_columns(v, n, _OBS_FILL.get(k)) for k, v in arrays.items()}


def _structure(problem: PopulationProblem, integrated: bool, method, draws, warmup, depth, chains=1) -> _Structure:
    return _Structure(
        likelihood_key=_likelihood_key(problem),
        estimated=tuple(problem.estimated),
        iiv=tuple(problem.iiv),
        sigma_names=tuple(problem.sigma_names()),
        integrated=bool(integrated),
        method=method,
        draws=int(draws),
        warmup=int(warmup) if method == "nuts" else 0,  # unused by Laplace: keep one compile for any value
        max_tree_depth=int(max_tree_depth_ok(depth)) if method == "nuts" else 0,
        chains=int(chains),
        problem=problem,
    )


def chains_per_patient(method: str, n_patients: int, n_devices: int | None = None) -> int:
    """NUTS chains per patient: one, unless there are fewer patients than devices (default: the
    local devices), when each patient gets ``n_devices // n_patients`` chains sharing its draws,
    so that every device works: a patient's draws then take ``warmup + draws / chains``
    iterations of one chain's time instead of ``warmup + draws``. Laplace draws are independent
    already: one "chain"."""
    d = n_devices or len(jax.local_devices())
    return max(1, d // n_patients) if method == "nuts" else 1


def _per_patient(rows, n_real: int, chains: int, draws: int):
    """The first ``n_real * chains`` rows of an :func:`_infer` result (undealt) per patient:
    ``(xs, theta, sigma)`` with the chains' draws concatenated and cut to ``draws``
    (``xs [n_real, draws, p]``; ``theta`` and ``sigma`` ``{name: [n_real, draws]}``), the
    diagnostics ``{name: [n_real, chains, ...]}`` and, with several chains, each patient's largest
    split R-hat over its latent variables (:func:`numpyro.diagnostics.split_gelman_rubin`, on the
    chains as run; else None, also when the chains are too short to split: under 4 draws each)."""
    xs, theta, sigma, diag = rows
    chain_xs = np.asarray(xs)[:n_real * chains]
    r_hat = None
    if chains > 1 and chain_xs.shape[1] >= 4:
        from numpyro.diagnostics import split_gelman_rubin

        per_patient = chain_xs.reshape(n_real, chains, *chain_xs.shape[1:])
        r_hat = [float(np.max(split_gelman_rubin(c))) for c in per_patient]

    def draws_of(a):
        a = np.asarray(a)[:n_real * chains]
        return a.reshape(n_real, chains * a.shape[1], *a.shape[2:])[:, :draws]

    theta = {k: draws_of(v) for k, v in theta.items()}
    sigma = {k: draws_of(v) for k, v in sigma.items()}
    diag = {k: np.asarray(v)[:n_real * chains].reshape(n_real, chains, *np.shape(v)[1:]) for k, v in diag.items()}
    return draws_of(xs), theta, sigma, diag, r_hat


def max_tree_depth_ok(depth) -> int:
    depth = int(depth)
    if depth < 1:
        raise PkpdError(f"max_tree_depth must be >= 1, got {depth}")
    return depth


def _forecast_solvers(model: Model, solver) -> tuple[SolverOptions, SolverOptions]:
    """The forecast's solvers ``(inference, trajectories)``, both with forward-mode sensitivities.

    Inference (the patient's likelihood at its observation times): ``solver``, by default the
    adaptive solver of population fits. An ``rk4-grid`` (asked for, or a fit prior's) is
    checked by the forecast's :class:`PopulationProblem` at set-up against a tight solve at
    each patient's observation times and refined until within :data:`GRID_TOLERANCE`.
    Trajectories (the forecast horizon, where the nadir and the durations below thresholds
    are read): an ``rk4-grid`` is replaced by the adaptive default, since its grid is checked
    only at the data's times (measured: a docetaxel patient observed to day 7 had a forecast
    nadir median 1.9% off with everything on a 1e-4 grid; 0.05% with the likelihood on a
    1e-5 grid and the trajectories adaptive). ``solver="auto"`` is the card's integrator
    (:meth:`pkpd.Model.solver_options`).
    """
    s = FitSpec().solver if solver is None else solver
    if not isinstance(s, SolverOptions):
        raise PkpdError(f"solver must be a pkpd.SolverOptions, got {type(s).__name__}")
    inference = model.solver_options(dataclasses.replace(s, adjoint="forward"))
    trajectories = inference if s.solver != GRID_SOLVER else model.solver_options(
        dataclasses.replace(FitSpec().solver, adjoint="forward"))
    return inference, trajectories


def _pad_grid(data: dict, n: int) -> dict:
    """Pad the ``rk4-grid`` integration grids ``[S, L]`` to ``L = n`` (repeating the last time:
    zero-length steps), so that a new patient's grid length does not recompile the inference."""
    if "grid" not in data or data["grid"].shape[1] >= n:
        return data
    return {**data, "grid": _pad_columns(data["grid"], n)}


def _record_frame(rec: pd.DataFrame, template: pd.Series, columns) -> pd.DataFrame:
    rec = rec.copy()
    for c in columns:
        if c not in rec:
            rec[c] = template[c] if c in template.index else np.nan
    rec["LLOQ"] = np.nan
    rec["CENS"] = False
    rec["LINE"] = -1
    return rec[list(columns)]


def _forecast_lineages(model: Model, lineage) -> tuple[str, ...]:
    """The outputs to forecast: ``lineage`` (a name or a list) checked, or every count output the table knows."""
    if lineage is None:
        found = model_lineages(model.outputs)
        if not found:
            raise PkpdError(f"model {model.name!r} has no blood-count output of the lineage table "
                            f"(ANC, PLT, HGB, WBC); its outputs are {list(model.outputs)}")
        return found
    names = [lineage] if isinstance(lineage, str) else list(lineage)
    if not names:
        raise PkpdError("lineage: the list of lineages is empty")
    for name in names:
        if not isinstance(name, str):
            raise PkpdError(f"lineage must be an output name or a list of names, got {name!r}")
        if name not in model.outputs:
            raise PkpdError(f"lineage {name!r} is not an output of model {model.name!r} ({list(model.outputs)})")
        get_lineage(name)
    if len(set(names)) != len(names):
        raise PkpdError(f"lineage: each lineage may be given once, got {names}")
    return tuple(names)


def _pairs(checks, what) -> tuple:
    out = []
    for item in checks:
        try:
            h, thr = item
            h, thr = float(h), float(thr)
        except (TypeError, ValueError):
            raise PkpdError(f"{what}: each readiness check must be a pair (hours, threshold), got {item!r}") from None
        if not (math.isfinite(h) and math.isfinite(thr) and h >= 0):
            raise PkpdError(f"{what}: readiness check {item!r} needs hours >= 0 and a finite threshold")
        out.append((h, thr))
    return tuple(out)


def _ready_checks(ready, lineages, primary) -> dict:
    """Readiness checks ``{lineage: ((hours after cycle start, threshold), ...)}``.

    None: the lineage table's readiness threshold at :data:`READY_AFTER_H` for every
    lineage that has one. A dict: exactly its checks per lineage. A sequence of pairs: the
    checks of the primary lineage; every other lineage with a readiness threshold is
    checked at the same hours against its own threshold.
    """
    if ready is None:
        return {lin: ((READY_AFTER_H, get_lineage(lin).readiness),) if get_lineage(lin).readiness is not None else ()
                for lin in lineages}
    if isinstance(ready, dict):
        unknown = [k for k in ready if k not in lineages]
        if unknown:
            raise PkpdError(f"ready: lineage(s) {unknown} are not forecast (lineages: {list(lineages)})")
        return {lin: _pairs(ready.get(lin, ()), f"ready[{lin!r}]") for lin in lineages}
    pairs = _pairs(ready, "ready")
    hours = list(dict.fromkeys(h for h, _ in pairs))
    out = {}
    for lin in lineages:
        thr = get_lineage(lin).readiness
        out[lin] = pairs if lin == primary else (tuple((h, thr) for h in hours) if thr is not None else ())
    return out


# ----------------------------------------------------------------------------- the result
class Forecast:
    """Result of :func:`forecast`.

    Attributes
    ----------
    lineage : str
        The primary lineage: ``ANC`` when it is forecast, else the first of :attr:`lineages`.
    lineages : tuple of str
        Every forecast lineage (model outputs of the lineage table).
    entries : list of dict
        One per patient × regimen for the primary lineage, in the ``"patients"`` shape of
        the forecast JSON (:data:`pkpd.reporting.forecast.FORECAST_SCHEMA`).
    trajectories : numpy.ndarray, shape [draws, patients, regimens, T]
        Posterior draws of the primary lineage's trajectory on :attr:`time_h` (NaN for a
        failed solve).
    lineage_entries, lineage_trajectories : dict
        The same per lineage (``{lineage: entries}``, ``{lineage: array}``); the entries
        may hold lineage-specific endpoints (``p_transfusion``).
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
        Per patient: divergences, mean leapfrog steps (NUTS) or BFGS steps (Laplace),
        NUTS warm-up leapfrog steps (``warmup_steps``, summed over chains) and adapted
        ``step_size`` (mean over chains), convergence flag, the Laplace approximation (``laplace_mode`` [patients, p],
        ``laplace_covariance`` [patients, p, p] on the scale of ``latent_names``);
        ``chains`` per patient and, with several, each patient's largest split R-hat
        (``r_hat``; else None); ``devices``; inference and total wall times (s).
    model_name, prior_name, interval, horizon_h
    """

    def __init__(self, *, entries, trajectories, time_h, draws, ids, regimens, after, diagnostics, model_name,
                 prior_name, interval, horizon_h, lineage, observed, context, lineages=None, lineage_entries=None,
                 lineage_trajectories=None):
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
        self.lineages = tuple(lineages) if lineages is not None else (lineage,)
        self.lineage_entries = dict(lineage_entries) if lineage_entries is not None else {lineage: entries}
        self.lineage_trajectories = (dict(lineage_trajectories) if lineage_trajectories is not None
                                     else {lineage: trajectories})
        self._observed = observed
        self._context = context

    def __repr__(self):
        return (f"Forecast({self.model_name!r}, prior={self.prior_name!r}, {len(self.ids)} patient(s) x "
                f"{len(self.regimens)} regimen(s), {self.trajectories.shape[0]} draws, "
                f"lineages {list(self.lineages)})")

    def _lineage(self, lineage) -> str:
        lin = self.lineage if lineage is None else lineage
        if lin not in self.lineages:
            raise PkpdError(f"lineage {lin!r} was not forecast (lineages: {list(self.lineages)})")
        return lin

    def check(self) -> list[str]:
        """Plain-language problems with the patients' posterior draws, one line each.

        NUTS: divergent transitions (the draws may miss part of the posterior) and, when a
        patient's draws come from several chains (more devices than patients), a largest
        split R-hat above ``R_HAT_WARN`` = 1.05 (the chains disagree: raise ``draws``). The
        bound is the looser one of Gelman et al. (2013) rather than the 1.01 of Vehtari et
        al. (2021) used for population fits: a patient's chains here are short, a few
        hundred draws, and the largest of the split R-hats of all its latent variables
        exceeds 1.01 by chance. Laplace: a mode search that did not converge (the
        approximation is centred on a point that is not the mode). An empty list means
        none of these was seen, not that the draws are exact.
        """
        d = self.diagnostics or {}
        n = len(self.ids)
        divergences = d.get("divergences") or [0] * n
        r_hat = d.get("r_hat") or [None] * n
        converged = d.get("converged") or [True] * n
        draws = self.trajectories.shape[0]
        problems = []
        for pid, div, rh, ok in zip(self.ids, divergences, r_hat, converged):
            if div > 0:
                problems.append(f"patient {pid}: {int(div)} divergent transition(s) in {draws} NUTS draws: the "
                                "forecast may miss part of the posterior (check the patient's data and the prior)")
            if rh is not None and np.isfinite(rh) and rh > R_HAT_WARN:
                problems.append(f"patient {pid}: split R-hat {rh:.3f} across {d.get('chains')} chains "
                                f"(> {R_HAT_WARN}): the chains disagree; raise draws")
            if not ok:
                problems.append(f"patient {pid}: the Laplace mode search did not converge: its forecast is "
                                "centred on a point that is not the posterior mode; use method='nuts'")
        return problems

    def table(self, lineage=None) -> pd.DataFrame:
        """One row per patient × regimen (:func:`pkpd.reporting.forecast.patient_table`) of a lineage
        (default the primary one)."""
        from ..reporting.forecast import patient_table  # presentation layer, imported on use

        return patient_table(self.lineage_entries[self._lineage(lineage)])

    def lineage_json(self) -> list[dict]:
        """The ``"lineages"`` list of the forecast JSON: per lineage its unit, grade bounds,
        baseline parameter and the entries of every patient × regimen."""
        out = []
        for lin in self.lineages:
            spec = get_lineage(lin)
            out.append({
                "lineage": lin,
                "unit": spec.unit,
                "grades": {str(g): float(b) for g, b in spec.grade_bounds},
                "baseline_parameter": self._context.get("baselines", {}).get(lin),
                "patients": self.lineage_entries[lin],
            })
        return out

    def to_json(self, path=None) -> dict:
        """The forecast JSON (validated); written atomically to ``path`` when given.

        Top level as before (``patients``: the primary lineage's entries), plus
        ``lineages``: one entry per forecast lineage (:meth:`lineage_json`).
        """
        from ..reporting.forecast import forecast_json, write_json  # presentation layer, imported on use

        obj = forecast_json(self.model_name, self.prior_name, self.interval, self.horizon_h, self.entries,
                            lineages=self.lineage_json())
        if path is not None:
            write_json(path, obj)
        return obj

    def plot(self, path, patient=None, *, log=False, lineage=None) -> None:
        """Fan chart (median, 50% and ``interval`` bands, observed counts as points), one panel per regimen.

        Plots one patient (``patient``: an ID; default the first) and one lineage (default
        the primary one); call once per patient or lineage for several.
        """
        from ..reporting.forecast import fan_chart  # presentation layer, imported on use

        lin = self._lineage(lineage)
        pid = self.ids[0] if patient is None else patient
        if pid not in self.ids:
            raise PkpdError(f"unknown patient ID {pid!r}: the forecast has {self.ids}")
        i = self.ids.index(pid)
        lo, hi = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        observed = self._context.get("observed_by_lineage", {}).get(lin, self._observed if lin == self.lineage else {})
        obs_t, obs_y = observed.get(pid, (np.array([]), np.array([])))
        panels = []
        for r, name in enumerate(self.regimens):
            y = self.lineage_trajectories[lin][:, i, r, :]
            y = y[np.all(np.isfinite(y), axis=1)]
            q = np.quantile(y, [0.5, 0.25, 0.75, lo, hi], axis=0)
            panels.append({"title": name, "t_h": self.time_h, "median": q[0], "lo50": q[1], "hi50": q[2],
                           "lo90": q[3], "hi90": q[4], "obs_t_h": obs_t, "obs": obs_y})
        fan_chart(path, panels, lineage=lin, title=f"patient {pid}: {self.model_name}", log=log)

    def predictive(self, time_h, seed=0, lineage=None) -> np.ndarray:
        """Posterior-predictive draws of a new observation of a lineage (default the primary
        one) at ``time_h`` (residual error included): ``[draws, patients, regimens]``."""
        lin = self._lineage(lineage)
        t = float(time_h)
        if not (self.time_h[0] <= t <= self.time_h[-1]):
            raise PkpdError(f"time {t} h is outside the forecast grid [0, {self.time_h[-1]}]")
        f = ep.interpolate_at(self.time_h, self.lineage_trajectories[lin], t)
        spec = self._context["model"].card.error.get(lin)
        sig = self._context["sigma"]
        if spec is None or not any(k == lin or k.startswith(f"{lin}_") for k in sig):
            raise PkpdError(f"no residual error of {lin} in the posterior: the data held no {lin} observations to "
                            "fit it (the forecast of its true value is in lineage_trajectories)")
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal(f.shape)
        if spec.model == "combined":
            a = sig[f"{lin}_add"].T[:, :, None]
            p = sig[f"{lin}_prop"].T[:, :, None]
            return f + np.sqrt(a**2 + (p * f) ** 2) * eps
        s = sig[lin].T[:, :, None]
        if spec.model == "log_additive":
            return f * np.exp(s * eps)
        if spec.model == "proportional":
            return f * (1 + s * eps)
        return f + s * eps

    def transfusion_policy(self, lineage, threshold, units=1.0, **options):
        """Transfusions under the rule "give ``units`` of the product when ``lineage`` <
        ``threshold``" on the same posterior draws (:func:`pkpd.forecasting.policy.transfusion_policy`)."""
        from .policy import transfusion_policy

        return transfusion_policy(self, lineage, threshold, units, **options)

    def project(self, regimen, regimen_names=None) -> Forecast:
        """The same posterior draws projected under other regimens (no new inference)."""
        ctx = self._context
        return _project(ctx, _regimens(regimen, regimen_names), self.diagnostics)


# ----------------------------------------------------------------------------- forecast
def forecast(prior, patient, regimen=None, horizon="21d", method="nuts", *, lineage=None, interval=0.9,
             ready=None, seed=0, draws=500, warmup=100, max_tree_depth=6, solver=None,
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
        BSA): None or ``"none"`` (only the doses in the data), one regimen, or alternatives
        (a list, or a dict name -> regimen). ``@<start>`` gives the first dose time (h from time 0 of
        the data); a planned dose before the patient's last record is an error.
    horizon : float or str
        Hours (``504``) or ``"21d"``, ``"504h"``; the grid runs hourly from 0 to
        ``max(last record, last planned dose) + horizon`` over all patients.
    method : {"nuts", "laplace"}
    lineage : str or list of str, optional
        Outputs forecast and summarised, each a lineage of
        :data:`pkpd.forecasting.lineage.LINEAGES` (``"ANC"``, ``"PLT"``, ``"HGB"``,
        ``"WBC"``) that the model outputs. Default: every such output of the model. The
        primary lineage (:attr:`Forecast.lineage`, the top level of the JSON) is ``ANC``
        when forecast, else the first.
    interval : float
        Central interval mass of the reported ``lo``/``hi``.
    ready : None, sequence of (hours, threshold), or dict
        Readiness checks ``P(count >= threshold)`` at ``hours`` *after the start of the
        forecast cycle* (``after``); checks beyond the grid are left out. None: each
        lineage's readiness threshold of the table (ANC 1.5, PLT 100 ×10^9/L) at 504 h
        (21 days). A sequence: the checks of the primary lineage, and the same hours with
        their own thresholds for the other lineages (``()``: no checks). A dict
        ``{lineage: [(hours, threshold), ...]}``: exactly these.
    seed : int
    draws, warmup, max_tree_depth : int
        Posterior draws (both methods); NUTS warm-up iterations and tree depth. NUTS starts
        at the Laplace mode with the Laplace covariance as its mass matrix, so warm-up only
        tunes the step size (100 iterations suffice; trees are typically 2-3 deep). With
        fewer patients than devices (on a CPU, host devices: ``pkpd forecast`` creates one
        per core) each patient's draws are shared by ``devices // patients`` NUTS chains,
        one per device, each with its own ``warmup`` (:func:`chains_per_patient`).
    solver : SolverOptions, optional
        ODE settings of the patient's likelihood (default: those of population fits, with
        the card's integrator, or a fit prior's); the adjoint is forced to forward mode. An
        ``"rk4-grid"`` is checked per patient at set-up against a tight solve at the
        observation times and refined until within 1e-5 (:data:`GRID_TOLERANCE`). The
        trajectories over the horizon are solved with these settings, except that a grid is
        replaced there by the adaptive default (the grid is checked only at the data's
        times, not where a nadir lies).
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
        Unknown patient IDs, a patient without observations of any forecast lineage, a
        planned dose in the past, horizon <= 0, a lineage the model does not output or
        the lineage table does not know, bad method, sizes or readiness checks.
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
    lineages = _forecast_lineages(model, lineage)
    primary = "ANC" if "ANC" in lineages else lineages[0]
    ready_checks = _ready_checks(ready, lineages, primary)
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
    obs_type = df["DVID"].map(types)
    counts = df[is_obs & obs_type.isin(lineages)].groupby("ID").size()
    none = [i for i in ds.ids if counts.get(i, 0) == 0]
    if none:
        raise PkpdError(f"patient(s) {none} have no {' or '.join(lineages)} observations: nothing to condition "
                        "the forecast on")

    spec = pr.spec
    inference_solver, trajectory_solver = _forecast_solvers(
        model, solver if solver is not None else (spec.solver if pr.fit is not None else None))
    spec = FitSpec(**{**{k: getattr(spec, k) for k in spec.__dataclass_fields__}, "solver": inference_solver,
                      "grid_tolerance": min(spec.grid_tolerance, GRID_TOLERANCE)})
    problem = PopulationProblem(model, ds, spec)
    mean, chol, corr_chol, integrated = _population(pr, problem)
    n_real, n_sub = problem.n_real, problem.n_sub
    pdata = PatientProblem.subject_data(problem)
    pdata["arrays"] = _pad_obs(pdata["arrays"], bucket_size(pdata["arrays"]["t"].shape[1], MIN_OBS))
    if "grid" in pdata["data"]:
        pdata["data"] = _pad_grid(pdata["data"], bucket_size(pdata["data"]["grid"].shape[1], MIN_GRID))
    pdata = _pad_subjects(pdata, n_real)
    shared = {"mean": jnp.asarray(mean), "chol": jnp.asarray(chol), "corr_chol": jnp.asarray(corr_chol)}
    chains = chains_per_patient(method, n_real)
    structure = _structure(problem, integrated, method, draws, warmup, max_tree_depth, chains)
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), n_sub)
    if chains == 1:  # one row per (padded) patient
        patient_of_row = np.arange(n_sub)
    else:  # the patients' chains, chain-major within a patient, each with its own key
        patient_of_row = np.repeat(np.arange(n_real), chains)
        keys = jax.vmap(lambda k: jax.random.split(k, chains))(keys[:n_real]).reshape(n_real * chains, -1)
    n_chains = n_real * chains
    (patient_of_row, keys), order = deal_rows((jnp.asarray(patient_of_row), keys), n_chains)
    real = jnp.asarray(order < n_chains)
    t0 = time.perf_counter()
    out = undeal_rows(_infer(structure, problem.dynamics, pdata, shared, patient_of_row, keys, real), order)
    infer_s = time.perf_counter() - t0
    xs, theta, sigma, diag, r_hat = _per_patient(out, n_real, chains, int(draws))
    diagnostics = {
        "divergences": np.asarray(diag["divergences"]).sum(axis=1).tolist(),
        "mean_steps": np.asarray(diag["mean_steps"]).mean(axis=1).tolist(),
        "warmup_steps": np.asarray(diag["warmup_steps"]).sum(axis=1).tolist(),
        "step_size": np.asarray(diag["step_size"]).mean(axis=1).tolist(),
        "converged": np.asarray(diag["converged"]).all(axis=1).tolist(),
        "laplace_mode": np.asarray(diag["laplace_mode"])[:, 0],
        "laplace_covariance": np.asarray(diag["laplace_covariance"])[:, 0],
        "latent_names": structure.latent_names(),
        "inference_s": infer_s,
        "devices": len(jax.local_devices()),
        "chains": chains,
        "r_hat": r_hat,
        "integrated_population": integrated,
        "method": method,
    }
    observed = {}
    for lin in lineages:
        observed[lin] = {}
        for pid in ds.ids:
            sel = is_obs & (df["ID"] == pid) & (obs_type == lin)
            observed[lin][pid] = (df.loc[sel, "TIME"].to_numpy(float), df.loc[sel, "DV"].to_numpy(float))
    rows = []
    for i, pid in enumerate(ds.ids):
        frame = {"id": pid, "draw": np.arange(int(draws))}
        frame.update({k: v[i] for k, v in theta.items()})
        frame.update({f"sigma_{k}": v[i] for k, v in sigma.items()})
        frame.update({f"z_{p}": xs[i, :, j] for j, p in enumerate(problem.iiv)})
        rows.append(pd.DataFrame(frame))
    context = {
        "model": model, "dataset": ds, "theta": theta, "sigma": sigma, "draws_df": pd.concat(rows, ignore_index=True),
        "solver": trajectory_solver, "lineages": lineages, "primary": primary, "interval": float(interval),
        "ready": ready_checks, "horizon_h": horizon_h, "prior_name": pr.name, "observed_by_lineage": observed,
        "baselines": {lin: baseline_parameter(model, lin) for lin in lineages},
        "start_time": start_time, "progress": progress,
    }
    return _project(context, names, diagnostics)


def _transfusion_cmts(system, lineage) -> list[int]:
    """Data compartments whose doses go into the states of the component that outputs
    ``lineage`` (its transfusions)."""
    sources = {src for name, src, _ in system.outputs if name == lineage}
    return [int(r.cmt) for r in system.routes if r.component in sources]


def _design(model: Model, ds, names):
    """Per (regimen, patient) frames with the planned doses added (IDs ``"<id>\\x1f<r>"``), the patient
    index of each, the cycle start ``after [patients, regimens]``, the last record/dose time and the
    frames' dose units per compartment (:meth:`pkpd.Model.regimen_records`).

    Raises PkpdError for a planned dose before the patient's last record ("regimen in the past").
    """
    df = ds.df
    ids = ds.ids
    n_real = len(ids)
    first = df.groupby("ID", sort=False).head(1).set_index("ID")
    last_record = df.groupby("ID", sort=False)["TIME"].max()
    doses = df[df["EVID"].isin([1, 4])]
    last_dose = doses.groupby("ID", sort=False)["TIME"].max()
    dose_units = dict(getattr(ds, "dose_units", {}))
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
                    rec, used = model.regimen_records(reg, cov, id=pid, dose_units=getattr(ds, "dose_units", {}))
                    dose_units.update(used)
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
    return frames, subject_of, after, end, dose_units

def _project(context: dict, names, diagnostics) -> Forecast:
    """Trajectories and endpoint summaries of the posterior draws under each regimen, per lineage."""
    start_time = context.get("start_time") or time.perf_counter()
    model, ds = context["model"], context["dataset"]
    lineages, primary = context["lineages"], context["primary"]
    ids = ds.ids
    n_real = len(ids)
    theta = context["theta"]
    n_draws = next(iter(theta.values())).shape[1]
    frames, subject_of, after, end, dose_units = _design(model, ds, names)
    end += context["horizon_h"]
    grid = np.arange(0.0, end + 1e-9, 1.0)
    if grid[-1] < end - 1e-9:
        grid = np.append(grid, end)
    t_real = grid.size
    t_bucket = bucket_size(t_real)
    # padding continues the grid by 1e-3 h steps: the block-wise save needs strictly increasing times
    tgrid = np.concatenate([grid, grid[-1] + 1e-3 * np.arange(1, t_bucket - t_real + 1)])
    design = pd.concat(frames, ignore_index=True)
    tids = list(pd.unique(design["ID"]))
    n_traj = len(tids)
    s_traj = bucket_size(n_traj)
    solver = context["solver"]
    t_eval = np.tile(tgrid, (s_traj, 1))
    dynamics, tdata = model.prepare(design, tids, n_subjects=s_traj, eval_times=t_eval,
                                    eval_mask=np.ones_like(t_eval, dtype=bool), options=solver, dose_units=dose_units)
    tdata = _pad_subjects(tdata, n_traj)
    index = np.array(subject_of + [subject_of[0]] * (s_traj - n_traj))
    th = {k: jnp.asarray(np.ascontiguousarray(v[index].T)) for k, v in theta.items()}  # [draws, S]
    t1 = time.perf_counter()
    # every count output of the model, whichever are summarised: one compile serves any choice of lineages
    ys, ok = _trajectories(model_lineages(model.outputs), solver, dynamics, tdata, th, jnp.asarray(t_eval))
    ok = np.asarray(ok)[:, :n_traj]
    traj_s = time.perf_counter() - t1
    trajectories = {}
    for lin in lineages:
        y = np.where(ok[:, :, None], np.asarray(ys[lin])[:, :n_traj, :t_real], np.nan)
        traj = np.empty((n_draws, n_real, len(names), t_real))
        for s in range(n_traj):
            r, i = divmod(s, n_real)
            traj[:, i, r, :] = y[:, s, :]
        trajectories[lin] = traj
    entries = {lin: [] for lin in lineages}
    transfusion_cmts = {lin: _transfusion_cmts(dynamics, lin) for lin in lineages}
    failed = {}
    for i, pid in enumerate(ids):
        for r, (name, _) in enumerate(names):
            good = np.all(np.isfinite(trajectories[primary][:, i, r, :]), axis=1)
            if good.sum() < 2:
                raise PkpdError(f"the ODE solve failed for nearly every draw of patient {pid} ({name})")
            failed[(pid, name)] = int((~good).sum())
            a = float(after[i, r])
            for lin in lineages:
                y = trajectories[lin][:, i, r, :]
                good_lin = good & np.all(np.isfinite(y), axis=1)
                ready = [(a + float(h), float(thr)) for h, thr in context["ready"][lin] if a + float(h) <= grid[-1]]
                base_name = context["baselines"][lin]
                base = theta[base_name][i][good_lin] if base_name is not None else None
                entry = ep.patient_summary(grid, y[good_lin], patient_id=pid, regimen=name, lineage=lin,
                                           baseline=base, interval=context["interval"], ready=ready, after=a)
                given = frames[r * n_real + i]
                given = given[given["EVID"].isin([1, 4]) & given["CMT"].isin(transfusion_cmts[lin])]
                tau = [float(d["TIME"]) + j * float(d["II"]) for _, d in given.iterrows()
                       for j in range(int(d["ADDL"]) + 1)]
                entry.update(lineage_endpoints(grid, y[good_lin], lin, after=a, interval=context["interval"],
                                               transfusions=tau))
                entries[lin].append(entry)
    legacy = [{k: v for k, v in e.items() if k in ep.PATIENT_SUMMARY_KEYS} for e in entries[primary]]
    diagnostics = dict(diagnostics)
    diagnostics["trajectory_s"] = traj_s
    diagnostics["failed_draws"] = {f"{k[0]}|{k[1]}": v for k, v in failed.items()}
    diagnostics["total_s"] = time.perf_counter() - start_time
    if context.get("progress"):
        print(f"forecast: inference {diagnostics.get('inference_s', 0):.2f} s, trajectories {traj_s:.2f} s, "
              f"total {diagnostics['total_s']:.2f} s")
    ctx = dict(context)
    ctx["start_time"] = None
    ctx["regimen_items"] = list(names)  # (name, regimen) pairs, for policies on the same draws
    return Forecast(entries=legacy, trajectories=trajectories[primary], time_h=grid, draws=context["draws_df"], ids=ids,
                    regimens=[n for n, _ in names], after=after, diagnostics=diagnostics,
                    model_name=model.name, prior_name=context["prior_name"], interval=context["interval"],
                    horizon_h=context["horizon_h"], lineage=primary, observed=context["observed_by_lineage"][primary],
                    context=ctx, lineages=lineages, lineage_entries=entries, lineage_trajectories=trajectories)
