"""Solving a model's PD ODE for a batch of subjects with diffrax (float64).

Only the PD states are integrated; the PK driver's concentration is evaluated inside
the vector field. The step-size controller is told where the drive is discontinuous
(dose arrivals, infusion ends: diffrax ``jump_ts``), so no step straddles a jump and
accuracy is kept across dose events. Each subject is solved by the same function under
``jax.vmap`` over padded arrays, compiled once per bucketed shape. Solves never raise:
a failed solve (too many steps, non-finite state) returns ``status = False`` and NaN
states, which inference turns into a rejected proposal.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .events import DoseEvents, dose_events

__all__ = ["SolverOptions", "Dynamics", "prepare_subjects", "solve_subject", "solve_batch"]

_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8, "kvaerno5": diffrax.Kvaerno5}


class SolverOptions(eqx.Module):
    """Numerical settings of the PD solve.

    Parameters
    ----------
    rtol, atol : float
        Relative and absolute tolerances of the PID step-size controller. The defaults
        (1e-7, 1e-9) keep the circulating count within 1e-5 relative of an rtol 1e-12
        reference across single and repeated infusions (``tests/test_solve.py``).
    max_steps : int
        Step budget per subject; exceeding it is a failed solve (status False).
    solver : {"tsit5", "dopri5", "dopri8", "kvaerno5"}
    adjoint : {"recursive", "forward"}
        Reverse-mode checkpointing or forward-mode sensitivities for gradients.
    """

    rtol: float = eqx.field(static=True, default=1e-7)
    atol: float = eqx.field(static=True, default=1e-9)
    max_steps: int = eqx.field(static=True, default=4096)
    solver: str = eqx.field(static=True, default="tsit5")
    adjoint: str = eqx.field(static=True, default="recursive")

    def __check_init__(self):
        if self.solver not in _SOLVERS:
            raise ValueError(f"Invalid `solver`: got `{self.solver}`, must be one of {sorted(_SOLVERS)}.")
        if self.adjoint not in ("recursive", "forward"):
            raise ValueError(f"Invalid `adjoint`: got `{self.adjoint}`, must be 'recursive' or 'forward'.")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError("Invalid tolerances: `rtol` and `atol` must be > 0.")


class Dynamics(eqx.Module):
    """The compiled part of a model: PK driver + PD system + observation map.

    ``conc_scale`` converts the driver's concentration unit into the unit the
    drug-effect parameters expect (for example mg/L to umol/L: 1000/808);
    ``conc_output_scale`` converts it into the canonical unit of the ``CONC`` output (mg/L).
    """

    driver: eqx.Module
    pd: eqx.Module
    # Array leaves (not static), so models that differ only in units share compiled code.
    conc_scale: np.ndarray = eqx.field(converter=lambda x: np.asarray(x, dtype=np.float64), default=1.0)
    conc_output_scale: np.ndarray = eqx.field(converter=lambda x: np.asarray(x, dtype=np.float64), default=1.0)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        names = list(self.driver.parameter_names)
        names += [n for n in self.pd.parameter_names if n not in names]
        return tuple(names)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("CONC",) + tuple(self.pd.outputs)


def prepare_subjects(dynamics: Dynamics, df: pd.DataFrame, ids=None, n_subjects=None) -> dict:
    """Host-side padded arrays for :func:`solve_batch` (dose events, driver data, start times)."""
    df = df.reset_index(drop=True)
    ids = list(pd.unique(df["ID"])) if ids is None else list(ids)
    events = dose_events(df, ids, n_subjects=n_subjects)
    n_sub = events.time.shape[0]
    first = df.groupby("ID", sort=False)["TIME"].min()
    start = np.zeros(n_sub)
    start[: len(ids)] = first.loc[ids].to_numpy(float)
    data = {
        "events": DoseEvents(*[jnp.asarray(x) for x in events]),
        "start": jnp.asarray(start),
        "driver": {k: jnp.asarray(v) for k, v in dynamics.driver.prepare(df, ids, n_sub).items()},
    }
    return data


def solve_subject(dynamics: Dynamics, data: dict, theta: dict, ts, options: SolverOptions = SolverOptions()):
    """Solve one subject's PD states at sorted times ``ts`` ``[N]``.

    Parameters
    ----------
    dynamics : Dynamics
    data : dict
        One subject's slice of :func:`prepare_subjects` output.
    theta : dict
        The subject's parameters (scalars), names of ``dynamics.parameter_names``.
    ts : [N]
        Non-decreasing output times, >= the subject's start time.

    Returns
    -------
    states : [N, n_states]
        NaN where the solve failed.
    status : bool scalar
        True when the solve succeeded and the states are finite.
    """
    driver, system = dynamics.driver, dynamics.pd
    state = driver.setup(data["driver"], data["events"], theta)
    y0 = system.initial_state(theta)
    ts = jnp.asarray(ts)
    t0 = jnp.minimum(data["start"], ts[0])
    t1 = jnp.maximum(ts[-1], t0 + 1e-6)
    inf_order = jnp.full((1,), jnp.inf)
    dose_t = driver.dose_times(state) if system.needs_dose_input() else None

    def dose_input(t, rate):
        since = t - dose_t
        given = since >= 0
        return jnp.sum(jnp.where(given, jnp.exp(-rate * jnp.where(given, since, 0.0)), 0.0))

    def rhs(t, y, args):
        conc = driver.concentration(state, jnp.reshape(t, (1,)), inf_order)[0] * dynamics.conc_scale
        return system.vector_field(t, y, theta, conc, lambda rate: dose_input(t, rate))

    jumps = driver.jump_times(state)
    controller = diffrax.PIDController(rtol=options.rtol, atol=options.atol, jump_ts=jumps)
    adjoint = diffrax.ForwardMode() if options.adjoint == "forward" else diffrax.RecursiveCheckpointAdjoint()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs),
        _SOLVERS[options.solver](),
        t0=t0,
        t1=t1,
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=options.max_steps,
        throw=False,
    )
    ys = sol.ys
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(ys))
    ys = jnp.where(ok, ys, jnp.nan)
    return ys, ok, sol.stats["num_steps"]


def solve_batch(dynamics: Dynamics, data: dict, theta: dict, ts, options: SolverOptions = SolverOptions()):
    """:func:`solve_subject` vmapped over subjects: ``theta`` values ``[S]``, ``ts`` ``[S, N]``.

    Returns ``(states [S, N, n_states], status [S], num_steps [S])``.
    """
    return jax.vmap(lambda d, th, t: solve_subject(dynamics, d, th, t, options))(data, theta, ts)


@eqx.filter_jit
def solve_batch_jit(dynamics, data, theta, ts, options=SolverOptions()):
    """Jitted :func:`solve_batch` (compiled once per model structure and bucketed shape)."""
    return solve_batch(dynamics, data, theta, ts, options)


def observe(dynamics: Dynamics, data_s: dict, theta: dict, states, ts, order):
    """Outputs ``{name: [N]}`` for one subject: PD outputs from the states, ``CONC`` from the driver."""
    out = dict(dynamics.pd.observe(states, theta))
    state = dynamics.driver.setup(data_s["driver"], data_s["events"], theta)
    out["CONC"] = dynamics.driver.concentration(state, ts, order) * dynamics.conc_output_scale
    return out


@eqx.filter_jit
def predict_outputs(dynamics: Dynamics, data: dict, theta: dict, t, order, options: SolverOptions = SolverOptions()):
    """Model outputs at padded evaluation keys for a batch of subjects (jitted, vmapped).

    Parameters
    ----------
    t, order : [S, N]
        Evaluation times (non-decreasing within a subject) and record orders.

    Returns
    -------
    outputs : dict
        ``{output: [S, N]}``, every PD output and ``CONC`` (driver concentration).
    status : [S] bool
    num_steps : [S] int
    """

    def one(d, th, t_s, o_s):
        states, ok, steps = solve_subject(dynamics, d, th, t_s, options)
        return observe(dynamics, d, th, states, t_s, o_s), ok, steps

    return jax.vmap(one)(data, theta, t, order)
