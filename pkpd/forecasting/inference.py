r"""Per-patient posterior inference of a forecast, inside one compiled function.

Patient ``i``'s random effects are non-centred, ``eta_i = omega * (L z_i)``,
``z_i ~ N(0, I)`` (``L`` the Cholesky factor of the IIV correlation, identity for a
diagonal IIV); with a fit prior each patient also gets its own copy of the population
vector, ``u_i = m + chol(C) v_i``, ``v_i ~ N(0, I)`` (:mod:`pkpd.forecasting.prior`). Every
latent variable is therefore standard normal a priori and unconstrained, and the log
density of patient ``i`` is

.. math::

    \log p(x_i \mid y_i) = -\tfrac12 \lVert x_i \rVert^2 + \sum_j \ell_{ij}(x_i) + c,
    \qquad x_i = (z_i, v_i),

with the pointwise log-likelihood :math:`\ell_{ij}` computed by
:meth:`pkpd.stats.population.PopulationProblem.pointwise_loglik` of the forecast's own
:class:`~pkpd.stats.population.PopulationProblem` (same residual-error and censoring
code as population fits), given one patient's data at a time (:class:`PatientProblem`).

:func:`infer_patients` gives every patient its Laplace approximation
(:func:`laplace_approximation`), then its draws: independent draws from the approximation
(``"laplace"``) or NUTS chains started at its mode with its covariance as a dense mass
matrix (``"nuts"``; with fewer patients than devices several chains per patient,
:func:`chains_per_patient`), split across the devices when there are several
(:func:`pkpd.forecasting.devices.over_devices`). Gradients and Hessians use forward-mode
sensitivities of the ODE solve: the latent dimension is small (3 random effects for the
Kloft card).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .devices import over_devices
from ..errors import PkpdError
from ..stats.population import PopulationProblem

__all__ = ["PatientProblem", "laplace_approximation", "nuts_chain", "infer_patients", "inference_structure",
           "chains_per_patient", "per_patient_draws", "max_tree_depth_ok", "TARGET_ACCEPT_PROB"]

#: Mean acceptance probability that NUTS warm-up tunes the step size to (NumPyro's and Stan's default).
TARGET_ACCEPT_PROB = 0.8


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


def nuts_chain(structure: _Structure, potential, key, mode, cov, ok):
    """One NUTS chain on ``potential``: ``structure.warmup`` iterations of step-size adaptation,
    then ``structure.chain_draws`` draws (the draws and the chain's diagnostics).

    The chain starts at the Laplace mode with the Laplace covariance as a dense mass matrix,
    which is not adapted; warm-up tunes only the step size, by NumPyro's dual averaging
    (Hoffman & Gelman, J Mach Learn Res 2014;15:1593, section 3.2; target mean acceptance
    :data:`TARGET_ACCEPT_PROB`) over all its iterations, the last step size being the
    averaged one. This is NumPyro's step-size update without its window
    schedule: for 20 or more warm-up iterations that schedule, made for adapting the mass
    matrix, restarts the step-size search at the end of its middle window (iteration 89 of
    100), so only the last 10% of iterations would set the step size.
    """
    from numpyro.infer.hmc import hmc
    from numpyro.infer.hmc_util import dual_averaging

    p = structure.n_latent
    x0 = jnp.where(ok, mode, jnp.zeros(p))
    cov = jnp.where(ok, cov, jnp.eye(p))
    init_kernel, sample_kernel = hmc(potential_fn=potential, algo="NUTS")
    # num_warmup=0: NumPyro adapts nothing itself; adapt_step_size=True still makes it start from
    # a reasonable step size and set up the dual-averaging state, updated below.
    state = init_kernel(x0, num_warmup=0, inverse_mass_matrix=cov, dense_mass=True, adapt_step_size=True,
                        adapt_mass_matrix=False, max_tree_depth=structure.max_tree_depth,
                        target_accept_prob=TARGET_ACCEPT_PROB, forward_mode_differentiation=True, rng_key=key)
    _, step_size_update = dual_averaging()
    last_warmup = structure.warmup - 1
    finfo = jnp.finfo(jnp.result_type(float))

    def adapt(s, i):
        s = sample_kernel(s)
        ss_state = step_size_update(TARGET_ACCEPT_PROB - s.accept_prob, s.adapt_state.ss_state)
        log_step, log_step_avg = ss_state[0], ss_state[1]
        step = jnp.clip(jnp.exp(jnp.where(i == last_warmup, log_step_avg, log_step)), finfo.tiny, finfo.max)
        return s._replace(adapt_state=s.adapt_state._replace(step_size=step, ss_state=ss_state)), s.num_steps

    def draw(s, _):
        s = sample_kernel(s)
        return s, (s.z, s.diverging, s.num_steps)

    state, warm_steps = jax.lax.scan(adapt, state, jnp.arange(structure.warmup))
    last, (xs, div, steps) = jax.lax.scan(draw, state, None, length=structure.chain_draws)
    return xs, {"divergences": jnp.sum(div), "mean_steps": jnp.mean(steps),
                "warmup_steps": jnp.sum(warm_steps).astype(float), "step_size": last.adapt_state.step_size,
                "converged": jnp.asarray(True)}


@eqx.filter_jit
def infer_patients(structure: _Structure, dynamics, pdata: dict, shared: dict, patient_of_row, keys, real):
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
            xs, diag = nuts_chain(structure, potential, key, mode, cov, ok)
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



def inference_structure(problem: PopulationProblem, integrated: bool, method, draws, warmup, depth,
                        chains=1) -> _Structure:
    """The static description of a forecast's inference (:class:`_Structure`; NUTS ``warmup`` and
    tree ``depth`` are set to 0 for Laplace, which does not use them, so that one compile serves any)."""
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


def per_patient_draws(rows, n_real: int, chains: int, draws: int):
    """The first ``n_real * chains`` rows of an :func:`infer_patients` result (undealt) per patient:
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
    """``depth`` as an int, checked to be >= 1."""
    depth = int(depth)
    if depth < 1:
        raise PkpdError(f"max_tree_depth must be >= 1, got {depth}")
    return depth
