"""Simulation of virtual patients from a model card.

``simulate(model, regimen_or_dataset, ...)`` draws individual parameters from the card's
inter-individual variability (log-normal, with covariate effects), solves the model at
the observation times, adds residual error (samples of the residual-error distributions
of :mod:`pkpd.stats.residual`, the ones the fits use), and returns a NONMEM-style data
frame that :func:`pkpd.read_dataset` reads back (so simulated studies can be fitted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import ModelError
from ..dosing.events import evaluation_keys
from ..model.model import Model, load_model
from ..solve.solver import SolverOptions, predict_outputs
from ..units import DEFAULT_OBSERVATION_TYPES
from .residual import residual_distribution

__all__ = ["simulate", "add_residual_error", "OUTPUT_DVID", "solve_design", "DEFAULT_FOLLOW_UP_H"]

#: DVID used for each output in simulated data (``read_dataset``'s default mapping).
OUTPUT_DVID = {name: dvid for dvid, name in DEFAULT_OBSERVATION_TYPES.items()}


def output_dvid(model: Model) -> dict:
    """DVID of each output of ``model`` in data: the card's ``[observe]`` dvids, else the defaults."""
    return {**OUTPUT_DVID, **model.card.output_dvid}

_COLUMNS = ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "DVID"]


def add_residual_error(ipred, spec, key):
    """Draw observations around ``ipred`` from an output's residual-error model (``ErrorSpec``).

    A sample of :func:`pkpd.stats.residual.residual_distribution` (the distribution the
    fits use) with the card's SDs, drawn with the JAX key ``key``; values are floored at 0
    (counts and concentrations are not negative; only the normal models can go below).
    """
    d = residual_distribution(spec.model, jnp.asarray(ipred, dtype=float), spec.sd, sigma_add=spec.sd_add,
                              sigma_prop=spec.sd_prop)
    return np.maximum(np.asarray(d.sample(key)), 0.0)


#: Observation window of a regimen simulated without ``times``: daily to this many hours
#: after the last dose (21 days, one usual chemotherapy cycle).
DEFAULT_FOLLOW_UP_H = 21 * 24.0


def _design_from_regimen(model: Model, regimen, n: int, times, covariates: dict) -> tuple[pd.DataFrame, dict]:
    from ..dosing.regimen import Regimen, parse_regimen

    if not isinstance(regimen, Regimen):
        regimen = parse_regimen(str(regimen))
    outputs = [o for o in model.outputs]
    dvids = output_dvid(model)
    missing = [o for o in outputs if o not in dvids]
    if missing:
        raise ModelError(f"outputs {missing} of model {model.name!r} have no DVID: give them one in the card's "
                         "[observe] table (dvid = ...)")
    if times is None:
        # A single dose has no interval (None): its last dose is its first.
        last = max(d.start + (d.interval or 0.0) * (d.count - 1) for d in regimen.items)
        times = np.arange(0.0, last + DEFAULT_FOLLOW_UP_H + 1e-9, 24.0)
    times = np.asarray(times, dtype=float)
    if np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ModelError("`times` must be non-negative and increasing")
    frames, dose_units = [], {}
    for i in range(n):
        cov_i = {k: (v[i] if np.ndim(v) else v) for k, v in covariates.items()}
        doses, dose_units = model.regimen_records(regimen, cov_i, id=i + 1)
        obs = pd.DataFrame(
            [
                {"ID": i + 1, "TIME": t, "DV": np.nan, "AMT": 0.0, "EVID": 0, "MDV": 0, "CMT": 0, "RATE": 0.0,
                 "II": 0.0, "ADDL": 0, "SS": 0, "DVID": dvids[o]}
                for t in times
                for o in outputs
            ]
        )
        # Observations at the time of a dose are taken before it (pre-dose samples).
        both = pd.concat([obs.assign(_k=0), doses.assign(_k=1)], ignore_index=True)
        both = both.sort_values(["TIME", "_k"], kind="stable").drop(columns="_k")
        for k, v in cov_i.items():
            both[k] = v
        frames.append(both)
    return pd.concat(frames, ignore_index=True), dose_units


def solve_design(model: Model, df: pd.DataFrame, theta: dict, options: SolverOptions = SolverOptions(),
                 dose_units: dict | None = None):
    """Noise-free predictions (IPRED) at every observation row of a canonical frame
    (whose dose amounts are in ``dose_units``, ``{CMT: unit}``, mg where not listed).

    ``theta`` holds ``[S]`` arrays in the order of the frame's subjects. Returns
    ``(ipred [n_rows] with NaN on non-observation rows, status per subject, steps per subject)``.
    """
    df = df.reset_index(drop=True)
    ids = list(pd.unique(df["ID"]))
    options = model.solver_options(options)  # the card's integrator for solver="auto"
    from ..buckets import bucket_size

    n_sub = bucket_size(len(ids))
    rows = np.flatnonzero(df["EVID"].to_numpy(int) == 0)
    t, order, row, mask = evaluation_keys(df, rows, ids, n_subjects=n_sub)
    if np.any(np.diff(t, axis=1) < 0):
        raise ModelError("observation times must not decrease within a subject for PD simulation")
    dynamics, data = model.prepare(df, ids, n_subjects=n_sub, eval_times=t, eval_mask=mask, options=options,
                                   dose_units=dose_units)
    padded = {}
    for k, v in theta.items():
        v = np.asarray(v, dtype=float)
        padded[k] = jnp.asarray(np.concatenate([v, np.repeat(v[:1], n_sub - len(v))]))
    outputs, status, steps = predict_outputs(dynamics, data, padded, jnp.asarray(t), jnp.asarray(order), options)
    dvid = df["DVID"].to_numpy(int)
    types = {d: name for name, d in output_dvid(model).items()}
    ipred = np.full(len(df), np.nan)
    for name, values in outputs.items():
        values = np.asarray(values)
        sel = mask & np.isin(row, rows[np.isin(dvid[rows], [d for d, n in types.items() if n == name])])
        ipred[row[sel]] = values[sel]
    return ipred, np.asarray(status)[: len(ids)], np.asarray(steps)[: len(ids)]


