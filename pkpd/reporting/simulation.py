r"""Posterior simulation for the fit report: predictions and predictive draws at the observations.

For a thinned set of ``B`` posterior draws :math:`s = 1..B` of a population fit this
module computes, at every fitted observation :math:`j` of subject :math:`i`:

* ``ipred[s, j]`` -- the individual prediction :math:`f(t_{ij}; \theta_i^{(s)})` with the
  subject's posterior random effects :math:`\eta_i^{(s)}`;
* ``pred[s, j]`` -- the population prediction :math:`f(t_{ij}; TV^{(s)}, \eta = 0)` (the
  typical subject with subject ``i``'s covariates and doses);
* ``ppc[s, j]`` -- a posterior-predictive draw of the observation with the subject's
  posterior random effects: a draw of the output's residual-error distribution
  (:func:`pkpd.stats.residual.residual_distribution`, the distribution of the model's
  observation site) around ``ipred[s, j]``;
* ``sim[s, j]`` -- a draw for a *new* subject with the same design: the random effects
  are drawn from the population distribution given the draw's typical values, IIV SDs
  and correlation, exactly as the fit's NumPyro model draws them (non-centred
  :math:`z \sim N(0, I)`, :math:`\eta = \operatorname{diag}(\omega) L z`; centred
  :math:`\log\theta \sim N(\log TV + \log f_i, \operatorname{diag}(\omega) L L^T
  \operatorname{diag}(\omega))`), then the observation from the residual-error
  distribution; this is the simulation of a visual predictive check and of NPDE;
* ``iwres[s, j]`` -- the individual weighted residual on the scale of the residual-error
  model: :math:`(\log y - \log f)/\sigma` (log-additive), :math:`(y - f)/(\sigma f)`
  (proportional), :math:`(y - f)/\sigma` (additive), :math:`(y - f)/\sqrt{\sigma_a^2 +
  \sigma_p^2 f^2}` (combined), :math:`f` = ``ipred``;

and, per subject, the posterior draws of the random effects ``eta[s', i, k]`` (all
draws) and the individual prediction on a dense time grid (for the individual-fit
pages). Censored observations are drawn uncensored (compare with the LLOQ).

One compiled program solves every subject at its observation times and on the grid
together, for the posterior, the typical and the new random effects of every draw
(equivalent to NumPyro's ``Predictive`` of the model with the random effects left
unconditioned, at half the compile time: a second ODE program would be compiled).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import PkpdError

__all__ = ["PosteriorSimulation", "simulate_posterior", "problem_for_fit", "thin_indices", "posterior_eta",
           "weighted_residual"]


def thin_indices(n_total: int, n: int) -> np.ndarray:
    """``min(n, n_total)`` evenly spaced indices into ``range(n_total)`` (deterministic)."""
    if n_total < 1:
        raise PkpdError("the fit holds no posterior draw")
    n = max(1, min(int(n), n_total))
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(int))


def problem_for_fit(fit, data=None):
    """The :class:`~pkpd.stats.population.PopulationProblem` of a fit.

    A fit made in this session holds it (``fit.problem``); a fit read with
    :func:`pkpd.load_fit` does not: it is rebuilt from the fit's model card, its recorded
    :class:`~pkpd.FitSpec` and ``data`` (the data set it was fitted to; checked against
    the fit's dataset hash or, failing that, against the observations stored with the
    fit, since the hash also covers unit metadata). When ``data`` has more subjects than
    the fit, the first or the last ``n`` subjects are tried (``pkpd demo`` fits all but
    the last patient).

    Raises
    ------
    PkpdError
        No data, or data that do not match the fit.
    """
    if getattr(fit, "problem", None) is not None and data is None:
        return fit.problem
    if data is None:
        raise PkpdError("this fit was read from a file and does not hold its data: pass the data set it was "
                        "fitted to (data=... / --data)")
    from ..data.dataset import Dataset, read_dataset
    from ..forecasting.prior import fit_model
    from ..solve.solver import SolverOptions
    from ..stats.population import FitSpec, PopulationProblem

    dataset = data if isinstance(data, Dataset) else read_dataset(data)
    post = fit.idata.posterior
    n_fit = None
    for v in ("z", "log_theta"):
        if v in post.data_vars:
            n_fit = int(post[v].shape[2])
    candidates = [dataset]
    if n_fit is not None and dataset.n_subjects > n_fit:
        ids = dataset.ids
        candidates += [dataset.subset(ids[:n_fit]), dataset.subset(ids[-n_fit:])]
    s = dict(fit.settings.get("spec") or {})
    solver = s.pop("solver", None) or {}
    fields = set(FitSpec.__dataclass_fields__) - {"solver"}
    kwargs = {k: v for k, v in s.items() if k in fields}
    for k in ("fixed", "iiv", "outputs"):
        if kwargs.get(k) is not None:
            kwargs[k] = tuple(kwargs[k])
    kwargs["prior_values"] = dict(kwargs.get("prior_values") or {})
    opts = {k: solver[k] for k in ("rtol", "atol", "max_steps", "solver", "adjoint") if k in solver}
    spec = FitSpec(**kwargs, solver=SolverOptions(**opts) if opts else FitSpec().solver)
    model = fit_model(fit)
    observed = (np.asarray(fit.idata.observed_data["DV"].values, float)
                if "observed_data" in fit.idata.groups() and "DV" in fit.idata.observed_data else None)
    problem = None
    for d in sorted(candidates, key=lambda d: d.hash != fit.dataset_hash):  # hash match first
        if d.hash == fit.dataset_hash:
            problem = PopulationProblem(model, d, spec)
            break
        # The hash covers unit metadata that may change between pkpd versions: accept data whose
        # fitted observations are exactly the fit's stored observed data.
        if observed is None:
            continue
        try:
            p = PopulationProblem(model, d, spec)
        except PkpdError:
            continue
        dv = p.observed_frame()["DV"].to_numpy(float)
        if dv.shape == observed.shape and np.allclose(dv, observed, rtol=1e-12, atol=0.0):
            problem = p
            problem.hash_note = (f"the data's hash ({d.hash[:12]}...) differs from the fit's "
                                 f"({fit.dataset_hash[:12]}...), but its {dv.size} fitted observations are "
                                 "those stored with the fit")
            break
    if problem is None:
        raise PkpdError(f"the data set {dataset.source} does not match the fit (dataset hash "
                        f"{fit.dataset_hash[:12]}..., these data {dataset.hash[:12]}...; nor do its observations "
                        "match those stored with the fit): pass the data the fit was made from, read with the "
                        "same units")
    expected = [f"log_tv_{p}" for p in problem.estimated] + [f"omega_{p}" for p in problem.iiv]
    expected += [f"sigma_{s_}" for s_ in problem.sigma_names()]
    missing = [v for v in expected if v not in post.data_vars]
    if missing:
        raise PkpdError(f"the rebuilt model does not match the fit (posterior lacks {missing})")
    return problem


def posterior_eta(problem, samples: dict) -> jnp.ndarray:
    """Random effects ``eta [N, n_real, K]`` of flat posterior samples (``{site: [N, ...]}``)."""
    if not problem.iiv:
        return jnp.zeros((next(iter(samples.values())).shape[0], problem.n_real, 0))

    return jax.vmap(problem.eta_from_sample)(samples)


def weighted_residual(kind: str, y, f, sigma: dict):
    """Individual weighted residual of observations ``y`` given predictions ``f`` (see the module notes).

    ``sigma``: ``{"sigma": s}`` or, for ``combined``, ``{"sigma_add": a, "sigma_prop": p}``.
    """
    y, f = np.asarray(y, float), np.asarray(f, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "log_additive":
            return (np.log(y) - np.log(f)) / sigma["sigma"]
        if kind == "proportional":
            return (y - f) / (sigma["sigma"] * f)
        if kind == "additive":
            return (y - f) / sigma["sigma"]
        if kind == "combined":
            return (y - f) / np.sqrt(sigma["sigma_add"] ** 2 + (sigma["sigma_prop"] * f) ** 2)
    raise PkpdError(f"unknown residual error model {kind!r}")


@dataclass
class PosteriorSimulation:
    """Predictions and predictive draws of a fit at its observations (see the module notes).

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per fitted observation (order of the fit's log-likelihood): ``LINE, ID,
        TIME, DV, DVID, CENS, OUTPUT, LLOQ``, ``PRED`` (median over draws), ``IPRED`` and
        its 5%/95% quantiles ``IPRED_lo``/``IPRED_hi``, ``IWRES`` (posterior mean of the
        individual weighted residual), ``IWRES_med`` (at the median IPRED and sigma).
    ipred, pred, ppc, sim, iwres, loglik : numpy.ndarray, shape [B, n_obs]
        ``loglik``: the pointwise log-likelihood of the fit's model (censoring included)
        at the thinned draws, as :func:`numpyro.infer.log_likelihood` gives it.
    eta : numpy.ndarray, shape [N, n_real, K]
        Posterior random effects of every draw; ``omega`` ``[N, K]`` the IIV SDs.
    draws : numpy.ndarray
        The flat indices of the ``B`` thinned draws.
    grid_t : numpy.ndarray, shape [n_real, T]
        Dense time grid per subject; ``grid`` ``{output: [B, n_real, T]}`` the individual
        predictions on it.
    ids, outputs, iiv, error_models : list
    """

    frame: pd.DataFrame
    ipred: np.ndarray
    pred: np.ndarray
    ppc: np.ndarray
    sim: np.ndarray
    iwres: np.ndarray
    loglik: np.ndarray
    eta: np.ndarray
    omega: np.ndarray
    draws: np.ndarray
    grid_t: np.ndarray
    grid: dict
    ids: list
    outputs: list
    iiv: list
    error_models: dict
    seed: int = 0
    timings: dict = field(default_factory=dict)


def _flat(samples: dict) -> dict:
    return {k: jnp.reshape(v, (-1,) + tuple(v.shape[2:])) for k, v in samples.items()}


def simulate_posterior(fit, problem=None, *, draws: int = 200, seed: int = 0, grid_points: int = 120,
                       data=None) -> PosteriorSimulation:
    """Posterior predictions and simulations of ``fit`` at its observations.

    Parameters
    ----------
    fit : pkpd.Fit
    problem : PopulationProblem, optional
        Default :func:`problem_for_fit` ``(fit, data)``.
    draws : int
        Posterior draws used (evenly thinned), ``B``.
    seed : int
        Key of the simulations: ``fold_in(PRNGKey(seed), 1)`` new random effects,
        ``fold_in(..., 2 + 10 k)`` / ``fold_in(..., 3 + 10 k)`` residuals of output ``k``
        with the posterior / new random effects.
    grid_points : int
        Points of the dense per-subject time grid of the individual fits.
    """
    import time

    from ..infer.fit import latent_samples

    t0 = time.perf_counter()
    problem = problem if problem is not None else problem_for_fit(fit, data)
    samples = _flat(latent_samples(fit.idata, problem))
    n_total = next(iter(samples.values())).shape[0]
    idx = thin_indices(n_total, draws)
    thin = {k: v[idx] for k, v in samples.items()}
    B = len(idx)
    eta_all = np.asarray(posterior_eta(problem, samples))
    omega_all = (np.stack([np.asarray(samples[f"omega_{p}"]) for p in problem.iiv], axis=-1)
                 if problem.iiv else np.zeros((n_total, 0)))

    # dense grid per subject (first to last record), solved together with the observation
    # times: one ODE program, the keys sorted by (time, record order) within each subject
    df = problem.dataset.df
    n_real, n_sub = problem.n_real, problem.n_sub
    a = problem.arrays
    t_lo = df.groupby("ID", sort=False)["TIME"].min().loc[problem.ids].to_numpy(float)
    t_hi = df.groupby("ID", sort=False)["TIME"].max().loc[problem.ids].to_numpy(float)
    grid_t = np.linspace(t_lo, t_hi, grid_points, axis=1)
    grid_pad = np.concatenate([grid_t, np.repeat(grid_t[:1], n_sub - n_real, axis=0)])
    t_obs, o_obs = np.asarray(a["t"], float), np.asarray(a["order"], float)
    n_slots = t_obs.shape[1]
    t_all = np.concatenate([t_obs, grid_pad], axis=1)
    o_all = np.concatenate([o_obs, np.full(grid_pad.shape, np.inf)], axis=1)
    perm = np.lexsort((o_all, t_all), axis=-1)
    inv = np.argsort(perm, axis=-1)
    t_m = np.take_along_axis(t_all, perm, axis=-1)
    o_m = np.take_along_axis(o_all, perm, axis=-1)
    if problem.solver.solver == "rk4-grid":
        _, data_m = problem.model.prepare(df, problem.ids, n_subjects=n_sub, eval_times=t_m, options=problem.solver)
    else:
        data_m = problem.data
    from ..solve.solver import predict_outputs
    from ..stats.residual import residual_distribution

    t_m, o_m, inv_j = jnp.asarray(t_m), jnp.asarray(o_m), jnp.asarray(inv)

    def predict(theta):
        out, _, _ = predict_outputs(problem.dynamics, data_m, theta, t_m, o_m, problem.solver)
        out = {o: jnp.take_along_axis(out[o], inv_j, axis=-1) for o in problem.outputs}
        pred = jnp.zeros_like(a["t"])
        for k, o in enumerate(problem.outputs):
            pred = jnp.where(a["out"] == k, out[o][:, :n_slots], pred)
        return pred, {o: out[o][:n_real, n_slots:] for o in problem.outputs}

    new_subject = problem.new_subject_sites

    def thetas(sample, key):
        th_i, _ = problem.params_from_sample(sample)
        log_tv = {p: sample[f"log_tv_{p}"] for p in problem.estimated}
        th_new, _ = problem.params_from_sample(new_subject(sample, key))
        return th_i, problem.individual(log_tv, None), th_new

    key = jax.random.PRNGKey(int(seed))

    @jax.jit
    def run(s, keys):
        th = jax.vmap(thetas)(s, keys)
        every = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *th)
        return jax.lax.map(predict, every, batch_size=min(3 * B, 60))

    pred_all, grid_all = run(thin, jax.random.split(jax.random.fold_in(key, 1), B))
    pred_all = np.asarray(pred_all)
    mask = np.asarray(a["mask"])[:n_real]

    def at_obs(x):  # [.., n_sub, slots] -> [.., n_obs]
        return np.asarray(x)[..., :n_real, :][..., mask]

    ipred, pred, fnew = at_obs(pred_all[:B]), at_obs(pred_all[B:2 * B]), at_obs(pred_all[2 * B:])
    grid = {o: np.asarray(g)[:B] for o, g in grid_all.items()}
    t1 = time.perf_counter()

    # observations drawn from the residual-error distribution of the model's observation
    # sites around the individual predictions: posterior random effects (ppc) or new ones (sim)
    out_idx = np.asarray(a["out"])[:n_real][mask]
    ppc = np.full_like(ipred, np.nan)
    sim = np.full_like(ipred, np.nan)
    loglik = np.full_like(ipred, np.nan)
    for k, o in enumerate(problem.outputs):
        sel = out_idx == k
        kind = problem.model.card.error[o].model
        scales = ({"sigma_add": thin[f"sigma_{o}_add"][:, None], "sigma_prop": thin[f"sigma_{o}_prop"][:, None]}
                  if kind == "combined" else {"sigma": thin[f"sigma_{o}"][:, None]})
        for target, f, stream in ((ppc, ipred[:, sel], 2), (sim, fnew[:, sel], 3)):
            bad = ~(np.isfinite(f) & (f > 0))
            d = residual_distribution(kind, jnp.asarray(np.where(bad, 1.0, f)), **scales, failed=jnp.asarray(bad))
            target[:, sel] = np.asarray(d.sample(jax.random.fold_in(key, stream + 10 * k)))
        f = ipred[:, sel]
        bad = ~(np.isfinite(f) & (f > 0))
        cens_k = np.asarray(a["cens"])[:n_real][mask][sel]
        lloq_k = np.asarray(a["lloq"])[:n_real][mask][sel]
        d = residual_distribution(kind, jnp.asarray(np.where(bad, 1.0, f)), **scales,
                                  censored=jnp.asarray(np.broadcast_to(cens_k, f.shape)),
                                  lloq=jnp.asarray(np.broadcast_to(lloq_k, f.shape)),
                                  censoring="M4" if problem.spec.censoring == "M4" else "M3", failed=jnp.asarray(bad))
        y_k = np.asarray(a["value"])[:n_real][mask][sel]
        loglik[:, sel] = np.asarray(d.log_prob(jnp.asarray(np.broadcast_to(y_k, f.shape))))
    t2 = time.perf_counter()

    frame = problem.observed_frame()
    frame["OUTPUT"] = [problem.outputs[k] for k in out_idx]
    frame["LLOQ"] = np.where(frame["CENS"].to_numpy(bool), np.asarray(a["lloq"])[:n_real][mask], np.nan)
    y = frame["DV"].to_numpy(float)
    iwres = np.full_like(ipred, np.nan)
    iwres_med = np.full(len(frame), np.nan)
    error_models = {}
    ipred_med = np.median(ipred, axis=0)
    for k, o in enumerate(problem.outputs):
        kind = problem.model.card.error[o].model
        error_models[o] = kind
        sel = out_idx == k
        if kind == "combined":
            sig = {"sigma_add": np.asarray(thin[f"sigma_{o}_add"])[:, None],
                   "sigma_prop": np.asarray(thin[f"sigma_{o}_prop"])[:, None]}
        else:
            sig = {"sigma": np.asarray(thin[f"sigma_{o}"])[:, None]}
        iwres[:, sel] = weighted_residual(kind, y[sel][None, :], ipred[:, sel], sig)
        med = {k_: np.median(v) for k_, v in sig.items()}
        iwres_med[sel] = weighted_residual(kind, y[sel], ipred_med[sel], med)
    cens = frame["CENS"].to_numpy(bool)
    iwres[:, cens] = np.nan
    iwres_med[cens] = np.nan
    frame["PRED"] = np.median(pred, axis=0)
    frame["IPRED"] = ipred_med
    frame["IPRED_lo"] = np.quantile(ipred, 0.05, axis=0)
    frame["IPRED_hi"] = np.quantile(ipred, 0.95, axis=0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # censored points: all-NaN columns
        frame["IWRES"] = np.nanmean(iwres, axis=0)
    frame["IWRES_med"] = iwres_med
    return PosteriorSimulation(
        frame=frame, ipred=ipred, pred=pred, ppc=np.asarray(ppc), sim=np.asarray(sim), iwres=iwres, loglik=loglik,
        eta=eta_all, omega=omega_all, draws=idx, grid_t=grid_t, grid=grid, ids=list(problem.ids),
        outputs=list(problem.outputs), iiv=list(problem.iiv), error_models=error_models, seed=int(seed),
        timings={"predictions_s": t1 - t0, "predictive_s": t2 - t1})
