"""``pkpd.fit``: population Bayesian fitting with NUTS, SVI or MAP, results as ArviZ InferenceData.

>>> fit = pkpd.fit("kloft2006_docetaxel", "data/example.csv", method="nuts", chains=4)
>>> fit.summary()            # typical values, IIV SDs, residual SDs: mean, sd, 90% interval, ESS, R-hat
>>> fit.save("fit.nc"); pkpd.load_fit("fit.nc")
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import replace
from functools import partial

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import PkpdError
from ..io import atomic_path
from ..model.model import Model, load_model
from ..stats.population import FitSpec, PopulationProblem
from .chees import nested_rhat
from .psis import guide_draws, log_importance_ratios, normalised, psis_diagnostics

__all__ = ["fit", "Fit", "load_fit", "ConvergenceWarning", "ApproximationNote", "psis_diagnostics", "predictive_key",
           "latent_samples", "observation_values"]

METHODS = ("nuts", "chees", "svi", "map", "laplace")
GUIDES = ("normal", "mvn", "lowrank")
PSIS_MODES = ("diagnose", "resample", "off")
#: Methods whose draws are Markov chains (ESS, R-hat, divergences apply).
SAMPLERS = ("nuts", "chees")
#: Pareto k thresholds (Vehtari et al. 2024): above ``PARETO_K_BAD`` the importance ratios have
#: (practically) infinite variance and the approximation is unreliable; between the two it is rough.
PARETO_K_NOTE, PARETO_K_BAD = 0.5, 0.7


class ConvergenceWarning(UserWarning):
    """R-hat above 1.01, divergent transitions, low ESS, an unconverged optimisation, or an
    SVI/Laplace approximation whose Pareto k exceeds 0.7."""


class ApproximationNote(UserWarning):
    """An SVI/Laplace approximation whose Pareto k is between 0.5 and 0.7: usable, but rough."""


def _as_dataset(data):
    from ..data.dataset import Dataset, read_dataset

    return data if isinstance(data, Dataset) else read_dataset(data)


def _spec(spec: FitSpec | None, options: dict) -> FitSpec:
    spec = spec or FitSpec()
    valid = set(FitSpec.__dataclass_fields__)
    unknown = set(options) - valid
    if unknown:
        raise PkpdError(f"unknown fit option(s) {sorted(unknown)}: expected {sorted(valid)}")
    for key in ("fixed", "iiv", "outputs"):
        if key in options and options[key] is not None:
            options[key] = tuple(options[key])
    return replace(spec, **options)


def fit(
    model,
    data,
    method: str = "nuts",
    *,
    spec: FitSpec | None = None,
    chains: int | None = None,
    warmup: int = 500,
    samples: int = 1000,
    seed: int = 0,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool | list = False,
    chain_method: str | None = None,
    superchains: int = 8,
    init: str = "prior",
    init_steps: int = 2000,
    progress: bool = True,
    guide: str = "normal",
    svi_steps: int = 20000,
    learning_rate: float = 0.01,
    svi_draws: int = 1000,
    tol: float = 1e-4,
    psis: str = "diagnose",
    log_likelihood: bool = True,
    posterior_predictive: bool = False,
    **options,
) -> "Fit":
    """Fit a population model to a data set.

    Parameters
    ----------
    model : Model or str
        A :class:`pkpd.Model` or a model-card name / path.
    data : Dataset, str or DataFrame
        The study data (read with :func:`pkpd.read_dataset` when not a Dataset).
    method : {"nuts", "chees", "svi", "map", "laplace"}
        Full Bayes with the No-U-Turn sampler; full Bayes with many short chains of
        ChEES-adapted jittered HMC, all vectorised (:mod:`pkpd.infer.chees`, BlackJAX: for a
        GPU; on a CPU vectorised chains cost more per chain than one NUTS chain); stochastic variational inference; the
        maximum a posteriori point estimate; or ``"laplace"``, for models without estimated
        random effects (``iiv=()``): the posterior mode in the unconstrained space and the
        normal approximation there whose covariance is the inverse Hessian of the negative
        log density at the mode (NumPyro's ``AutoLaplaceApproximation``), ``svi_draws``
        draws stored. With random effects the joint mode is degenerate (non-centred: the
        IIV SDs grow while the standardised effects shrink toward zero; centred: the SDs
        collapse), so its intervals would be wrong: it refuses them.
    spec : FitSpec, optional
        Statistical-model settings; keyword ``options`` (``fixed``, ``iiv``,
        ``covariance``, ``prior_width``, ``prior_values``, ``censoring``, ``outputs``,
        ``solver``...) override its fields.
    chains, warmup, samples : int
        Chains (default 4 for NUTS, 64 for ChEES) and iterations per chain. NUTS chains run
        in parallel on several devices, vectorised on one GPU and sequentially on a CPU
        (``chain_method`` overrides); ChEES chains always run together (``vmap``), the
        ``warmup`` adapting one step size and trajectory length for all of them.
    superchains : int
        ChEES: groups of chains sharing a (jittered) starting point; convergence is judged by
        the nested R-hat across them (``r_hat`` of :meth:`Fit.summary`).
    seed : int
        Seed of every random choice: the same seed on the same machine gives identical draws.
    target_accept, max_tree_depth, dense_mass
        NUTS settings (``dense_mass``: a dense mass matrix, or a list of site-name tuples
        for block-dense).
    init : {"prior", "svi"}
        Where NUTS chains start. ``"prior"``: at the prior typical values (random effects
        at zero, unit initial mass matrix). ``"svi"``: first fit a mean-field normal guide
        (AutoNormal, ``init_steps`` Adam steps from the prior values) and start every chain
        at its median with its variances as the initial (diagonal) inverse mass matrix;
        warm-up then adapts from there. This avoids the costly first warm-up window, where
        a unit mass matrix on a badly scaled posterior forces tiny steps and deep trees.
        The SVI time is included in the sampling time.
    init_steps : int
        Adam steps of the ``"svi"`` initialisation.
    guide : {"normal", "mvn", "lowrank"}
        SVI guide: AutoNormal, AutoMultivariateNormal or AutoLowRankMultivariateNormal.
    svi_steps, learning_rate, tol
        Optimisation budget (SVI and MAP, Adam): at most ``svi_steps`` steps, run in
        compiled chunks of 500 (the last one shorter, so exactly ``svi_steps`` run unless
        it converges first); stops early once the mean loss over the last 500 steps
        differs from the 500 before by less than ``tol`` (relative) or, for SVI, by less
        than twice its Monte Carlo standard error.
    svi_draws : int
        Draws from the fitted SVI guide (or the Laplace approximation) stored as the posterior.
    psis : {"diagnose", "resample", "off"}
        Pareto-smoothed importance sampling check of an SVI or Laplace fit (ignored by NUTS
        and MAP). For every stored draw u (in the unconstrained space where the guide is
        defined) the log importance ratio log w = log p(u, y) - log q(u) is computed
        (``-potential_energy`` of the model, Jacobian included, minus the guide's log
        density: the full-rank normal of ``"mvn"``/``"lowrank"``/Laplace, or
        the product of per-site normals of the mean-field ``"normal"`` guide), smoothed by
        :func:`arviz.psislw`, and the shape ``k`` of the Pareto tail fitted to the largest
        ratios is stored (``settings["pareto_k"]``, with the importance-sampling effective
        sample size ``settings["psis_ess"]``). ``k`` measures how far the guide is from the
        posterior: below 0.5 the draws are a good approximation, 0.5-0.7 a rough one, above
        0.7 an unreliable one whose intervals may be much too narrow (:meth:`Fit.check`
        warns). ``"diagnose"`` (default) stores the guide's draws, the diagnostic and the
        smoothed normalised log weights (``idata.sample_stats["log_weight"]``, for weighted
        summaries);
        ``"resample"`` also replaces the stored draws by an importance resample (with
        replacement, by the smoothed weights, seeded by ``seed``): closer to the posterior
        when ``k`` is small, no cure when it is large (few distinct draws remain). ``"off"``
        skips the check (one model evaluation per draw saved).
    log_likelihood : bool
        Store the pointwise log-likelihood (for LOO/WAIC): :func:`numpyro.infer.log_likelihood`
        of the model's observation sites at every posterior draw.
    posterior_predictive : bool
        Store posterior-predictive draws of the observations: :class:`numpyro.infer.Predictive`
        of the model (observation sites unconditioned) at every posterior draw, with the
        key :func:`predictive_key` ``(seed)``. Censored observations are drawn uncensored.

    Returns
    -------
    Fit
    """
    if method not in METHODS:
        raise PkpdError(f"method must be one of {METHODS}, got {method!r}")
    if init not in ("prior", "svi"):
        raise PkpdError(f"init must be 'prior' or 'svi', got {init!r}")
    if guide not in GUIDES:
        raise PkpdError(f"guide must be one of {GUIDES}, got {guide!r}")
    if psis not in PSIS_MODES:
        raise PkpdError(f"psis must be one of {PSIS_MODES}, got {psis!r}")
    chains = int(chains) if chains is not None else (64 if method == "chees" else 4)
    for name, value in (("chains", chains), ("warmup", warmup), ("samples", samples), ("svi_steps", svi_steps)):
        if int(value) < 1:
            raise PkpdError(f"{name} must be >= 1, got {value}")
    model = model if isinstance(model, Model) else load_model(model)
    dataset = _as_dataset(data)
    spec = _spec(spec, dict(options))
    problem = PopulationProblem(model, dataset, spec)
    if method == "laplace" and problem.iiv:
        raise PkpdError(f"method='laplace' needs a model without estimated random effects (iiv=()), got IIV on "
                        f"{list(problem.iiv)}: the joint mode of a hierarchical model is degenerate; use 'nuts'")
    settings = dict(method=method, seed=int(seed), spec=spec.as_dict())
    start = time.perf_counter()
    if method == "nuts":
        settings.update(chains=chains, warmup=warmup, samples=samples, target_accept=target_accept,
                        max_tree_depth=max_tree_depth, dense_mass=str(dense_mass), init=init,
                        init_steps=int(init_steps) if init != "prior" else 0)
        idata, extra = _run_nuts(problem, chains, warmup, samples, seed, target_accept, max_tree_depth,
                                 dense_mass, chain_method, progress, init, int(init_steps))
        settings.update(extra)
    elif method == "chees":
        from .chees import run_chees

        settings.update(chains=chains, warmup=warmup, samples=samples, superchains=int(superchains))
        idata, extra = run_chees(problem, chains=chains, warmup=warmup, samples=samples, seed=seed,
                                 superchains=superchains)
        settings.update(extra)
    else:
        psis = psis if method != "map" else "off"
        settings.update(guide={"svi": guide, "map": "delta", "laplace": "laplace"}[method], svi_steps=svi_steps,
                        learning_rate=learning_rate, tol=tol, svi_draws=svi_draws if method != "map" else 1,
                        psis=psis)
        idata, extra = _run_svi(problem, method, guide, svi_steps, learning_rate, svi_draws, tol, seed, progress,
                                psis)
        settings.update(extra)
    settings["wall_time_s"] = time.perf_counter() - start
    _add_observations(idata, problem, log_likelihood, posterior_predictive, seed)
    result = Fit(idata, card=model.card.raw, model_name=model.name, dataset_hash=dataset.hash, settings=settings,
                 problem=problem)
    result.check(warn=True)
    return result


def _chain_method(chains: int, requested: str | None) -> str:
    if requested:
        return requested
    if chains > 1 and jax.local_device_count() >= chains:
        return "parallel"
    if jax.default_backend() != "cpu":
        return "vectorized"
    return "sequential"


def _run_nuts(problem, chains, warmup, samples, seed, target_accept, max_tree_depth, dense_mass,
              chain_method, progress, init="prior", init_steps=2000):
    from numpyro.infer import MCMC, NUTS, init_to_value

    start = time.perf_counter()
    values, inverse_mass, init_info = problem.initial_values(), None, {}
    if init == "svi":
        values, variances, init_info = _svi_start(problem, init_steps, seed, progress)
        inverse_mass = None if variances is None else _inverse_mass(variances, dense_mass)
    kernel = NUTS(
        problem.numpyro_model(),
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=dense_mass,
        inverse_mass_matrix=inverse_mass,
        init_strategy=init_to_value(values=values),
    )
    method = _chain_method(chains, chain_method)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method=method,
                progress_bar=progress)
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging", "num_steps", "energy", "accept_prob"))
    jax.block_until_ready(mcmc.get_samples())
    elapsed = time.perf_counter() - start
    idata = az.from_numpyro(mcmc, log_likelihood=False)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    steps = np.asarray(stats["num_steps"])
    idata.sample_stats["tree_depth"] = (("chain", "draw"), np.floor(np.log2(np.maximum(steps, 1))).astype(int) + 1)
    return idata, {"chain_method": method, "sampling_time_s": elapsed,
                   "mean_leapfrog_steps": float(steps.mean()),
                   "divergences": int(np.asarray(stats["diverging"]).sum()), **init_info}


def _svi_start(problem, steps, seed, progress):
    """NUTS starting point and initial inverse mass matrix from a mean-field normal guide
    (AutoNormal) fitted by SVI: its median and its per-site variances (unconstrained).

    Returns ``(values, variances or None, info)``; None when SVI did not give finite values.
    """
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import AutoNormal

    model = problem.numpyro_model()
    guide = AutoNormal(model, init_loc_fn=init_to_value(values=problem.initial_values()))
    svi = SVI(model, guide, numpyro.optim.Adam(0.02), Trace_ELBO())
    start = time.perf_counter()
    state, losses, converged = _optimise(svi, svi.init(jax.random.PRNGKey(seed + 1)), steps, 1e-4, "svi", progress)
    params = svi.get_params(state)
    values = dict(guide.median(params))
    variances = {k[: -len("_auto_scale")]: v**2 for k, v in params.items() if k.endswith("_auto_scale")}
    info = {"init_time_s": time.perf_counter() - start, "init_steps_run": int(len(losses)),
            "init_converged": bool(converged)}
    finite = all(bool(jnp.all(jnp.isfinite(v))) for v in list(values.values()) + list(variances.values()))
    if not finite:
        warnings.warn("the SVI initialisation did not converge to finite values; NUTS starts at the prior values",
                      ConvergenceWarning, stacklevel=4)
        return problem.initial_values(), None, info
    return values, variances, info


def _inverse_mass(variances: dict, dense_mass):
    """Initial inverse mass matrix from per-site variances, in the layout NUTS expects for ``dense_mass``."""
    def flat(names):
        return jnp.concatenate([jnp.ravel(variances[k]) for k in names])

    if not isinstance(dense_mass, list):
        return flat(sorted(variances))  # ravel order of the latent dict; 1-D is read as diagonal
    blocks = {tuple(b): jnp.diag(flat(b)) for b in dense_mass}
    rest = tuple(sorted(set(variances) - {k for b in dense_mass for k in b}))
    if rest:
        blocks[rest] = flat(rest)
    return blocks


def _run_svi(problem, method, guide_name, steps, lr, draws, tol, seed, progress, psis="off"):
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import (AutoDelta, AutoLaplaceApproximation, AutoLowRankMultivariateNormal,
                                         AutoMultivariateNormal, AutoNormal)

    model = problem.numpyro_model()
    init = init_to_value(values=problem.initial_values())
    if method == "map":
        guide = AutoDelta(model, init_loc_fn=init)
    elif method == "laplace":
        guide = AutoLaplaceApproximation(model, init_loc_fn=init, hessian_fn=_gradient_difference_hessian)
    else:
        cls = {"normal": AutoNormal, "mvn": AutoMultivariateNormal, "lowrank": AutoLowRankMultivariateNormal}[guide_name]
        guide = cls(model, init_loc_fn=init)
    svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())
    key, key_draws = jax.random.split(jax.random.PRNGKey(seed))
    start = time.perf_counter()
    state, loss_trace, converged = _optimise(svi, svi.init(key), steps, tol, method, progress)
    elapsed = time.perf_counter() - start
    params = svi.get_params(state)
    extra = {}
    if method == "map":
        post = guide.sample_posterior(key_draws, params, sample_shape=(1,))
    else:
        post, log_q, unconstrained = guide_draws(guide, params, key_draws, draws)
    posterior = {k: np.asarray(v)[None] for k, v in post.items() if not k.startswith("obs_")}
    if method == "laplace" and not all(np.all(np.isfinite(v)) for v in posterior.values()):
        raise PkpdError("the Laplace approximation failed: the Hessian of the negative log density at the mode is "
                        "not positive definite (not at a mode: raise svi_steps, or fix weakly identified parameters)")
    if method != "map" and psis != "off":
        start_psis = time.perf_counter()
        log_w = log_importance_ratios(model, unconstrained, log_q, parallel=_predictive_options()["parallel"])
        log_w_smooth, k, ess = psis_diagnostics(log_w)
        extra.update(pareto_k=k, psis_ess=ess, psis_time_s=time.perf_counter() - start_psis)
        if psis == "resample" and np.isfinite(k):
            rng = np.random.default_rng([int(seed), 17])
            index = rng.choice(log_w.size, size=log_w.size, replace=True, p=normalised(log_w_smooth))
            posterior = {name: v[:, index] for name, v in posterior.items()}
            extra["psis_distinct_draws"] = int(np.unique(index).size)
    stats = {}
    if method != "map" and psis == "diagnose":
        stats["log_weight"] = log_w_smooth[None]
    idata = az.from_dict(posterior=posterior, sample_stats=stats or None)
    extra.update({"steps_run": int(len(loss_trace)), "converged": converged, "final_loss": float(loss_trace[-1]),
                  "optimisation_time_s": elapsed})
    return idata, extra


def _gradient_difference_hessian(f, x, step=1e-4):
    """Hessian of ``f`` at ``x`` by central differences of its reverse-mode gradient, symmetrised.

    The Laplace fit's Hessian: ``jax.hessian`` (forward over reverse) cannot differentiate
    the solver's checkpointed reverse-mode adjoint (a ``custom_vjp``), and the gradient is
    exact, so one difference per dimension (error ~``step**2``, far below the curvature's
    scale on the unconstrained space) is enough. ``2 n`` gradients, vmapped.
    """
    grad = jax.grad(f)
    eye = jnp.eye(x.shape[0], dtype=x.dtype) * step
    columns = (jax.vmap(grad)(x + eye) - jax.vmap(grad)(x - eye)) / (2.0 * step)
    return 0.5 * (columns + columns.T)


def _optimise(svi, state, steps, tol, method, progress, chunk=500):
    """Run ``svi`` in jitted chunks of ``chunk`` steps until converged or ``steps`` are spent.

    Exactly ``steps`` steps run unless it converges first (the last chunk is shorter when
    ``chunk`` does not divide ``steps``). Converged when the mean loss of the last chunk
    differs from the previous chunk's by less than ``tol`` (relative) or, for SVI (noisy
    ELBO; MAP's loss is not noisy), than twice its Monte Carlo standard error. Returns
    ``(state, losses, converged)``.
    """

    @partial(jax.jit, static_argnums=1)
    def run_chunk(state, length):
        def body(s, _):
            s, loss = svi.update(s)
            return s, loss
        return jax.lax.scan(body, state, None, length=length)

    losses, converged, previous, done = [], False, None, 0
    while done < steps:
        length = min(chunk, steps - done)
        state, loss = run_chunk(state, length)
        done += length
        loss = np.asarray(loss)
        losses.append(loss)
        finite = loss[np.isfinite(loss)]
        current = (float(finite.mean()), float(finite.var()) / max(len(finite), 1)) if finite.size else (np.inf, 0.0)
        if progress:
            print(f"\r{method.upper()} step {done}: loss {current[0]:.4f}", end="", flush=True)
        if previous is not None and np.isfinite(current[0]):
            change = abs(previous[0] - current[0])
            noise = 2.0 * np.sqrt(previous[1] + current[1]) if method == "svi" else 0.0
            if change <= max(tol * max(1.0, abs(current[0])), noise):
                converged = True
                break
        previous = current
    if progress:
        print()
    return state, np.concatenate(losses), converged


#: ``jax.random.fold_in(PRNGKey(seed), PREDICTIVE_STREAM)`` keys the posterior-predictive draws.
PREDICTIVE_STREAM = 1


def predictive_key(seed: int):
    """The key of a fit's posterior-predictive draws: ``fold_in(PRNGKey(seed), PREDICTIVE_STREAM)``."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), PREDICTIVE_STREAM)


def latent_samples(idata, problem: PopulationProblem) -> dict:
    """The posterior draws of the model's latent sample sites, ``{site: [chain, draw, ...]}``.

    The input of :func:`numpyro.infer.log_likelihood` and :class:`numpyro.infer.Predictive`
    with ``batch_ndims=2`` (deterministic sites such as ``tv_<p>`` are left out: the model
    recomputes them).
    """
    post = idata.posterior
    names = [f"log_tv_{p}" for p in problem.estimated] + [f"omega_{p}" for p in problem.iiv]
    names += [f"sigma_{s}" for s in problem.sigma_names()]
    names += [v for v in ("z", "log_theta", "L_corr") if v in post.data_vars]
    return {v: jnp.asarray(post[v].values) for v in names}


def observation_values(problem: PopulationProblem, per_site: dict) -> np.ndarray:
    """Values of the observation sites at the fitted observations, ``[..., n_obs]``.

    ``per_site`` maps ``obs_<output>`` to arrays ``[..., n_real, n_slots]`` (log-likelihoods
    or draws); the result follows :meth:`PopulationProblem.observed_frame`'s order.
    """
    a = problem.arrays
    mask = np.asarray(a["mask"])
    if mask[problem.n_real:].any():  # pragma: no cover - padded subjects carry no observation
        raise PkpdError("padded subjects hold observations")
    mask = mask[: problem.n_real]
    out = np.asarray(a["out"])[: problem.n_real]
    values = None
    for k, o in enumerate(problem.outputs):
        site = np.asarray(per_site[f"obs_{o}"])
        values = site if values is None else np.where(out == k, site, values)
    return values[..., mask]


def _predictive_options() -> dict:
    # Over draws: one vectorised solve (GPU), or draw after draw (CPU, constant memory).
    return {"parallel": jax.default_backend() != "cpu"}


def _add_observations(idata, problem: PopulationProblem, log_likelihood: bool, posterior_predictive: bool, seed):
    """Add the ``observed_data`` group and, on request, ``log_likelihood`` and ``posterior_predictive``
    (variable ``DV``, dims ``(chain, draw, obs)``; ``obs`` in the order of
    :meth:`PopulationProblem.observed_frame`), computed by NumPyro from the model's
    observation sites."""
    import xarray as xr
    from numpyro.infer import Predictive
    from numpyro.infer import log_likelihood as numpyro_log_likelihood

    obs = problem.observed_frame()
    if "observed_data" in idata.groups():  # from_numpyro's (one variable per observation site, padded)
        delattr(idata, "observed_data")
    idata.add_groups(observed_data=xr.Dataset({"DV": (("obs",), obs["DV"].to_numpy(float))},
                                              coords={"obs": np.arange(len(obs))}))
    if not (log_likelihood or posterior_predictive):
        return
    post = idata.posterior
    samples = latent_samples(idata, problem)
    model = problem.numpyro_model()
    sites = [f"obs_{o}" for o in problem.outputs]
    options = _predictive_options()
    coords = {"chain": post.chain.values, "draw": post.draw.values, "obs": np.arange(len(obs))}
    dims = ("chain", "draw", "obs")
    if log_likelihood:
        ll = jax.jit(lambda s: numpyro_log_likelihood(model, s, batch_ndims=2, **options))(samples)
        idata.add_groups(log_likelihood=xr.Dataset({"DV": (dims, observation_values(problem, ll))}, coords=coords))
    if posterior_predictive:
        predictive = Predictive(model, samples, return_sites=sites, batch_ndims=2, **options)
        draws = jax.jit(lambda key: predictive(key, observed=False))(predictive_key(seed))
        idata.add_groups(posterior_predictive=xr.Dataset({"DV": (dims, observation_values(problem, draws))},
                                                         coords=coords))


class Fit:
    """A fitted population model.

    Attributes
    ----------
    idata : arviz.InferenceData
        ``posterior`` (``tv_<name>`` typical values, ``omega_<name>`` IIV SDs on the log
        scale, ``sigma_<output>`` residual SDs, ``z`` standardised random effects (non-centred)
        or ``log_theta`` individual log parameters (centred),
        ``corr`` with a full covariance), ``sample_stats`` (NUTS), ``observed_data``,
        ``log_likelihood`` and, on request, ``posterior_predictive`` (variable ``DV``, dims
        ``(chain, draw, obs)``: NumPyro's ``log_likelihood`` and ``Predictive`` of the
        model's observation sites, see :func:`fit`).
    model_name : str
    card : dict
        The model card the fit came from (as parsed TOML).
    dataset_hash : str
    settings : dict
        Method, seed, sampler/optimiser settings and the statistical-model spec.
    """

    def __init__(self, idata, *, card, model_name, dataset_hash, settings, problem=None):
        self.idata = idata
        self.card = card
        self.model_name = model_name
        self.dataset_hash = dataset_hash
        self.settings = settings
        self.problem = problem

    def __repr__(self):
        post = self.idata.posterior
        return (f"Fit({self.model_name!r}, method={self.settings.get('method')!r}, "
                f"{post.sizes['chain']} chain(s) x {post.sizes['draw']} draws)")

    @property
    def method(self) -> str:
        return self.settings["method"]

    def parameter_names(self) -> list[str]:
        """Population parameters reported by :meth:`summary` (typical values, IIV SDs, residual SDs)."""
        names = list(self.idata.posterior.data_vars)
        order = [n for n in names if n.startswith("tv_")]
        order += [n for n in names if n.startswith("omega_")]
        order += [n for n in names if n.startswith("sigma_")]
        return order

    def summary(self, interval: float = 0.9) -> pd.DataFrame:
        """Mean, sd, equal-tailed interval, bulk and tail ESS and R-hat of each population parameter."""
        post = self.idata.posterior
        lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
        rows = []
        multi = post.sizes["chain"] > 1 or post.sizes["draw"] > 3
        for name in self.parameter_names():
            x = post[name].values.reshape(post.sizes["chain"], post.sizes["draw"])
            row = {"parameter": name, "mean": x.mean(), "sd": x.std(ddof=1) if x.size > 1 else 0.0,
                   f"q{lo * 100:g}%": np.quantile(x, lo), f"q{hi * 100:g}%": np.quantile(x, hi)}
            if self.method in SAMPLERS and multi:
                row["ess_bulk"] = float(az.ess(x, method="bulk"))
                row["ess_tail"] = float(az.ess(x, method="tail"))
                if self.method == "chees":  # many short chains: nested R-hat across the superchains
                    row["r_hat"] = float(nested_rhat(x, int(self.settings.get("superchains", 8))))
                else:
                    row["r_hat"] = float(az.rhat(x)) if post.sizes["chain"] > 1 else np.nan
            rows.append(row)
        return pd.DataFrame(rows).set_index("parameter")

    def diagnostics(self) -> dict:
        """Divergences, max R-hat, min bulk/tail ESS and E-BFMI per chain (NUTS); for SVI and
        Laplace fits, convergence of the optimisation and, unless ``psis="off"``, the PSIS
        Pareto k and importance-sampling ESS of the approximation (see :func:`fit`)."""
        if self.method not in SAMPLERS:
            out = {"method": self.method, "converged": bool(self.settings.get("converged", True))}
            for key in ("pareto_k", "psis_ess"):
                if key in self.settings:
                    out[key] = float(self.settings[key])
            return out
        table = self.summary()
        stats = self.idata.sample_stats
        out = {
            "divergences": int(stats["diverging"].values.sum()),
            "max_r_hat": (float(np.nanmax(table["r_hat"])) if "r_hat" in table and table["r_hat"].notna().any()
                          else np.nan),  # R-hat needs two chains or more
            "min_ess_bulk": float(table["ess_bulk"].min()) if "ess_bulk" in table else np.nan,
            "min_ess_tail": float(table["ess_tail"].min()) if "ess_tail" in table else np.nan,
            "mean_tree_depth": float(stats["tree_depth"].values.mean()) if "tree_depth" in stats else np.nan,
        }
        try:
            out["bfmi"] = [float(b) for b in az.bfmi(self.idata)]
        except Exception:  # noqa: BLE001 - E-BFMI needs energy; absent for a single draw
            out["bfmi"] = []
        return out

    def check(self, warn: bool = True) -> list[str]:
        """Plain-language convergence problems (also issued as :class:`ConvergenceWarning`).

        For SVI and Laplace fits with a Pareto k (see ``psis`` in :func:`fit`): k > 0.7 is a
        problem (the approximation is unreliable, its intervals may be too narrow); 0.5 < k
        <= 0.7 is not returned, only issued as an :class:`ApproximationNote` when ``warn``.
        """
        problems, notes = [], []
        d = self.diagnostics()
        if self.method in SAMPLERS:
            n_draws = self.idata.posterior.sizes["chain"] * self.idata.posterior.sizes["draw"]
            if d["divergences"] > 0:
                problems.append(f"{d['divergences']} divergent transitions: the posterior may be biased "
                                "(raise target_accept, reparameterise, or check the model)")
            if np.isfinite(d["max_r_hat"]) and d["max_r_hat"] > 1.01:
                what = "nested R-hat" if self.method == "chees" else "R-hat"
                problems.append(f"{what} up to {d['max_r_hat']:.3f} (> 1.01): chains disagree; run longer")
            if np.isfinite(d["min_ess_bulk"]) and d["min_ess_bulk"] < min(400, 0.1 * n_draws):
                problems.append(f"bulk ESS as low as {d['min_ess_bulk']:.0f}: intervals are imprecise")
            low_bfmi = [b for b in d["bfmi"] if b < 0.3]
            if low_bfmi:
                problems.append(f"E-BFMI {min(low_bfmi):.2f} < 0.3 in {len(low_bfmi)} chain(s)")
        elif not d["converged"]:
            problems.append(f"{self.method.upper()} did not converge in {self.settings.get('steps_run')} steps "
                            f"(relative loss change > {self.settings.get('tol')}): increase svi_steps or "
                            "learning_rate")
        if self.method not in SAMPLERS and "pareto_k" in d:
            what = "the Laplace approximation" if self.method == "laplace" else (
                f"the SVI approximation (guide {self.settings.get('guide')!r})")
            k, ess = d["pareto_k"], d.get("psis_ess", np.nan)
            if not k <= PARETO_K_BAD:
                problems.append(f"{what} is unreliable: Pareto k = {k:.2f} (> {PARETO_K_BAD}; importance-sampling "
                                f"ESS {ess:.0f} of {self.settings.get('svi_draws')} draws): its intervals may be "
                                "too narrow; use method='nuts'")
            elif k > PARETO_K_NOTE:
                notes.append(f"{what} is rough: Pareto k = {k:.2f} (0.5-0.7): its intervals may be somewhat too "
                             "narrow; check important conclusions with method='nuts'")
        if warn:
            for p in problems:
                warnings.warn(p, ConvergenceWarning, stacklevel=3)
            for p in notes:
                warnings.warn(p, ApproximationNote, stacklevel=3)
        return problems

    def typical_values(self) -> dict:
        """Posterior means of the typical values ``{name: value}``."""
        post = self.idata.posterior
        return {n[3:]: float(post[n].mean()) for n in post.data_vars if n.startswith("tv_")}

    def save(self, path) -> None:
        """Write the fit to netCDF atomically (an interrupted save leaves no file)."""
        meta = {"model_name": self.model_name, "card": self.card, "dataset_hash": self.dataset_hash,
                "settings": self.settings, "pkpd_version": _version()}
        idata = self.idata.copy()
        idata.posterior.attrs["pkpd"] = json.dumps(meta, default=_json_default)
        with atomic_path(path, ".nc") as tmp:
            idata.to_netcdf(str(tmp), engine="h5netcdf")


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj)
    return str(obj)


def _version() -> str:
    from .._version import __version__

    return __version__


def load_fit(path) -> Fit:
    """Read a fit written by :meth:`Fit.save`."""
    from pathlib import Path

    if not Path(path).is_file():
        raise PkpdError(f"fit file {str(path)!r} does not exist")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
        meta = json.loads(idata.posterior.attrs["pkpd"])
    except (OSError, KeyError, ValueError) as err:
        raise PkpdError(f"{path} is not a pkpd fit file: {err}") from None
    idata.load() if hasattr(idata, "load") else None
    return Fit(idata, card=meta["card"], model_name=meta["model_name"], dataset_hash=meta["dataset_hash"],
               settings=meta["settings"])