def simulate(
    model,
    regimen_or_dataset,
    n_subjects: int | None = None,
    *,
    seed: int = 0,
    times=None,
    covariates: dict | None = None,
    iiv: bool = True,
    residual: bool = True,
    options: SolverOptions = SolverOptions(),
    return_parameters: bool = False,
):
    """Simulate virtual patients.

    Parameters
    ----------
    model : Model or str
        A :class:`pkpd.Model` or a model-card name.
    regimen_or_dataset : Regimen, str, Dataset or pandas.DataFrame
        A regimen (``"100 mg/m2 1h q21d x4"``, see :mod:`pkpd.regimen`) given to
        ``n_subjects`` patients observed at ``times``; or a data set whose design (doses,
        observation rows, covariates) is kept and whose DV are replaced.
    n_subjects : int
        Number of patients (regimen mode; default 1).
    seed : int
        Seed of the random draws: same seed, same data. The random effects come from
        ``numpy.random.default_rng(seed)``, the residual errors from samples of the fits'
        residual-error distributions (:func:`pkpd.stats.residual.residual_distribution`)
        keyed by ``jax.random.PRNGKey(seed)`` (one subkey per output).
    times : array, optional
        Observation times in hours (default: daily from 0 to 21 days after the last dose,
        :data:`DEFAULT_FOLLOW_UP_H`; for a single dose at time 0, days 0 to 21). Every
        output of the model is observed at each time.
    covariates : dict, optional
        Covariate values (scalars or one per subject), e.g. ``{"BSA": 1.8, "SEX": 1}``;
        needed for per-BSA doses and the card's covariate effects.
    iiv, residual : bool
        Draw inter-individual variability / add residual error (False: typical values /
        noise-free predictions).
    options : SolverOptions
        ODE settings (default: the card's integrator, :meth:`pkpd.Model.solver_options`).
    return_parameters : bool
        Also return the individual parameters (a data frame indexed by ID).

    Returns
    -------
    pandas.DataFrame
        NONMEM-style rows: ``ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, DVID``,
        ``IPRED`` (noise-free value) and the covariates; times in hours, canonical units.
    """
    model = model if isinstance(model, Model) else load_model(model)
    rng = np.random.default_rng(seed)
    covariates = dict(covariates or {})
    if isinstance(regimen_or_dataset, pd.DataFrame) or hasattr(regimen_or_dataset, "df"):
        from ..data.dataset import read_dataset

        ds = regimen_or_dataset if hasattr(regimen_or_dataset, "df") else read_dataset(regimen_or_dataset, validate=False)
        df = ds.df.drop(columns=["LINE"], errors="ignore")
        if n_subjects not in (None, ds.n_subjects):
            raise ModelError(f"n_subjects={n_subjects} differs from the data set's {ds.n_subjects} subjects")
        for k, v in covariates.items():
            df[k] = v
        dose_units = getattr(ds, "dose_units", {})
    else:
        n_subjects = 1 if n_subjects is None else int(n_subjects)
        if n_subjects < 1:
            raise ModelError(f"n_subjects must be >= 1, got {n_subjects}")
        df, dose_units = _design_from_regimen(model, regimen_or_dataset, n_subjects, times, covariates)
    ids = list(pd.unique(df["ID"]))
    cov = model.subject_covariates(df, ids)
    eta = model.draw_etas(rng, len(ids)) if iiv else {}
    theta = model.individual_parameters(cov, eta, n=len(ids))
    ipred, status, _ = solve_design(model, df, theta, options, dose_units)
    if not status.all():
        bad = [ids[i] for i in np.flatnonzero(~status)]
        raise ModelError(f"the ODE solve failed for ID(s) {bad[:10]} (try a larger max_steps or other tolerances)")
    obs = df["EVID"].to_numpy(int) == 0
    dv = np.full(len(df), np.nan)
    names = df["DVID"].map({d: name for name, d in output_dvid(model).items()}).to_numpy()
    keys = jax.random.split(jax.random.PRNGKey(seed), len(model.outputs))
    for name, key in zip(model.outputs, keys):
        sel = obs & (names == name)
        if not sel.any():
            continue
        if residual:
            if name not in model.card.error:
                raise ModelError(f"model {model.name!r} has no residual error model for {name}")
            dv[sel] = add_residual_error(ipred[sel], model.card.error[name], key)
        else:
            dv[sel] = ipred[sel]
    out = df.copy()
    out["DV"] = dv
    out["IPRED"] = ipred
    out["MDV"] = np.where(obs, 0, 1)
    if "CENS" in out:  # keep censoring columns only when the design had them, as 0/1
        if out["CENS"].astype(bool).any() or out.get("LLOQ", pd.Series(dtype=float)).notna().any():
            out["CENS"] = out["CENS"].astype(int)
        else:
            out = out.drop(columns=["CENS", "LLOQ"], errors="ignore")
    extra = [c for c in out.columns if c not in _COLUMNS]
    out = out[_COLUMNS + extra].reset_index(drop=True)
    # The unit of AMT per compartment where it is not mg (e.g. IU), for read_dataset(dose_unit=...).
    out.attrs["dose_units"] = dict(dose_units)
    if return_parameters:
        return out, pd.DataFrame({k: np.asarray(v) for k, v in theta.items()}, index=pd.Index(ids, name="ID"))
    return out
