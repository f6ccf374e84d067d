"""Solving a coupled model (:class:`pkpd.model.system.System`) for a batch of subjects (float64).

Closed-form PK is evaluated inside the vector field; only ODE states are integrated.
The step-size controller is told where the vector field is discontinuous (dose
arrivals, infusion ends: diffrax ``jump_ts``), so no step straddles a jump.

State events (a bolus into an ODE state: an SC depot, a transfusion into a
circulating cell pool) are applied by integrating **segment by segment** between the
jump times: one ``lax.scan`` over the subject's (padded, bucketed) jumps, each
segment a ``diffeqsolve`` started from the previous segment's end state plus the jump.
We measured and chose this over diffrax's event handling: diffrax events terminate
a solve (a restart is needed anyway), and root-finding is unnecessary because the
jump times are known in advance. Outputs at a key ``(t, order)`` are read from the
segment that contains that key, so a sample recorded before a dose row at the same
time sees the pre-dose state (NONMEM's file order). Models without state doses (all
closed-form PK) take the single-solve path at no extra cost.

Each subject is solved by the same function under ``jax.vmap`` over padded arrays,
compiled once per bucketed shape. Solves never raise: a failed solve (too many steps,
non-finite state) returns ``status = False`` and NaN states, which inference turns
into a rejected proposal.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.custom_derivatives import SymbolicZero
from jax.flatten_util import ravel_pytree

from ..dosing.events import DoseEvents, dose_events
from ..errors import ModelError

__all__ = ["SolverOptions", "prepare_subjects", "solve_subject", "solve_batch", "predict_outputs"]

_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8, "kvaerno5": diffrax.Kvaerno5}
#: Fixed-grid classical Runge-Kutta (see :func:`solve_subject`); grids are built on the host.
GRID_SOLVER = "rk4-grid"
#: The default integrator: the model card's recommended one (``solver = "kvaerno5"`` for the stiff
#: G-CSF feedback cards), resolved by :meth:`pkpd.Model.solver_options`; Tsit5 where the card names none.
AUTO_SOLVER = "auto"


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
    solver : {"auto", "tsit5", "dopri5", "dopri8", "kvaerno5", "rk4-grid"}
        ``"auto"`` (default): the model card's recommended integrator (its ``solver`` field,
        e.g. the implicit ``"kvaerno5"`` of the stiff G-CSF feedback cards, on which Tsit5
        forecasts failed their Laplace mode search), applied by fits, forecasts and
        simulations through :meth:`pkpd.Model.solver_options`; ``"tsit5"`` where the card
        names none. Adaptive diffrax solvers by name (used as given, whatever the card
        says), or ``"rk4-grid"``: classical RK4 on a fixed grid built
        on the host from the data (every output time, every dose time, fine steps of
        ``grid_fine`` h for 2 h after each dose, ``grid_medium`` h up to 12 h,
        ``min(4, grid_coarse)`` h up to 48 h, ``grid_coarse`` h elsewhere; lengths padded to
        a multiple of 16, :func:`grid_bucket`), with the drug concentration at every stage
        evaluated in one vectorised call before the time loop. It is several times cheaper
        per gradient than adaptive stepping; tolerances do not apply: its error is measured
        against tight adaptive solves in ``tests/test_solve.py``, and population fits check
        it at set-up and refine the grid until it holds (``FitSpec.grid_tolerance``).
    adjoint : {"auto", "recursive", "forward"}
        How derivatives of the solve are computed. ``"recursive"``: reverse mode through
        the steps (diffrax's checkpointed adjoint; for ``"rk4-grid"`` a reverse sweep of the
        time loop). ``"forward"``: forward-mode sensitivities (diffrax's ``ForwardMode``; for
        ``"rk4-grid"`` the tangents of all of a subject's parameters carried through one
        time loop, which reverse mode then only transposes: 0.75-0.78x the reverse sweep's
        gradient time on the published Friberg benchmark, ``benchmarks/gradient_cost.py``).
        ``"auto"`` (default): ``"forward"`` for ``"rk4-grid"``, ``"recursive"`` otherwise.
    grid_fine, grid_medium, grid_coarse : float
        Grid spacings (h) of ``"rk4-grid"`` (defaults 0.5, 2, 12: on the published Friberg
        benchmark 139 points within 8e-5 of a tight solve, and a gradient 0.68x that of the
        former 0.25, 1, 6 with its 245 points, ``benchmarks/gradient_cost.py``).
    """

    rtol: float = eqx.field(static=True, default=1e-7)
    atol: float = eqx.field(static=True, default=1e-9)
    max_steps: int = eqx.field(static=True, default=4096)
    solver: str = eqx.field(static=True, default=AUTO_SOLVER)
    adjoint: str = eqx.field(static=True, default="auto")
    grid_fine: float = eqx.field(static=True, default=0.5)
    grid_medium: float = eqx.field(static=True, default=2.0)
    grid_coarse: float = eqx.field(static=True, default=12.0)

    def __check_init__(self):
        if self.solver not in _SOLVERS and self.solver not in (GRID_SOLVER, AUTO_SOLVER):
            raise ValueError(f"Invalid `solver`: got `{self.solver}`, must be one of "
                             f"{[AUTO_SOLVER] + sorted(_SOLVERS) + [GRID_SOLVER]}.")
        if not (0 < self.grid_fine <= self.grid_medium <= self.grid_coarse):
            raise ValueError("Invalid grid spacings: need 0 < grid_fine <= grid_medium <= grid_coarse.")
        if self.adjoint not in ("auto", "recursive", "forward"):
            raise ValueError(f"Invalid `adjoint`: got `{self.adjoint}`, must be 'auto', 'recursive' or 'forward'.")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError("Invalid tolerances: `rtol` and `atol` must be > 0.")


