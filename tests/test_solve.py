"""The fixed-grid RK4 likelihood solver against tight adaptive solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pkpd
from pkpd.stats.simulate import solve_design
from pkpd.solve.solver import SolverOptions
from pkpd.stats.population import FitSpec, PopulationProblem

TIGHT = SolverOptions(rtol=1e-11, atol=1e-13, max_steps=100_000)


def _design(doses, times, dvid=2):
    rows = [dict(ID=1, TIME=t, DV=np.nan, AMT=a, EVID=1, MDV=1, CMT=1, RATE=r, II=ii, ADDL=addl, SS=0, DVID=0)
            for t, a, r, ii, addl in doses]
    rows += [dict(ID=1, TIME=float(t), DV=np.nan, AMT=0.0, EVID=0, MDV=1, CMT=0, RATE=0.0, II=0.0, ADDL=0, SS=0,
                  DVID=dvid) for t in times]
    df = pd.DataFrame(rows).sort_values("TIME", kind="stable").reset_index(drop=True)
    for k, v in dict(SEX=1, PERF=0, PC=0, AAG=1.34).items():
        df[k] = v
    return df


def _max_rel_error(model, df, options):
    theta = model.individual_parameters(model.subject_covariates(df, [1]), n=1)
    ref, ok_ref, _ = solve_design(model, df, theta, TIGHT)
    got, ok, steps = solve_design(model, df, theta, options)
    obs = df["EVID"].to_numpy() == 0
    assert ok.all() and ok_ref.all()
    return float(np.max(np.abs(got[obs] - ref[obs]) / np.abs(ref[obs]))), int(steps[0])


def test_grid_oral_daily_dosing():
    """Oral 2-cmt PK (the Friberg benchmark card), 7 daily doses: default grid within 1e-4."""
    model = pkpd.load_model("pumas2023_friberg_benchmark")
    df = _design([(0.0, 80.0, 0.0, 24.0, 6)], np.arange(0.0, 28 * 24 + 1, 12.0))
    err, steps = _max_rel_error(model, df, SolverOptions(solver="rk4-grid"))
    assert err < 1e-4, err
    coarse, _ = _max_rel_error(model, df, SolverOptions(solver="rk4-grid", grid_fine=1.0, grid_medium=4.0,
                                                          grid_coarse=24.0))
    assert coarse > 3 * err  # the error really depends on the grid (the check can fail)


def test_grid_iv_bolus_enters_the_step_that_starts_at_the_dose():
    """IV boluses at grid times: the drive jumps; a fine grid converges to the adaptive solution."""
    model = pkpd.load_model("friberg2002_docetaxel_linear")
    df = _design([(0.0, 180.0, 0.0, 0.0, 0), (504.0, 180.0, 0.0, 0.0, 0)], np.arange(0.0, 42 * 24 + 1, 24.0))
    err, _ = _max_rel_error(model, df, SolverOptions(solver="rk4-grid", grid_fine=0.01, grid_medium=0.05))
    assert err < 1e-3, err


def test_problem_refines_the_grid_until_it_matches():
    """On the docetaxel example data (fast IV PK, strong effect) the default grid is refined at set-up."""
    data = pkpd.read_dataset("data/example.csv")
    problem = PopulationProblem(pkpd.load_model("kloft2006_docetaxel"), data,
                                FitSpec(solver=SolverOptions(solver="rk4-grid")))
    assert problem.grid_error is not None and problem.grid_error <= 1e-4
    assert problem.solver.solver == "rk4-grid" and problem.solver.grid_fine < SolverOptions().grid_fine
    assert problem.grid_levels.max() >= 1


def test_grid_fallback_keeps_the_adjoint():
    """When refinement cannot reach the tolerance the problem falls back to Tsit5 with the caller's
    adjoint (a forecast asks for forward mode: reverse mode there would fail under jacfwd)."""
    import warnings

    data = pkpd.read_dataset("data/example.csv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problem = PopulationProblem(pkpd.load_model("kloft2006_docetaxel"), data,
                                    FitSpec(solver=SolverOptions(solver="rk4-grid", adjoint="forward"),
                                            grid_tolerance=1e-14))
    assert any("using the adaptive Tsit5 solver" in str(w.message) for w in caught)
    assert (problem.solver.solver, problem.solver.adjoint) == ("tsit5", "forward")


def test_compilation_cache_setup_removes_host_callbacks(tmp_path):
    """JAX never caches programs with host callbacks; equinox's raising runtime checks (inside
    diffrax) are callbacks, so enable_compilation_cache switches them to NaN. Fresh processes,
    since JAX reuses traces of module-level functions within one."""
    import os
    import subprocess
    import sys

    script = """
import sys, diffrax, jax, jax.numpy as jnp
from pkpd.config import enable_compilation_cache
if sys.argv[1] == "cache":
    enable_compilation_cache(sys.argv[2])
def solve(y0, ts):  # as pkpd solves: output at given times (diffrax checks they are ordered)
    term = diffrax.ODETerm(lambda t, y, args: -y)
    return diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, y0, throw=False, saveat=diffrax.SaveAt(ts=ts),
                               stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8)).ys
