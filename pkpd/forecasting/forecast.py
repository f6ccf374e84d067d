r"""Individualised forecasts of blood counts: ``pkpd.forecast(prior, patient, regimen)``.

The per-patient model is the population model of :mod:`pkpd.stats.population` with the
population part replaced by a prior (:mod:`pkpd.forecasting.prior`): a model card's values
(plug-in) or a population fit's posterior (integrated). Each patient's posterior is
computed by :mod:`pkpd.forecasting.inference`: latent variables standard normal a priori
(non-centred random effects and, with a fit prior, the patient's own copy of the population
vector), the pointwise log-likelihood of the forecast's own
:class:`~pkpd.stats.population.PopulationProblem` (same residual-error and censoring code as
population fits), given one patient's data at a time.

Patients are independent: they are processed by one vectorised (``vmap``) computation
over the patient axis (NUTS on a CPU: one patient after the other, ``lax.map``), split
across the devices when there are several (on a CPU, host devices: one per core with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, which ``pkpd forecast`` and ``pkpd
plan`` set; :mod:`pkpd.forecasting.devices`). For a batch (at least as many patients as
devices) the trajectory draws are split across the devices too (:func:`_trajectories`).

Inference (``method``):

* ``"laplace"``: the posterior mode :math:`\hat x` by BFGS (:class:`optimistix.BFGS`,
  backtracking Armijo line search, gradients in forward mode) and the Hessian
  :math:`H = \nabla^2 (-\log p)(\hat x)` by forward-over-forward differentiation
  (:func:`jax.jacfwd` of the forward-mode gradient); the draws are
  :math:`x = \hat x + H^{-1/2}\varepsilon`, with the eigenvalues of :math:`H` floored
  at 1e-6 (Tierney & Kadane, J Am Stat Assoc 1986;81:82);
* ``"nuts"``: NumPyro's NUTS kernel (:func:`numpyro.infer.hmc.hmc`), one chain per
  patient (with fewer patients than devices, ``devices // patients`` chains sharing the
  draws: :func:`~pkpd.forecasting.inference.chains_per_patient`), started at the Laplace
  mode with the Laplace covariance as a dense mass matrix; ``warmup`` iterations tune
  the step size (dual averaging in one window), then the draws, all inside one compiled
  function.

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

import dataclasses
import math
import re
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import endpoints as ep
from .devices import deal_rows, over_devices, undeal_rows
from .inference import (PatientProblem, chains_per_patient, infer_patients, inference_structure,
                        per_patient_draws)
from .lineage import baseline_parameter, get_lineage, model_lineages
from .lineage_endpoints import lineage_endpoints
from .prior import population_prior, resolve_prior
from ..buckets import bucket_size
from ..errors import PkpdError
from ..model.model import Model
from ..solve.solver import GRID_SOLVER, SolverOptions, predict_outputs
from ..stats.population import FitSpec, PopulationProblem

__all__ = ["forecast", "Forecast", "parse_horizon"]

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


# ----------------------------------------------------------------------------- trajectories
#: Output block of the trajectory solves (``save_chunk`` of :func:`pkpd.solve.solver.solve_subject`):
#: a dense hourly grid is saved block by block instead of once per dose segment.
SAVE_CHUNK = 128


@eqx.filter_jit
def _trajectories(outputs: tuple, solver: SolverOptions, dynamics, tdata: dict, theta: dict, t, split: bool):
    """``{output: [draws, S, T]}`` and solve status ``[draws, S]`` (theta values ``[draws, S]``).

    With ``split`` (static; a batch: :func:`_split_trajectories`) the draws are split across the
    local devices (:func:`pkpd.forecasting.devices.deal_rows` and
    :func:`~pkpd.forecasting.devices.over_devices`; the identity with one device). On CPU host
    devices this needs a program free of batched LAPACK calls, which block on the thread pool
    that the devices share: the PK modes are computed in closed form
    (:func:`pkpd.model.pk.closed_form.pk_modes`; benchmarks/README.md, 2026-12-03)."""
    order = jnp.full_like(t, jnp.inf)

    def one(th):
        out, ok, _ = predict_outputs(dynamics, tdata, th, t, order, solver, SAVE_CHUNK)
        return {o: out[o] for o in outputs}, ok

    def block(theta_block):
        n = next(iter(theta_block.values())).shape[0]
        return jax.lax.map(one, theta_block, batch_size=min(n, 100))

    if not split:
        return block(theta)
    n_draws = next(iter(theta.values())).shape[0]
    dealt, rows = deal_rows(theta, n_draws)
    ys, ok = undeal_rows(over_devices(block)(dealt), rows)
    return {o: y[:n_draws] for o, y in ys.items()}, ok[:n_draws]


def _split_trajectories(n_patients: int, n_devices: int | None = None) -> bool:
    """Split the trajectory draws across the devices only for a batch: at least as many patients as
    devices (default: the local devices), as the inference splits its patients. A patient alone
    (``pkpd forecast`` of one patient) keeps one program: its trajectories take ~0.1 s warm, while the
    sharded program takes longer to compile (benchmarks/README.md, 2026-12-03)."""
    d = n_devices or len(jax.local_devices())
    return d > 1 and n_patients >= d


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
             ready=None, seed=0, draws=500, warmup=20, max_tree_depth=6, solver=None,
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
        tunes the step size, by dual averaging over all its iterations
        (:func:`~pkpd.forecasting.inference.nuts_chain`); 20 iterations gave as large an
        effective sample size as 100 (benchmarks/README.md, 2026-12-03; trees are typically
        2-3 deep). With fewer patients than devices (on a CPU, host devices: ``pkpd forecast``
        creates one per core) each patient's draws are shared by ``devices // patients`` NUTS
        chains, one per device, each with its own ``warmup``
        (:func:`~pkpd.forecasting.inference.chains_per_patient`).
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
    pr = resolve_prior(prior)
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
    mean, chol, corr_chol, integrated = population_prior(pr, problem)
    n_real, n_sub = problem.n_real, problem.n_sub
    pdata = PatientProblem.subject_data(problem)
    pdata["arrays"] = _pad_obs(pdata["arrays"], bucket_size(pdata["arrays"]["t"].shape[1], MIN_OBS))
    if "grid" in pdata["data"]:
        pdata["data"] = _pad_grid(pdata["data"], bucket_size(pdata["data"]["grid"].shape[1], MIN_GRID))
    pdata = _pad_subjects(pdata, n_real)
    shared = {"mean": jnp.asarray(mean), "chol": jnp.asarray(chol), "corr_chol": jnp.asarray(corr_chol)}
    chains = chains_per_patient(method, n_real)
    structure = inference_structure(problem, integrated, method, draws, warmup, max_tree_depth, chains)
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
    out = undeal_rows(infer_patients(structure, problem.dynamics, pdata, shared, patient_of_row, keys, real), order)
    infer_s = time.perf_counter() - t0
    xs, theta, sigma, diag, r_hat = per_patient_draws(out, n_real, chains, int(draws))
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
    ys, ok = _trajectories(model_lineages(model.outputs), solver, dynamics, tdata, th, jnp.asarray(t_eval),
                           _split_trajectories(n_real))
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