def prepare_subjects(system, df: pd.DataFrame, ids=None, n_subjects=None, amount_scale: float = 1.0,
                     eval_times=None, eval_mask=None, options: SolverOptions | None = None) -> dict:
    """Host-side padded arrays for :func:`solve_batch` (dose events, component data, start times).

    ``amount_scale`` multiplies every dose amount (on top of the system's per-route
    scales). With ``options.solver == "rk4-grid"``, ``eval_times`` / ``eval_mask``
    ``[S, N]`` (the output times) are needed to build the integration grids.
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
    components = system.prepare(df, ids, n_sub, events)
    data = {
        "events": DoseEvents(*[jnp.asarray(x) for x in events]),
        "start": jnp.asarray(start),
        "components": {c: {k: jnp.asarray(v) for k, v in d.items()} for c, d in components.items()},
    }
    if options is not None and options.solver == GRID_SOLVER:
        if system.has_state_doses:
            raise ModelError("the 'rk4-grid' solver does not support doses into ODE states (state events); "
                             "use an adaptive solver such as 'tsit5'")
        if eval_times is None:
            raise ValueError("the 'rk4-grid' solver needs the output times (eval_times) to build its grids")
        mask = np.ones_like(eval_times, dtype=bool) if eval_mask is None else eval_mask
        data["grid"] = jnp.asarray(build_grids(df, ids, eval_times, mask, options, n_sub))
    return data


def grid_spacings(options: SolverOptions, level: int = 0) -> tuple[float, float, float]:
    """``(fine, medium, coarse)`` spacings (h) of an ``rk4-grid`` refined ``level`` times (every spacing halved
    each time; the coarse one never below the medium one)."""
    f = 0.5 ** int(level)
    medium = options.grid_medium * f
    return options.grid_fine * f, medium, max(options.grid_coarse * f, medium)


def build_grids(df: pd.DataFrame, ids, eval_times, eval_mask, options: SolverOptions, n_subjects: int,
                levels=None) -> np.ndarray:
    """Host-built integration grids ``[S, L]`` for the ``"rk4-grid"`` solver (see :class:`SolverOptions`).

    Each grid holds the subject's start, every evaluation time, every dose record time
    and fixed-rate infusion end, refinement after each dose, and coarse steps elsewhere;
    padding repeats the last time (zero-length steps, which leave the state unchanged).
    ``levels`` (one per subject, default 0): how many times that subject's spacings are
    halved (:func:`grid_spacings`).
    """
    grids = []
    for s, sid in enumerate(ids):
        fine, medium, coarse = grid_spacings(options, 0 if levels is None else int(levels[s]))
        sub = df[df["ID"] == sid]
        t_eval = np.asarray(eval_times[s])[np.asarray(eval_mask[s])]
        t0 = float(sub["TIME"].min())
        t_end = max(float(sub["TIME"].max()), float(t_eval.max()) if t_eval.size else t0)
        doses = sub[sub["EVID"].isin([1, 4])]
        parts = [np.array([t0, t_end]), t_eval, np.arange(t0, t_end, coarse)]
        for _, d in doses.iterrows():
            td = float(d["TIME"])
            starts = [td + j * float(d["II"]) for j in range(int(d["ADDL"]) + 1)] if float(d["II"]) > 0 else [td]
            for a in starts:
                parts += [np.arange(a, a + 2.0, fine), np.arange(a + 2.0, a + 12.0, medium),
                          np.arange(a + 12.0, a + 48.0, min(4.0, coarse))]
                if float(d["RATE"]) > 0 and float(d["AMT"]) > 0:
                    end = a + float(d["AMT"]) / float(d["RATE"])
                    parts += [np.array([end]), np.arange(end, end + 2.0, fine)]
        grid = np.unique(np.concatenate(parts))
        grids.append(grid[(grid >= t0) & (grid <= t_end)])
    size = grid_bucket(max(len(g) for g in grids))
    out = np.zeros((n_subjects, size))
    for s, g in enumerate(grids):
        out[s, : len(g)] = g
        out[s, len(g):] = g[-1]
    out[len(grids):] = out[0]
    return out


#: Granularity of grid lengths (:func:`grid_bucket`).
GRID_BUCKET = 16


def grid_bucket(n: int) -> int:
    """Padded length of the integration grids: ``n`` rounded up to a multiple of :data:`GRID_BUCKET`.

    Every padded point is a zero-length RK4 step that costs as much as a real one, so the
    grids are not padded to the power-of-two-ish buckets of :func:`pkpd.buckets.bucket_size`
    (139 points would cost 192 steps): grids are built once per data set, and a
    multiple of 16 keeps the waste under 16 steps.

    >>> [grid_bucket(n) for n in (1, 16, 17, 139)]
    [16, 16, 32, 144]
    """
    return GRID_BUCKET * max(1, -(-int(n) // GRID_BUCKET))


def _solve_grid(system, data: dict, theta: dict, ts, ctx):
    """Classical RK4 over the host-built grid ``data["grid"]``; flat states at ``ts`` (grid points)."""
    grid = data["grid"]
    t_a, t_b = grid[:-1], grid[1:]
    h = t_b - t_a
    # Time-only signals (closed-form PK) at every stage in one vectorised evaluation: start
    # of a step after the records at that time (order +inf), end of a step before them
    # (order -inf), so a bolus at a grid time enters the step that starts there.
    pre_a = system.time_only_signals(t_a, jnp.full_like(t_a, jnp.inf), theta, ctx)
    pre_m = system.time_only_signals(t_a + h / 2, jnp.full_like(t_a, jnp.inf), theta, ctx)
    pre_b = system.time_only_signals(t_b, jnp.full_like(t_b, -jnp.inf), theta, ctx)

    def f(t, y, pre):
        return system.vector_field(t, y, theta, ctx, pre)

    def step(y, inp):
        ta, hh, pa, pm, pb = inp
        k1 = f(ta, y, pa)
        k2 = f(ta + hh / 2, y + hh / 2 * k1, pm)
        k3 = f(ta + hh / 2, y + hh / 2 * k2, pm)
        k4 = f(ta + hh, y + hh * k3, pb)
        y = y + hh / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return y, y

    y0 = system.flatten(system.initial_state(theta))
    _, ys = jax.lax.scan(step, y0, (t_a, h, pre_a, pre_m, pre_b))
    states = jnp.concatenate([y0[None], ys])
    idx = jnp.clip(jnp.searchsorted(grid, jnp.asarray(ts), side="left"), 0, grid.shape[0] - 1)
    out = states[idx]
    ok = jnp.all(jnp.isfinite(out))
    return jnp.where(ok, out, jnp.nan), ok, jnp.asarray(grid.shape[0] - 1)


def _solve_grid_forward(system, data: dict, theta: dict, ts):
    """:func:`_solve_grid` with forward-mode sensitivities fused into the time loop.

    The states are a ``jax.custom_jvp`` function of the subject's parameters whose JVP rule
    runs the RK4 loop once with the tangents of the ``P`` parameters that vary carried beside
    the states (``jax.jvp`` under ``vmap`` over the unit vectors: one batched loop, not ``P``
    loops), giving the sensitivity matrix ``J = dy/dtheta`` ``[P, N, n_states]``; the output
    tangent is ``sum_k J_k dtheta_k``. Reverse mode transposes only that linear map, so a
    gradient costs about one forward loop with ``P`` tangents instead of a reverse sweep
    through every step (which stores and revisits each stage). Parameters whose tangent is
    a symbolic zero (held fixed by the caller: PK parameters in a fit of counts alone,
    everything but the random effects in a forecast) are constants of that loop, so ``P``
    counts only the parameters that vary: on ``kloft2006_docetaxel`` (10 parameters, PK
    fixed) a 40-patient population gradient 29.5 against 75.4 ms (median of 3 rounds), one
    forecast patient's (3 of 10 varying) 0.29 against 0.42 ms (benchmarks/README.md, 2026-12-03). Derivatives of every order are
    exact (the rule itself is differentiable). Integer parameters are constants.
    """
    names = [k for k in sorted(theta) if jnp.issubdtype(jnp.result_type(theta[k]), jnp.inexact)]

    arrays, static = eqx.partition(system, eqx.is_array)  # traced leaves of the system pass as arguments

    def raw(th, d, t, arr):
        sys_ = eqx.combine(arr, static)
        return _solve_grid(sys_, d, th, t, sys_.setup(d, th))[0]

    states = jax.custom_jvp(raw)

    def _jvp(primals, tangents):
        th, d, t, arr = primals
        dth = tangents[0]  # data, output times and the system's arrays are not differentiated
        live = [k for k in names if not isinstance(dth[k], SymbolicZero)]
        if not live:
            y = raw(th, d, t, arr)
            return y, jnp.zeros_like(y)
        flat, unravel = ravel_pytree({k: th[k] for k in live})
        basis = jax.vmap(unravel)(jnp.eye(flat.shape[0], dtype=flat.dtype))

        def varying(x):
            return raw({**th, **x}, d, t, arr)

        y, jac = jax.vmap(lambda v: jax.jvp(varying, ({k: th[k] for k in live},), (v,)), out_axes=(None, 0))(basis)
        return y, jnp.tensordot(ravel_pytree({k: dth[k] for k in live})[0], jac, axes=1)

    states.defjvp(_jvp, symbolic_zeros=True)
    out = states(dict(theta), data, jnp.asarray(ts), arrays)
    ok = jnp.all(jnp.isfinite(out))
    return jnp.where(ok, out, jnp.nan), ok, jnp.asarray(data["grid"].shape[0] - 1)


def _diffeqsolve(system, theta, ctx, y0, t0, t1, ts, options: SolverOptions):
    def rhs(t, y, args):
        return system.vector_field(t, y, theta, ctx)

    controller = diffrax.PIDController(rtol=options.rtol, atol=options.atol, jump_ts=system.jump_times(ctx))
    # With one checkpoint per step allowed, reverse mode stores every step instead of
    # recomputing (binomial checkpointing): the state is small, so memory is cheap.
    adjoint = (diffrax.ForwardMode() if options.adjoint == "forward"
               else diffrax.RecursiveCheckpointAdjoint(checkpoints=options.max_steps))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(rhs), _SOLVERS["tsit5" if options.solver == AUTO_SOLVER else options.solver](),
        t0=t0, t1=t1, dt0=None, y0=y0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, adjoint=adjoint,
        max_steps=options.max_steps, throw=False,
    )
    return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]


def solve_subject(system, data: dict, theta: dict, ts, options: SolverOptions = SolverOptions(), order=None,
                  return_context: bool = False, y0=None, save_chunk: int | None = None):
    """Solve one subject's flat ODE states at sorted times ``ts`` ``[N]``.

    Parameters
    ----------
    system : pkpd.model.system.System
    data : dict
        One subject's slice of :func:`prepare_subjects` output.
    theta : dict
        The subject's parameters (scalars), names of ``system.parameter_names``.
    ts : [N]
        Non-decreasing output times, >= the subject's start time.
    order : [N], optional
        Record order of each output (see :mod:`pkpd.dosing.events`; default ``+inf``:
        after every record at its time). Decides, for a state jump at the same time as
        an output, whether the output sees it.

    Returns
    -------
    states : [N, n_states]
        Flat states (``system.unflatten`` gives the per-component pytree); NaN where the
        solve failed.
    status : bool scalar
        True when the solve succeeded and the states are finite.
    num_steps : int scalar
    context : pytree
        Only with ``return_context``: the subject's context (``system.setup``).

    ``y0`` (flat states) replaces the no-drug steady state as the state at the subject's
    start time (for example to continue from a known state).

    ``save_chunk`` (static) is for long, dense output grids (forecast trajectories).
    Saving ``N`` outputs in one ``diffeqsolve`` costs ``N`` iterations of diffrax's save
    loop, each of which, under ``vmap``, touches the whole ``N``-row output buffer: the
    cost grows as ``N^2``; with state doses every segment also saves at every output
    (those outside it clipped to its ends). With ``save_chunk = C`` the outputs are cut
    into blocks of ``C`` and the integration restarts at each block's first time, so
    every piece saves only its own block into a ``C``-row buffer (measured: the README
    G-CSF comparison's trajectories 15x faster, 1,536 outputs, C = 128). It needs strictly
    increasing ``ts`` (orders may differ; an output it could not place, which only
    repeated times can cause, makes a failed solve, never a wrong value). ``None`` or
    ``len(ts) <= C``: one block.
    """
    ctx = system.setup(data, theta)
    if options.solver == GRID_SOLVER:
        if "grid" not in data:
            raise ValueError("the 'rk4-grid' solver needs grids: call prepare_subjects(..., eval_times=..., options=...)")
        if options.adjoint in ("auto", "forward"):
            out = _solve_grid_forward(system, data, theta, ts)
        else:
            out = _solve_grid(system, data, theta, ts, ctx)
        return (*out, ctx) if return_context else out
    y0 = system.flatten(system.initial_state(theta)) if y0 is None else jnp.asarray(y0)
    ts = jnp.asarray(ts)
    t0 = jnp.minimum(data["start"], ts[0])
    t1 = jnp.maximum(ts[-1], t0 + 1e-6)
    if not system.has_state_doses and save_chunk is not None and ts.shape[0] > int(save_chunk):
        none = (jnp.zeros((0,), ts.dtype), jnp.zeros((0,), ts.dtype), jnp.zeros((0,), jnp.int32),
                jnp.zeros((0,), y0.dtype))
        ys, ok, steps = _solve_blocks(system, theta, ctx, y0, t0, t1, ts, jnp.zeros(ts.shape, jnp.int32), none,
                                      options, int(save_chunk))
    elif not system.has_state_doses:
        ys, ok, steps = _diffeqsolve(system, theta, ctx, y0, t0, t1, ts, options)
    else:
        ys, ok, steps = _solve_segments(system, theta, ctx, y0, t0, t1, ts, order, options, save_chunk)
    ok = ok & jnp.all(jnp.isfinite(ys))
    out = (jnp.where(ok, ys, jnp.nan), ok, steps)
    return (*out, ctx) if return_context else out


def _solve_segments(system, theta, ctx, y0, t0, t1, ts, order, options, save_chunk=None):
    """Integrate between the state jumps (see the module docstring)."""
    jt, jo, ji, ja = system.state_jumps(ctx)
    order = jnp.full_like(ts, jnp.inf) if order is None else jnp.asarray(order, ts.dtype)
    # Segment of each output: the number of jumps whose key (time, order) is <= its key.
    before = (jt[None, :] < ts[:, None]) | ((jt[None, :] == ts[:, None]) & (jo[None, :] <= order[:, None]))
    segment = jnp.sum(before, axis=1)
    if save_chunk is not None and ts.shape[0] > int(save_chunk):
        return _solve_blocks(system, theta, ctx, y0, t0, t1, ts, segment, (jt, jo, ji, ja), options, int(save_chunk))
    jt_c = jnp.clip(jt, t0, t1)
    starts = jnp.concatenate([t0[None], jt_c])
    ends = jnp.concatenate([jt_c, t1[None]])
    amounts = jnp.concatenate([jnp.zeros((1,), ja.dtype), ja])
    index = jnp.concatenate([jnp.zeros((1,), ji.dtype), ji])
    out0 = jnp.zeros((ts.shape[0], y0.shape[0]), y0.dtype)

    def body(carry, inp):
        y, out, ok, steps = carry
        k, a, b, idx, amt = inp
        y = y.at[idx].add(amt)
        save = jnp.concatenate([jnp.clip(ts, a, b), b[None]])  # outputs, then the segment's end state
        ys, ok_k, n = _diffeqsolve(system, theta, ctx, y, a, b, save, options)
        out = jnp.where((segment == k)[:, None], ys[:-1], out)
        return (ys[-1], out, ok & ok_k, steps + n), None

    k_all = jnp.arange(starts.shape[0])
    (_, out, ok, steps), _ = jax.lax.scan(body, (y0, out0, jnp.asarray(True), jnp.asarray(0)),
                                          (k_all, starts, ends, index, amounts))
    return out, ok, steps


def _solve_blocks(system, theta, ctx, y0, t0, t1, ts, segment, jumps, options, size):
    """:func:`_solve_segments` with the outputs cut into blocks of ``size`` (``save_chunk``).

    Pieces are the segments further cut at each block's first output time (a zero
    jump ordered before any record at that time); a piece saves only its block's
    outputs, and an output takes the value of the piece of its block and its segment.
    """
    jt, jo, ji, ja = jumps
    n = ts.shape[0]
    n_blocks = -(-n // size)
    pad = n_blocks * size - n
    ts_p = jnp.concatenate([ts, jnp.full((pad,), ts[-1], ts.dtype)])
    seg_p = jnp.concatenate([segment, jnp.full((pad,), -1, segment.dtype)])  # padding: written by no piece
    bt = ts_p[size::size][: n_blocks - 1]
    nb = bt.shape[0]
    pt = jnp.concatenate([jt, bt])
    po = jnp.concatenate([jnp.asarray(jo, ts.dtype), jnp.full((nb,), -jnp.inf, ts.dtype)])
    perm = jnp.lexsort((po, pt))
    is_block = jnp.concatenate([jnp.zeros(jt.shape, bool), jnp.ones((nb,), bool)])[perm]
    pt_c = jnp.clip(pt[perm], t0, t1)
    starts = jnp.concatenate([t0[None], pt_c])
    ends = jnp.concatenate([pt_c, t1[None]])
    index = jnp.concatenate([jnp.zeros((1,), ji.dtype), jnp.concatenate([ji, jnp.zeros((nb,), ji.dtype)])[perm]])
    amounts = jnp.concatenate([jnp.zeros((1,), ja.dtype), jnp.concatenate([ja, jnp.zeros((nb,), ja.dtype)])[perm]])
    block = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(is_block).astype(jnp.int32)])
    seg_of_piece = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(~is_block).astype(jnp.int32)])
    n_states = y0.shape[0]
    out0 = jnp.zeros((n_blocks * size, n_states), y0.dtype)

    def body(carry, inp):
        y, out, written, ok, steps = carry
        a, b, idx, amt, blk, seg = inp
        y = y.at[idx].add(amt)
        lo = (blk * size).astype(jnp.int32)
        tb = jax.lax.dynamic_slice(ts_p, (lo,), (size,))
        ys, ok_k, n_k = _diffeqsolve(system, theta, ctx, y, a, b, jnp.concatenate([jnp.clip(tb, a, b), b[None]]),
                                     options)
        mine = jax.lax.dynamic_slice(seg_p, (lo,), (size,)) == seg
        cur = jax.lax.dynamic_slice(out, (lo, jnp.int32(0)), (size, n_states))
        out = jax.lax.dynamic_update_slice(out, jnp.where(mine[:, None], ys[:-1], cur), (lo, jnp.int32(0)))
        was = jax.lax.dynamic_slice(written, (lo,), (size,))
        written = jax.lax.dynamic_update_slice(written, was | mine, (lo,))
        return (ys[-1], out, written, ok & ok_k, steps + n_k), None

    carry0 = (y0, out0, jnp.zeros((n_blocks * size,), bool), jnp.asarray(True), jnp.asarray(0))
    (_, out, written, ok, steps), _ = jax.lax.scan(body, carry0, (starts, ends, index, amounts, block, seg_of_piece))
    return out[:n], ok & jnp.all(written[:n]), steps


def solve_batch(system, data: dict, theta: dict, ts, options: SolverOptions = SolverOptions(), order=None):
    """:func:`solve_subject` vmapped over subjects: ``theta`` values ``[S]``, ``ts`` ``[S, N]``.

    Returns ``(states [S, N, n_states], status [S], num_steps [S])``.
    """
    if order is None:
        return jax.vmap(lambda d, th, t: solve_subject(system, d, th, t, options))(data, theta, ts)
    return jax.vmap(lambda d, th, t, o: solve_subject(system, d, th, t, options, o))(data, theta, ts, order)


@eqx.filter_jit
def solve_batch_jit(system, data, theta, ts, options=SolverOptions(), order=None):
    """Jitted :func:`solve_batch` (compiled once per model structure and bucketed shape)."""
    return solve_batch(system, data, theta, ts, options, order)


@eqx.filter_jit
def predict_outputs(system, data: dict, theta: dict, t, order, options: SolverOptions = SolverOptions(),
                    save_chunk: int | None = None):
    """Model outputs at padded evaluation keys for a batch of subjects (jitted, vmapped).

    Parameters
    ----------
    t, order : [S, N]
        Evaluation times (non-decreasing within a subject) and record orders.

    Returns
    -------
    outputs : dict
        ``{output: [S, N]}``, every output of the system.
    status : [S] bool
    num_steps : [S] int
    """

    def one(d, th, t_s, o_s):
        states, ok, steps, ctx = solve_subject(system, d, th, t_s, options, o_s, return_context=True,
                                               save_chunk=save_chunk)
        return system.observe(t_s, o_s, states, th, ctx), ok, steps

    return jax.vmap(one)(data, theta, t, order)
