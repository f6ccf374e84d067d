r"""The hierarchical (nonlinear mixed-effects) statistical model, in NumPyro.

For subject :math:`i` and estimated parameter :math:`p`,

.. math::

    \log \theta_{ip} = \log TV_p + \log f_{ip}(\text{covariates}) + \eta_{ip}, \qquad
    \eta_i = \operatorname{diag}(\omega) L z_i, \; z_i \sim N(0, I)

(non-centred; :math:`L` the Cholesky factor of the IIV correlation, identity for a
diagonal covariance, :math:`L \sim \mathrm{LKJ}(\eta_{LKJ})` for a full one). The
centred form (``FitSpec.parameterisation="centred"``) samples
:math:`\log \theta_i \sim N(\log TV + \log f_i, \operatorname{diag}(\omega) L L^T
\operatorname{diag}(\omega))` directly: the same model, better conditioned when every
subject is rich in data (Papaspiliopoulos, Roberts and Skold 2007). Priors:
:math:`\log TV_p \sim N(\log v_p, w_p)` with :math:`v_p` the card's literature value and
:math:`w_p` the prior width; :math:`\omega_p \sim \mathrm{HalfNormal}(s_\omega)`;
residual SDs :math:`\sim \mathrm{HalfNormal}(s_\sigma)`.

Observations :math:`y_{ij}` of output :math:`k` with prediction :math:`f_{ij}` follow the
output's residual-error model, a NumPyro distribution from
:func:`pkpd.stats.residual.residual_distribution` (``log_additive``: :math:`\log y \sim
N(\log f, \sigma)`; ``proportional``: :math:`y \sim N(f, \sigma f)`; ``additive``:
:math:`y \sim N(f, \sigma)`; ``combined``: :math:`y \sim N(f, \sqrt{\sigma_a^2 +
\sigma_p^2 f^2})`). Censored observations (below LLOQ) contribute :math:`\log P(Y <
LLOQ)` (Beal's M3) or, with M4, :math:`\log[P(0 < Y < LLOQ)/P(Y > 0)]` (identical to M3
on the log scale). The log-additive density is that of :math:`\log y` (no Jacobian; see
:mod:`pkpd.stats.residual`).

In the NumPyro model the observations are one observed sample site per output,
``obs_<output>`` (e.g. ``obs_ANC``), of shape ``[subjects, observation slots]`` inside
the ``subjects`` and ``slots`` plates: the padded observation arrays, with the
distribution masked (``Distribution.mask``) to the slots holding that output's fitted
observations, so padding and the other outputs contribute nothing
(``sample(..., obs_mask=)`` is not used: NumPyro would turn the unobserved slots into
latent variables to impute). NumPyro's own machinery then gives the pointwise
log-likelihood (:func:`numpyro.infer.log_likelihood`) and the posterior predictive
(:class:`numpyro.infer.Predictive`, with ``observed=False``).

The likelihood is vectorised over subjects (padded arrays with masks, one vmapped ODE
solve); a failed solve makes the subject's log-likelihood :math:`-\infty` (the failed
points' log density is :math:`-\infty`), which NUTS counts as a divergence.

References
----------
Papaspiliopoulos O, Roberts GO, Skold M. A general framework for the parametrization of
hierarchical models. Stat Sci 2007;22(1):59-73.
Beal SL. Ways to fit a PK model with some data below the quantification limit.
J Pharmacokinet Pharmacodyn 2001;28(5):481-504.
Lewandowski D, Kurowicka D, Joe H. Generating random correlation matrices based on vines
and extended onion method. J Multivar Anal 2009;100(9):1989-2001.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd

from ..errors import ModelError
from ..model.model import Model, covariate_factors, individual_log_value
from ..solve.solver import AUTO_SOLVER, SolverOptions, predict_outputs
from .residual import ERROR_MODELS, residual_distribution

__all__ = ["FitSpec", "PopulationProblem"]

#: Most halvings of a subject's ``rk4-grid`` spacings at set-up (0.5 h -> 7.8 min after a dose).
GRID_REFINEMENTS = 6


@dataclass(frozen=True)
class FitSpec:
    """Settings of the statistical model (every field is recorded with the fit).

    Parameters
    ----------
    fixed : tuple of str
        Parameters held at their card value (no prior, no IIV). Card parameters marked
        ``fixed = true`` and column-valued ones are always fixed, and so are the PK
        parameters when no concentration is fitted.
    iiv : tuple of str or None
        Parameters with IIV (default: those with a non-zero IIV in the card).
    covariance : {"diag", "full"}
        Diagonal IIV, or a full correlation matrix with an LKJ prior.
    prior_width : float
        SD of the log-normal priors on typical values (default 0.5).
    prior_values : dict
        Prior medians replacing the card's values (name -> value).
    omega_prior_scale : float
        Half-normal scale of the IIV SDs (log scale).
    sigma_prior_scale : float
        Half-normal scale of residual SDs.
    lkj_eta : float
        LKJ concentration (full covariance).
    censoring : {"M3", "M4", "drop"}
        Treatment of observations flagged below LLOQ.
    outputs : tuple of str or None
        Outputs to fit (default: every model output the data observes).
    solver : SolverOptions
        ODE settings of the likelihood (default: the card's integrator, Tsit5 unless it
        names one, ``rtol`` 1e-6, ``atol`` 1e-8). With ``solver="rk4-grid"`` each subject's
        grid is checked at set-up against a tight adaptive solve (typical values and a random
        effect drawn from the prior) and refined (every spacing halved) until its
        predictions agree to ``grid_tolerance`` (relative); if :data:`GRID_REFINEMENTS`
        refinements do not suffice, the card's adaptive integrator is used with a warning.
    grid_tolerance : float
        Accuracy required of the ``"rk4-grid"`` solver (default 1e-4, far below residual
        error).
    parameterisation : {"noncentred", "centred"} or tuple of str
        How the random effects are sampled. ``"noncentred"`` (default) samples standard
        normal ``z`` with eta_i = diag(omega) L z_i: best when the data say little about
        each subject. ``"centred"`` samples the individual log parameters ``log_theta``
        ~ N(log TV + log f_i, Sigma) directly: best when every subject is well informed
        (rich PK and count series), where the non-centred form makes ``z`` and the
        population parameters strongly correlated and NUTS takes tiny steps. A tuple of
        IIV parameter names: **partial centring**, those parameters centred and the
        others non-centred given them (see :meth:`PopulationProblem.partial_eta`), for
        studies where some individual parameters are well identified and others (e.g.
        a peripheral volume) are not.
    """

    fixed: tuple = ()
    iiv: tuple | None = None
    covariance: str = "diag"
    prior_width: float = 0.5
    prior_values: dict = field(default_factory=dict)
    omega_prior_scale: float = 0.5
    sigma_prior_scale: float = 0.5
    lkj_eta: float = 2.0
    censoring: str = "M3"
    outputs: tuple | None = None
    solver: SolverOptions = SolverOptions(rtol=1e-6, atol=1e-8)
    grid_tolerance: float = 1e-4
    parameterisation: str = "noncentred"

    def __post_init__(self):
        if self.covariance not in ("diag", "full"):
            raise ModelError(f"covariance must be 'diag' or 'full', got {self.covariance!r}")
        if self.censoring not in ("M3", "M4", "drop"):
            raise ModelError(f"censoring must be 'M3', 'M4' or 'drop', got {self.censoring!r}")
        if isinstance(self.parameterisation, (list, tuple)):
            names = tuple(self.parameterisation)
            if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ModelError("parameterisation as a tuple must name distinct IIV parameters to centre, "
                                 f"got {self.parameterisation!r}")
            object.__setattr__(self, "parameterisation", names)
        elif self.parameterisation not in ("noncentred", "centred"):
            raise ModelError("parameterisation must be 'noncentred', 'centred' or a tuple of IIV parameter names "
                             f"to centre, got {self.parameterisation!r}")
        if not self.prior_width > 0:
            raise ModelError(f"prior_width must be > 0, got {self.prior_width!r}")

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "solver"}
        out["prior_values"] = dict(self.prior_values)
        out["solver"] = {k: getattr(self.solver, k) for k in ("rtol", "atol", "max_steps", "solver", "adjoint")}
        return out


class PopulationProblem:
    """A model card + data set + :class:`FitSpec`: host arrays, the NumPyro model and the likelihood.

    Attributes
    ----------
    estimated : tuple of str
        Parameters with a typical value to estimate (log scale).
    iiv : tuple of str
        Parameters with IIV (subset of ``estimated``).
    outputs : tuple of str
        Fitted outputs.
    """

    def __init__(self, model: Model, dataset, spec: FitSpec = FitSpec()):
        self.model = model
        self.dataset = dataset
        self.dose_units = getattr(dataset, "dose_units", {})
        self.spec = spec
        card = model.card
        df = dataset.df.reset_index(drop=True)
        self.ids = list(dataset.ids)
        n = len(self.ids)
        params = model.parameters
        unknown = [p for p in list(spec.fixed) + list(spec.iiv or ()) + list(spec.prior_values)
                   if p not in params]
        if unknown:
            raise ModelError(f"unknown parameter(s) {unknown}: the model has {list(params)}")
        self.columns = {p: s.column for p, s in params.items() if s.column}
        fixed = {p for p, s in params.items() if s.fixed} | set(spec.fixed) | set(self.columns)
        # Without concentration data the PK is not identifiable: keep it at the card's values
        # (the sequential PK-then-PD approach) unless the caller asks for IIV on it.
        fits_conc = "CONC" in (spec.outputs or dataset.observation_type_names) and "CONC" in model.outputs
        if not fits_conc:
            fixed |= set(model.dynamics.pk_parameter_names) - set(spec.iiv or ())
        self.estimated = tuple(p for p in params if p not in fixed)
        self.fixed = {p: params[p].value for p in params if p in fixed and p not in self.columns}
        if spec.iiv is None:
            iiv = [p for p in self.estimated if params[p].omega > 0]
        else:
            iiv = list(spec.iiv)
            bad = [p for p in iiv if p not in self.estimated]
            if bad:
                raise ModelError(f"IIV requested on fixed parameter(s) {bad}")
        self.iiv = tuple(iiv)
        par = spec.parameterisation
        if isinstance(par, tuple):
            bad = [p for p in par if p not in self.iiv]
            if bad:
                raise ModelError(f"parameterisation: {bad} have no IIV here (IIV parameters: {list(self.iiv)})")
            # all or none centred: the plain forms (same model, simpler sites)
            par = "centred" if len(par) == len(self.iiv) else par
        self.parameterisation = par
        self.prior_loc = {p: float(np.log(spec.prior_values.get(p, params[p].value))) for p in self.estimated}

        # Outputs observed in the data and produced by the model.
        type_names = dataset.observation_type_names
        observed = [n_ for n_ in type_names if n_ in model.outputs]
        outputs = tuple(spec.outputs) if spec.outputs else tuple(observed)
        for o in outputs:
            if o not in model.outputs:
                raise ModelError(f"output {o!r} is not produced by model {model.name!r} ({model.outputs})")
            if o not in card.error:
                raise ModelError(f"model card {card.name!r} has no residual error model for {o!r}")
            if card.error[o].model not in ERROR_MODELS:
                raise ModelError(f"unknown residual error model {card.error[o].model!r} for {o}")
        if not outputs:
            raise ModelError(
                f"the data observe {list(type_names)} but model {model.name!r} predicts {list(model.outputs)}: "
                "nothing to fit"
            )
        self.outputs = outputs

        # Observations (padded, bucketed) and the record order of each.
        obs = dataset.observation_arrays()
        type_of = np.array([type_names.index(o) for o in outputs])
        fit_mask = obs.mask & np.isin(obs.dvid, type_of)
        if spec.censoring == "drop":
            fit_mask &= ~obs.cens
        out_index = np.zeros_like(obs.dvid)
        for k, idx in enumerate(type_of):
            out_index[obs.dvid == idx] = k
        self.n_sub = obs.time.shape[0]
        value = np.where(fit_mask, obs.value, 1.0)
        for k, o in enumerate(outputs):
            if card.error[o].model == "log_additive":
                bad = fit_mask & (out_index == k) & ~obs.cens & (value <= 0)
                if bad.any():
                    lines = df["LINE"].to_numpy()[obs.row[bad]][:5]
                    raise ModelError(f"{o} values must be > 0 for a log-scale error model (lines {list(lines)}); "
                                     "flag values below the LLOQ as censored")
        order = np.where(obs.row >= 0, obs.row, np.inf).astype(float)
        self.arrays = {
            "t": jnp.asarray(obs.time),
            "order": jnp.asarray(order),
            "value": jnp.asarray(value),
            "log_value": jnp.asarray(np.log(np.where(value > 0, value, 1.0))),
            "out": jnp.asarray(out_index),
            "cens": jnp.asarray(obs.cens & fit_mask),
            "lloq": jnp.asarray(np.where(obs.cens & fit_mask, np.maximum(obs.lloq, 1e-300), 1.0)),
            "mask": jnp.asarray(fit_mask),
        }
        self.obs = obs
        self.n_obs = int(fit_mask.sum())

        # Subject-level inputs: dose events, driver data, covariate factors, column values.
        self.solver = model.solver_options(spec.solver)  # the card's integrator for solver='auto'
        self.grid_error = self.grid_levels = None
        self.dynamics, self.data = model.prepare(df, self.ids, n_subjects=self.n_sub, eval_times=obs.time,
                                                 eval_mask=obs.mask, options=self.solver,
                                                 dose_units=self.dose_units)
        cov = model.subject_covariates(df, self.ids)
        pad = lambda v: np.concatenate([np.asarray(v, float), np.repeat(np.asarray(v, float)[:1], self.n_sub - n)])  # noqa: E731
        factors = covariate_factors(card, cov) if card.covariates else {}
        self.log_factor = {p: jnp.asarray(np.log(pad(f))) for p, f in factors.items()}
        self.column_values = {p: jnp.asarray(pad(cov[c])) for p, c in self.columns.items()}
        self.n_real = n
        if self.solver.solver == "rk4-grid":
            self._check_grid(df, obs)

    def _check_grid(self, df, obs):
        """Refine each subject's fixed grid until it matches a tight adaptive solve (see
        ``FitSpec.grid_tolerance``).

        Each subject is checked at the prior typical values with a probe random effect
        (standard normal draws clipped to +-2, times the omegas) drawn from a generator
        seeded by the subject's ID, so a subject's grid does not depend on the other
        subjects of the data set (a forecast for a ward gives each patient the grid it
        would get alone). A subject whose predictions are further than the tolerance from
        the tight solve has its spacings halved (up to :data:`GRID_REFINEMENTS` times); grids are padded to a
        common length. ``grid_levels`` records the halvings per subject, ``grid_error`` the
        largest remaining error, and ``solver`` the finest spacings used (so code that
        rebuilds grids from it is never coarser).
        """
        import warnings
        import zlib

        from ..solve.solver import build_grids, grid_spacings

        init = self.initial_values()
        eta = None
        if self.iiv:
            omega = np.array([init[f"omega_{p}"] for p in self.iiv])
            z = np.stack([np.random.default_rng([12345, zlib.crc32(str(i).encode())]).normal(size=len(self.iiv))
                          for i in self.ids])
            eta = jnp.asarray(np.clip(z, -2, 2) * omega)
        theta = self.individual({p: init[f"log_tv_{p}"] for p in self.estimated}, eta)
        tight = self.model.solver_options(SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000))
        _, ref_data = self.model.prepare(df, self.ids, n_subjects=self.n_sub, dose_units=self.dose_units)
        a = self.arrays
        ref = predict_outputs(self.dynamics, ref_data, theta, a["t"], a["order"], tight)[0]
        mask, out_index = np.asarray(a["mask"]), np.asarray(a["out"])
        base = self.solver
        levels = np.zeros(self.n_sub, dtype=int)
        for attempt in range(GRID_REFINEMENTS + 1):
            if attempt:
                grid = build_grids(df, self.ids, obs.time, obs.mask, base, self.n_sub, levels)
                self.data = {**self.data, "grid": jnp.asarray(grid)}
            out, _, _ = predict_outputs(self.dynamics, self.data, theta, a["t"], a["order"], base)
            err = np.zeros(self.n_sub)
            for k, o in enumerate(self.outputs):
                r, g = np.asarray(ref[o]), np.asarray(out[o])
                sel = mask & (out_index == k) & (np.abs(r) > 1e-12)
                rel = np.where(sel, np.abs(g - r) / np.where(sel, np.abs(r), 1.0), 0.0)
                err = np.maximum(err, rel.max(axis=1))
            err[self.n_real:] = 0.0
            self.grid_error = float(err.max())
            bad = err > self.spec.grid_tolerance
            if not bad.any():
                self.grid_levels = levels[: self.n_real].copy()
                fine, medium, coarse = grid_spacings(base, int(levels.max()))
                self.solver = dataclasses.replace(base, grid_fine=fine, grid_medium=medium, grid_coarse=coarse)
                return
            if attempt == GRID_REFINEMENTS:
                break
            levels[bad] += 1
        # the card's adaptive integrator (Tsit5 unless it names one); keeps the adjoint
        fallback = self.model.solver_options(
            dataclasses.replace(self.solver, solver=AUTO_SOLVER, rtol=1e-6, atol=1e-8))
        warnings.warn(f"the rk4-grid solver stays {self.grid_error:.1e} (relative) from a tight solve after "
                      f"refinement; using the adaptive {fallback.solver.capitalize()} solver instead", stacklevel=3)
        self.grid_levels = None
        self.solver = fallback
        self.dynamics, self.data = self.model.prepare(df, self.ids, n_subjects=self.n_sub, dose_units=self.dose_units)

    # ------------------------------------------------------------------ parameters
    def individual(self, log_tv: dict, eta) -> dict:
        """Individual parameters ``{name: [n_sub]}`` from log typical values and ``eta [n_real, K]``."""
        theta = {}
        for p in self.model.parameter_names:
            if p in self.column_values:
                theta[p] = self.column_values[p]
                continue
            if p in log_tv:
                log_typical = jnp.broadcast_to(log_tv[p], (self.n_sub,))
            else:
                log_typical = jnp.full((self.n_sub,), np.log(self.fixed[p]))
            e = 0.0
            if eta is not None and p in self.iiv:
                e = eta[:, self.iiv.index(p)]
                e = jnp.concatenate([e, jnp.repeat(e[:1], self.n_sub - self.n_real)])
            theta[p] = jnp.exp(individual_log_value(log_typical, self.log_factor.get(p, 0.0), e))
        return theta

    def mean_log_theta(self, log_tv: dict):
        """Population mean of the individual log parameters with IIV, ``[n_real, K]``:
        log typical value plus the subject's log covariate factor."""
        cols = []
        for p in self.iiv:
            m = jnp.broadcast_to(log_tv[p], (self.n_real,))
            if p in self.log_factor:
                m = m + self.log_factor[p][: self.n_real]
            cols.append(m)
        return jnp.stack(cols, axis=-1)

    def predictions(self, theta: dict):
        """Predicted value of every padded observation ``[n_sub, n_obs]`` and solve status ``[n_sub]``."""
        a = self.arrays
        outputs, ok, _ = predict_outputs(self.dynamics, self.data, theta, a["t"], a["order"], self.solver)
        pred = jnp.zeros_like(a["t"])
        for k, o in enumerate(self.outputs):
            pred = jnp.where(a["out"] == k, outputs[o], pred)
        return pred, ok

    def observation_distributions(self, theta: dict, sigma: dict, n: int | None = None):
        """The distribution of every padded observation, one per output, and the solve status.

        Parameters
        ----------
        theta : dict
            Individual parameters ``{name: [n_sub]}`` (:meth:`individual`).
        sigma : dict
            Residual SDs ``{name: scalar}`` keyed by :meth:`sigma_names`.
        n : int, optional
            Keep the first ``n`` subjects (default: all ``n_sub`` padded ones).

        Returns
        -------
        dists : dict
            ``{output: Distribution}`` with batch shape ``[n, n_obs]``: the output's
            residual-error model (:func:`pkpd.stats.residual.residual_distribution`, with
            the censoring flags and LLOQs of the data and the fit's censoring method),
            masked to the slots that hold that output's fitted observations (log density
            0 elsewhere). Points whose prediction failed (solve not finished, prediction
            not finite or not positive) have log density -inf.
        ok : array
            Solve status per subject ``[n_sub]``.
        """
        a = self.arrays
        pred, ok = self.predictions(theta)
        ok_obs = ok[:, None] & jnp.isfinite(pred) & (pred > 0)
        safe = jnp.where(ok_obs, pred, 1.0)
        rows = slice(None) if n is None else slice(0, n)
        censoring = "M4" if self.spec.censoring == "M4" else "M3"  # "drop": censored points are masked out
        dists = {}
        for k, o in enumerate(self.outputs):
            kind = self.model.card.error[o].model
            if kind == "combined":
                scales = {"sigma_add": sigma[f"{o}_add"], "sigma_prop": sigma[f"{o}_prop"]}
            else:
                scales = {"sigma": sigma[o]}
            d = residual_distribution(kind, safe[rows], **scales, censored=a["cens"][rows], lloq=a["lloq"][rows],
                                      censoring=censoring, failed=~ok_obs[rows])
            dists[o] = d.mask(a["mask"][rows] & (a["out"][rows] == k))
        return dists, ok

    def pointwise_loglik(self, theta: dict, sigma: dict):
        """Log-likelihood of every padded observation ``[n_sub, n_obs]`` (0 where masked) and status.

        The ``log_prob`` of :meth:`observation_distributions` (the distributions of the
        model's observation sites), summed over outputs (each is 0 outside its own slots).
        """
        dists, ok = self.observation_distributions(theta, sigma)
        value = self.arrays["value"]
        ll = None
        for d in dists.values():
            lp = d.log_prob(value)
            ll = lp if ll is None else ll + lp
        return ll, ok

    # ------------------------------------------------------------------ NumPyro model
    def sigma_names(self) -> list[str]:
        names = []
        for o in self.outputs:
            if self.model.card.error[o].model == "combined":
                names += [f"{o}_add", f"{o}_prop"]
            else:
                names.append(o)
        return names

    def numpyro_model(self):
        """The NumPyro model (the data are closed over).

        ``model(observed=True)``: latent sites ``log_tv_<p>``, ``omega_<p>``, ``z`` (or
        ``log_theta``), ``L_corr`` (full covariance), ``sigma_<s>``; deterministic
        ``tv_<p>`` (and ``corr``); observed sites ``obs_<output>`` ``[n_real, n_obs]`` in
        the ``subjects`` and ``slots`` plates (see the module notes). ``observed=False``
        leaves the observation sites unconditioned, so that
        :class:`numpyro.infer.Predictive` samples them (posterior or prior predictive).
        """
        spec = self.spec
        k = len(self.iiv)

        def model(observed: bool = True):
            log_tv = {}
            for p in self.estimated:
                log_tv[p] = numpyro.sample(f"log_tv_{p}", dist.Normal(self.prior_loc[p], spec.prior_width))
                numpyro.deterministic(f"tv_{p}", jnp.exp(log_tv[p]))
            eta = None
            if k:
                omega = jnp.stack([
                    numpyro.sample(f"omega_{p}", dist.HalfNormal(spec.omega_prior_scale)) for p in self.iiv
                ])
                chol = None
                if spec.covariance == "full" and k > 1:
                    chol = numpyro.sample("L_corr", dist.LKJCholesky(k, spec.lkj_eta))
                    numpyro.deterministic("corr", chol @ chol.T)
                if isinstance(self.parameterisation, tuple):
                    centred, rest = self.partial_blocks()
                    mu = self.mean_log_theta(log_tv)[:, centred]
                    chol_c, _, _ = self.partial_cholesky(omega, chol)
                    # one "subjects" plate dimension for both sites (autoguides need it consistent)
                    with numpyro.plate("subjects", self.n_real, dim=-1):
                        log_theta = numpyro.sample("log_theta", dist.MultivariateNormal(mu, scale_tril=chol_c))
                        z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([len(rest)]).to_event(1))
                    eta = self.partial_eta(log_tv, omega, chol, log_theta, z)
                elif self.parameterisation == "centred":
                    mu = self.mean_log_theta(log_tv)
                    if chol is None:
                        with numpyro.plate("subjects", self.n_real, dim=-2), numpyro.plate("iiv", k, dim=-1):
                            log_theta = numpyro.sample("log_theta", dist.Normal(mu, omega))
                    else:
                        with numpyro.plate("subjects", self.n_real, dim=-1):
                            log_theta = numpyro.sample(
                                "log_theta", dist.MultivariateNormal(mu, scale_tril=omega[:, None] * chol))
                    eta = log_theta - mu
                else:
                    with numpyro.plate("subjects", self.n_real, dim=-2), numpyro.plate("iiv", k, dim=-1):
                        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
                    eta = (z @ chol.T if chol is not None else z) * omega
            sigma = {s: numpyro.sample(f"sigma_{s}", dist.HalfNormal(spec.sigma_prior_scale)) for s in self.sigma_names()}
            theta = self.individual(log_tv, eta)
            dists, _ = self.observation_distributions(theta, sigma, n=self.n_real)
            value = self.arrays["value"][: self.n_real]
            with numpyro.plate("subjects", self.n_real, dim=-2), numpyro.plate("slots", value.shape[1], dim=-1):
                for o, d in dists.items():
                    numpyro.sample(f"obs_{o}", d, obs=value if observed else None)

        return model

    def initial_values(self) -> dict:
        """Initial values at the prior typical values (z = 0, omegas at the card's or 0.2)."""
        init = {f"log_tv_{p}": jnp.asarray(self.prior_loc[p]) for p in self.estimated}
        for p in self.iiv:
            init[f"omega_{p}"] = jnp.asarray(max(self.model.parameters[p].omega, 0.05) if self.model.parameters[p].omega else 0.2)
        if self.iiv:
            mean = self.mean_log_theta({p: init[f"log_tv_{p}"] for p in self.estimated})
            if isinstance(self.parameterisation, tuple):
                centred, rest = self.partial_blocks()
                init["log_theta"] = mean[:, centred]
                init["z"] = jnp.zeros((self.n_real, len(rest)))
            elif self.parameterisation == "centred":
                init["log_theta"] = mean
            else:
                init["z"] = jnp.zeros((self.n_real, len(self.iiv)))
        for s in self.sigma_names():
            o = s.split("_")[0]
            es = self.model.card.error[o]
            val = es.sd if es.model != "combined" else (es.sd_add if s.endswith("_add") else es.sd_prop)
            init[f"sigma_{s}"] = jnp.asarray(val or 0.2)
        if self.spec.covariance == "full" and len(self.iiv) > 1:
            init["L_corr"] = jnp.eye(len(self.iiv))
        return init

    def partial_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices (into ``iiv``) of the centred and the non-centred random effects of partial centring."""
        centred = np.array([self.iiv.index(p) for p in self.parameterisation], dtype=int)
        rest = np.array([j for j in range(len(self.iiv)) if j not in set(centred.tolist())], dtype=int)
        return centred, rest

    def partial_cholesky(self, omega, chol):
        r"""Blocks of the Cholesky factor of the IIV covariance with the centred parameters first.

        With :math:`\Sigma = \operatorname{diag}(\omega) L L^T \operatorname{diag}(\omega)`
        permuted so that the centred block :math:`A` comes first, its Cholesky factor is
        :math:`\begin{pmatrix} L_{AA} & 0 \\ L_{BA} & L_{BB} \end{pmatrix}`; returns
        ``(L_AA, L_BA, L_BB)``.
        """
        centred, rest = self.partial_blocks()
        perm = np.concatenate([centred, rest])
        scale = omega[:, None] * chol if chol is not None else jnp.diag(omega)
        cov = (scale @ scale.T)[perm][:, perm]
        full = jnp.linalg.cholesky(cov)
        a = len(centred)
        return full[:a, :a], full[a:, :a], full[a:, a:]

    def partial_eta(self, log_tv: dict, omega, chol, log_theta, z):
        r"""Random effects ``[n_real, K]`` of partial centring.

        The centred block is sampled as :math:`\log\theta_{iA} \sim N(\mu_{iA}, L_{AA}
        L_{AA}^T)`; the rest non-centred given it, :math:`\eta_{iB} = L_{BA} z_{iA} + L_{BB}
        z_{iB}` with :math:`z_{iA} = L_{AA}^{-1} \eta_{iA}` and :math:`z_{iB} \sim N(0, I)`:
        jointly :math:`\eta_i \sim N(0, \Sigma)`, the same model as both plain forms
        (Papaspiliopoulos, Roberts and Skold 2007, partially non-centred parameterisations).
        """
        centred, rest = self.partial_blocks()
        l_aa, l_ba, l_bb = self.partial_cholesky(omega, chol)
        eta_a = log_theta - self.mean_log_theta(log_tv)[:, centred]
        z_a = jax.scipy.linalg.solve_triangular(l_aa, eta_a.T, lower=True).T
        eta_b = z_a @ l_ba.T + z @ l_bb.T
        eta = jnp.zeros((eta_a.shape[0], len(self.iiv)), eta_a.dtype)
        return eta.at[:, centred].set(eta_a).at[:, rest].set(eta_b)

    def eta_from_sample(self, sample: dict):
        """Random effects ``eta [n_real, K]`` of one sample of the model's sites (any parameterisation)."""
        log_tv = {p: sample[f"log_tv_{p}"] for p in self.estimated}
        omega = jnp.stack([sample[f"omega_{p}"] for p in self.iiv])
        chol = sample.get("L_corr")
        if "log_theta" in sample and "z" in sample:
            return self.partial_eta(log_tv, omega, chol, sample["log_theta"], sample["z"])
        if "log_theta" in sample:
            return sample["log_theta"] - self.mean_log_theta(log_tv)
        z = sample["z"] @ chol.T if chol is not None else sample["z"]
        return z * omega

    def new_subject_sites(self, sample: dict, key) -> dict:
        """``sample`` with its random-effect sites drawn afresh from their population prior (new subjects)."""
        if not self.iiv:
            return sample
        sample = dict(sample)
        k = len(self.iiv)
        z = jax.random.normal(key, (self.n_real, k))
        if "log_theta" not in sample:  # non-centred: z ~ N(0, I), the model's own prior of z
            sample["z"] = z
            return sample
        omega = jnp.stack([sample[f"omega_{p}"] for p in self.iiv])
        chol = sample.get("L_corr")
        mean = self.mean_log_theta({p: sample[f"log_tv_{p}"] for p in self.estimated})
        if "z" in sample:  # partial: the centred block's log theta, the rest's z ~ N(0, I)
            centred, _ = self.partial_blocks()
            l_aa = self.partial_cholesky(omega, chol)[0]
            sample["log_theta"] = mean[:, centred] + z[:, : len(centred)] @ l_aa.T
            sample["z"] = z[:, len(centred):]
        else:  # centred: log theta ~ N(mean, diag(omega) L L^T diag(omega))
            sample["log_theta"] = mean + (z @ chol.T if chol is not None else z) * omega
        return sample

    def params_from_sample(self, sample: dict):
        """``(theta, sigma)`` from one posterior sample (dict of the model's sample sites)."""
        log_tv = {p: sample[f"log_tv_{p}"] for p in self.estimated}
        eta = self.eta_from_sample(sample) if self.iiv else None
        sigma = {s: sample[f"sigma_{s}"] for s in self.sigma_names()}
        return self.individual(log_tv, eta), sigma

    def observed_frame(self) -> pd.DataFrame:
        """The fitted observations, in the order of the pointwise log-likelihood."""
        mask = np.asarray(self.arrays["mask"])
        df = self.dataset.df
        rows = self.obs.row[mask]
        out = df.iloc[rows][["LINE", "ID", "TIME", "DV", "DVID"]].reset_index(drop=True)
        out["CENS"] = np.asarray(self.arrays["cens"])[mask]
        return out

