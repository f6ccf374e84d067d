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
#: Fixed-grid classical Runge-Kutta (see :func:`solve_subject`); grids are built on the host.
GRID_SOLVER = "rk4-grid"


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
    solver : {"tsit5", "dopri5", "dopri8", "kvaerno5", "rk4-grid"}
        Adaptive diffrax solvers, or ``"rk4-grid"``: classical RK4 on a fixed grid built
        on the host from the data (every output time, every dose time, fine steps of
        ``grid_fine`` h for 2 h after each dose, ``grid_medium`` h up to 12 h,
        4 h up to 48 h, ``grid_coarse`` h elsewhere), with the drug concentration at
        every stage evaluated in one vectorised call before the time loop. It is several
        times cheaper per gradient than adaptive stepping and its error is measured
        against tight adaptive solves in ``tests/test_solve.py``; tolerances do not apply.
    adjoint : {"recursive", "forward"}
        Reverse-mode checkpointing or forward-mode sensitivities for gradients.
    grid_fine, grid_medium, grid_coarse : float
        Grid spacings (h) of ``"rk4-grid"``.
    """

    rtol: float = eqx.field(static=True, default=1e-7)
    atol: float = eqx.field(static=True, default=1e-9)
    max_steps: int = eqx.field(static=True, default=4096)
    solver: str = eqx.field(static=True, default="tsit5")
    adjoint: str = eqx.field(static=True, default="recursive")
    grid_fine: float = eqx.field(static=True, default=0.25)
    grid_medium: float = eqx.field(static=True, default=1.0)
    grid_coarse: float = eqx.field(static=True, default=6.0)

    def __check_init__(self):
        if self.solver not in _SOLVERS and self.solver != GRID_SOLVER:
            raise ValueError(f"Invalid `solver`: got `{self.solver}`, must be one of "
                             f"{sorted(_SOLVERS) + [GRID_SOLVER]}.")
        if not (0 < self.grid_fine <= self.grid_medium <= self.grid_coarse):
            raise ValueError("Invalid grid spacings: need 0 < grid_fine <= grid_medium <= grid_coarse.")
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


def prepare_subjects(dynamics: Dynamics, df: pd.DataFrame, ids=None, n_subjects=None, amount_scale: float = 1.0,
                     eval_times=None, eval_mask=None, options: SolverOptions | None = None) -> dict:
    """Host-side padded arrays for :func:`solve_batch` (dose events, driver data, start times).

    ``amount_scale`` converts the data's dose amounts (canonical mg) into the model's
    dose unit (for example 1000 for a model written in ug). With ``options.solver ==
    "rk4-grid"``, ``eval_times`` / ``eval_mask`` ``[S, N]`` (the output times) are needed to
    build the integration grids.
    """
    df = df.reset_index(drop=True)
    ids = list(pd.unique(df["ID"])) if ids is None else list(ids)
    events = dose_events(df, ids, n_subjects=n_subjects)
    if amount_scale != 1.0:
        events = events._replace(amt=events.amt * amount_scale,
                                 rate=np.where(events.rate > 0, events.rate * amount_scale, events.rate))
    n_sub = events.time.shape[0]
    first = df.groupby("ID", sort=False)["TIME"].min()
    start = np.zeros(n_sub)
    start[: len(ids)] = first.loc[ids].to_numpy(float)
    data = {
        "events": DoseEvents(*[jnp.asarray(x) for x in events]),
        "start": jnp.asarray(start),
        "driver": {k: jnp.asarray(v) for k, v in dynamics.driver.prepare(df, ids, n_sub).items()},
    }
    if options is not None and options.solver == GRID_SOLVER:
        if eval_times is None:
            raise ValueError("the 'rk4-grid' solver needs the output times (eval_times) to build its grids")
        mask = np.ones_like(eval_times, dtype=bool) if eval_mask is None else eval_mask
        data["grid"] = jnp.asarray(build_grids(df, ids, eval_times, mask, options, n_sub))
    return data


def build_grids(df: pd.DataFrame, ids, eval_times, eval_mask, options: SolverOptions, n_subjects: int) -> np.ndarray:
    """Host-built integration grids ``[S, L]`` for the ``"rk4-grid"`` solver (see :class:`SolverOptions`).

    Each grid holds the subject's start, every evaluation time, every dose record time
    and fixed-rate infusion end, refinement after each dose, and coarse steps elsewhere;
    padding repeats the last time (zero-length steps).
    """
    from .buckets import bucket_size

    grids = []
    for s, sid in enumerate(ids):
        sub = df[df["ID"] == sid]
        t_eval = np.asarray(eval_times[s])[np.asarray(eval_mask[s])]
        t0 = float(sub["TIME"].min())
        t_end = max(float(sub["TIME"].max()), float(t_eval.max()) if t_eval.size else t0)
        doses = sub[sub["EVID"].isin([1, 4])]
        parts = [np.array([t0, t_end]), t_eval, np.arange(t0, t_end, options.grid_coarse)]
        for _, d in doses.iterrows():
            td = float(d["TIME"])
            starts = [td + j * float(d["II"]) for j in range(int(d["ADDL"]) + 1)] if float(d["II"]) > 0 else [td]
            for a in starts:
                parts += [np.arange(a, a + 2.0, options.grid_fine), np.arange(a + 2.0, a + 12.0, options.grid_medium),
                          np.arange(a + 12.0, a + 48.0, 4.0)]
                if float(d["RATE"]) > 0 and float(d["AMT"]) > 0:
                    end = a + float(d["AMT"]) / float(d["RATE"])
                    parts += [np.array([end]), np.arange(end, end + 2.0, options.grid_fine)]
        grid = np.unique(np.concatenate(parts))
        grids.append(grid[(grid >= t0) & (grid <= t_end)])
    size = bucket_size(max(len(g) for g in grids))
    out = np.zeros((n_subjects, size))
    for s, g in enumerate(grids):
        out[s, : len(g)] = g
        out[s, len(g):] = g[-1]
    out[len(grids):] = out[0]
    return out


def _solve_grid(dynamics: Dynamics, data: dict, theta: dict, ts):
    """Classical RK4 over the host-built grid ``data["grid"]``; states at ``ts`` (grid points)."""
    driver, system = dynamics.driver, dynamics.pd
    state = driver.setup(data["driver"], data["events"], theta)
    grid = data["grid"]
    t_a, t_b = grid[:-1], grid[1:]
    h = t_b - t_a
    scale = dynamics.conc_scale
    # Drive at every stage, in one vectorised evaluation: start of a step after the
    # records at that time (order +inf), end of a step before them (order -inf), so a
    # bolus at a grid time enters the step that starts there.
    c_a = driver.concentration(state, t_a, jnp.full_like(t_a, jnp.inf)) * scale
    c_m = driver.concentration(state, t_a + h / 2, jnp.full_like(t_a, jnp.inf)) * scale
    c_b = driver.concentration(state, t_b, jnp.full_like(t_b, -jnp.inf)) * scale
    dose_t = driver.dose_times(state) if system.needs_dose_input() else None

    def f(t, y, c):
        def dose_input(rate):
            since = t - dose_t
            given = since >= 0
            return jnp.sum(jnp.where(given, jnp.exp(-rate * jnp.where(given, since, 0.0)), 0.0))

        return system.vector_field(t, y, theta, c, dose_input)

    def step(y, inp):
        ta, hh, ca, cm, cb = inp
        k1 = f(ta, y, ca)
        k2 = f(ta + hh / 2, y + hh / 2 * k1, cm)
        k3 = f(ta + hh / 2, y + hh / 2 * k2, cm)
        k4 = f(ta + hh, y + hh * k3, cb)
        y = y + hh / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return y, y

    y0 = system.initial_state(theta)
    _, ys = jax.lax.scan(step, y0, (t_a, h, c_a, c_m, c_b))
    states = jnp.concatenate([y0[None], ys])
    idx = jnp.clip(jnp.searchsorted(grid, jnp.asarray(ts), side="left"), 0, grid.shape[0] - 1)
    out = states[idx]
    ok = jnp.all(jnp.isfinite(out))
    return jnp.where(ok, out, jnp.nan), ok, jnp.asarray(grid.shape[0] - 1)


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
    if options.solver == GRID_SOLVER:
        if "grid" not in data:
            raise ValueError("the 'rk4-grid' solver needs grids: call prepare_subjects(..., eval_times=..., options=...)")
        return _solve_grid(dynamics, data, theta, ts)
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
    # With one checkpoint per step allowed, reverse mode stores every step instead of
    # recomputing (binomial checkpointing): the PD state is small, so memory is cheap.
    adjoint = (diffrax.ForwardMode() if options.adjoint == "forward"
               else diffrax.RecursiveCheckpointAdjoint(checkpoints=options.max_steps))
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