print("callback" in jax.jit(solve).lower(jnp.ones(2), jnp.linspace(0.0, 1.0, 5)).as_text())
"""
    env = {k: v for k, v in os.environ.items() if k != "EQX_ON_ERROR"}
    out = {}
    for mode in ("plain", "cache"):
        res = subprocess.run([sys.executable, "-c", script, mode, str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        out[mode] = res.stdout.strip().splitlines()[-1]
    assert out == {"plain": "True", "cache": "False"}  # the check can fail: by default checks are callbacks


def _grid_loss(model, df, adjoint):
    """A smooth function of the subject's parameters through the rk4-grid solve (ANC at each time)."""
    from pkpd.dosing.events import evaluation_keys
    from pkpd.solve.solver import predict_outputs

    rows = np.flatnonzero(df["EVID"].to_numpy(int) == 0)
    t, order, _, mask = evaluation_keys(df, rows, [1], n_subjects=1)
    options = SolverOptions(solver="rk4-grid", adjoint=adjoint)
    dynamics, data = model.prepare(df, [1], n_subjects=1, eval_times=t, eval_mask=mask, options=options)
    weights = jnp.asarray(np.linspace(0.5, 1.5, t.shape[1]))[None]

    def loss(theta):
        out = predict_outputs(dynamics, data, {k: v[None] for k, v in theta.items()}, jnp.asarray(t),
                              jnp.asarray(order), options)[0]
        return jnp.sum(jnp.log(out["ANC"]) * weights * jnp.asarray(mask))

    return loss


def test_grid_forward_sensitivities_equal_the_reverse_sweep():
    """rk4-grid with forward-mode sensitivities (the default, adjoint "auto"): the same value, the
    same gradient and the same Hessian as reverse mode through the time loop, and the gradient
    matches central finite differences."""
    model = pkpd.load_model("pumas2023_friberg_benchmark")
    df = _design([(0.0, 80.0, 0.0, 24.0, 6)], np.arange(0.0, 28 * 24 + 1, 12.0))
    theta = {k: jnp.asarray(float(v)) for k, v in model.card.typical_values().items()}
    fwd, rev = _grid_loss(model, df, "auto"), _grid_loss(model, df, "recursive")
    assert float(fwd(theta)) == float(rev(theta))
    g_f, g_r = jax.grad(fwd)(theta), jax.grad(rev)(theta)
    scale = max(abs(float(v)) for v in g_r.values())
    assert scale > 1e-3 and set(g_f) == set(theta)
    for k in theta:
        assert abs(float(g_f[k]) - float(g_r[k])) <= 1e-10 * scale, k
        h = 1e-5 * float(theta[k])
        up, dn = dict(theta), dict(theta)
        up[k], dn[k] = theta[k] + h, theta[k] - h
        fd = (float(rev(up)) - float(rev(dn))) / (2 * h)
        assert abs(fd - float(g_r[k])) <= 1e-5 * scale + 1e-6 * abs(fd), (k, fd, float(g_r[k]))
    names = ["MTT", "slope", "CL"]
    sub = lambda f: (lambda x: f({**theta, **dict(zip(names, x))}))  # noqa: E731
    x0 = jnp.asarray([float(theta[k]) for k in names])
    h_f, h_r = jax.hessian(sub(fwd))(x0), jax.hessian(sub(rev))(x0)
    assert float(jnp.max(jnp.abs(h_f - h_r))) <= 1e-9 * float(jnp.max(jnp.abs(h_r)))
    assert float(jnp.max(jnp.abs(h_r))) > 0
    # Only these three vary (the others are constants: symbolic-zero tangents, left out of the
    # rule's sensitivity loop): forward- and reverse-mode derivatives still equal the full ones.
    full = jnp.asarray([float(g_r[k]) for k in names])
    for d in (jax.jacfwd(sub(fwd))(x0), jax.grad(sub(fwd))(x0)):
        assert float(jnp.max(jnp.abs(d - full))) <= 1e-10 * scale


def test_grid_refinement_is_per_subject():
    """Each subject's grid is refined on its own (probe random effect seeded by its ID): a subject gets
    the same grid in the whole data set as alone, and subjects need different refinements here."""
    data = pkpd.read_dataset("data/example.csv")
    model = pkpd.load_model("kloft2006_docetaxel")
    spec = FitSpec(solver=SolverOptions(solver="rk4-grid"))
    whole = PopulationProblem(model, data, spec)
    assert whole.solver.solver == "rk4-grid"
    assert len(set(whole.grid_levels.tolist())) > 1  # some subjects need finer grids than others
    assert whole.data["grid"].shape[1] % 16 == 0  # padded to a multiple of 16 (grid_bucket)
    for i in (0, len(data.ids) - 1):
        alone = PopulationProblem(model, data.subset([data.ids[i]]), spec)
        assert alone.grid_levels[0] == whole.grid_levels[i]
        g_alone, g_whole = np.asarray(alone.data["grid"][0]), np.asarray(whole.data["grid"][i])
        np.testing.assert_array_equal(np.unique(g_alone), np.unique(g_whole))
