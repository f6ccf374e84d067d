r"""The prior of a forecast: a model card's population values, or a population fit's posterior.

* **card prior** (a model-card name or :class:`pkpd.Model`): typical values (with the
  card's covariate effects), IIV SDs ``omega`` and residual SDs ``sigma`` are the card's
  values (plug-in);
* **fit prior** (a :class:`pkpd.Fit` or the path of a saved fit): the population
  quantities are *integrated*. Their posterior draws are mapped to the unconstrained
  scale, ``u = (log TV_p, log omega_p, log sigma_s)`` (:func:`population_layout`), and
  approximated by a multivariate normal ``N(m, C)`` (sample mean and covariance); with a
  full IIV covariance the posterior-mean correlation matrix is used. A MAP fit (one draw)
  has no spread, so its point estimate is plugged in (:func:`population_prior`).

Used by :func:`pkpd.forecasting.forecast.forecast` and the planner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PkpdError
from ..model.model import Model, load_model
from ..solve.solver import SolverOptions
from ..stats.population import FitSpec, PopulationProblem

__all__ = ["ForecastPrior", "resolve_prior", "fit_model", "population_layout", "population_prior"]


@dataclass(frozen=True)
class ForecastPrior:
    """A resolved forecast prior: the model, the fit's statistical spec (a default
    :class:`FitSpec` for a card), a display name and the fit (None for a card prior)."""

    model: Model
    spec: FitSpec
    name: str
    fit: object = None  # the Fit, or None for a card prior


def resolve_prior(prior) -> ForecastPrior:
    """A :class:`ForecastPrior` from a card name, a :class:`pkpd.Model`, a :class:`pkpd.Fit` or
    the path of a saved fit (the fit's IIV, covariance, censoring, outputs and solver kept)."""
    from ..infer.fit import Fit, load_fit

    if isinstance(prior, (str, Path)) and Path(prior).is_file() and Path(prior).suffix.lower() != ".toml":
        fit, name = load_fit(prior), str(prior)
    elif isinstance(prior, Fit):
        fit, name = prior, f"fit of {prior.model_name}"
    else:
        model = prior if isinstance(prior, Model) else load_model(prior)
        return ForecastPrior(model, FitSpec(), model.name)
    model = fit_model(fit)
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
    return ForecastPrior(model, spec, name, fit)


def fit_model(fit) -> Model:
    """The model of a fit: its card by name, else the card stored in the fit."""
    from ..model.card import _Validator

    try:
        return load_model(fit.model_name)
    except PkpdError:
        if not fit.card:
            raise
        return Model(_Validator(Path(f"<card of fit {fit.model_name}>")).card(fit.card))


def population_layout(problem: PopulationProblem) -> list[str]:
    """Names of the population vector ``u`` (unconstrained scale)."""
    return ([f"log_tv_{p}" for p in problem.estimated] + [f"log_omega_{p}" for p in problem.iiv]
            + [f"log_sigma_{s}" for s in problem.sigma_names()])


def population_prior(prior: ForecastPrior, problem: PopulationProblem):
    """``(mean [D], chol [D, D], corr_chol [K, K], integrated)`` of the population vector."""
    names = population_layout(problem)
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
