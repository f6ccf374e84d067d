"""Subjects sharded across devices (pkpd.infer.sharding) and the scaling benchmark's smoke run.

Several CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX
is imported, so the sharded checks run in a subprocess (this process already imported
JAX with one device) and report JSON figures that the tests compare here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 16 patients of friberg2002_docetaxel_linear (180 mg 1-h infusion, ANC on 7 days,
# simulated), the population log density and its gradient in NumPyro's unconstrained
# space at a point away from the initial values: unsharded (one device), and sharded
# over 4 devices (16 subjects: no padding) and over 3 devices (padded to 18).
_CHILD = textwrap.dedent(r"""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    import pkpd
    pkpd.enable_x64()
    from numpyro.infer.util import potential_energy
    from pkpd.infer import sharding
    from pkpd.solve.solver import SolverOptions
    from pkpd.stats.population import FitSpec, PopulationProblem

    CARD = "friberg2002_docetaxel_linear"
    times = np.array([0.5, 96.5, 168.5, 216.5, 264.5, 336.5, 504.5])
    sim = pkpd.simulate(CARD, "180 mg 1h", 16, seed=3, times=times)
    ds = pkpd.read_dataset(sim.drop(columns=["IPRED"]))
    problem = PopulationProblem(pkpd.load_model(CARD), ds, FitSpec(solver=SolverOptions(solver="rk4-grid")))
    f, z0 = sharding.log_density(problem)
    rng = np.random.default_rng(0)
    z = {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in z0.items()}
    grad = jax.jit(jax.value_and_grad(f))

    def flat(g):
        return np.concatenate([np.ravel(np.asarray(g[k])) for k in sorted(g)])

    v_ref, g_ref = grad(z, sharding.subject_arrays(problem))
    # Independent of the sharding module's argument passing: the problem's own NumPyro model.
    own = -float(potential_energy(problem.numpyro_model(), (), {}, z))
    out = dict(devices=len(jax.devices()), n_sub=problem.n_sub, value=float(v_ref), own=own, cases={})
    for n_dev in (4, 3):
        sp = sharding.shard_subjects(problem, jax.devices()[:n_dev])
        tree = sharding.subject_arrays(sp)
        fs, _ = sharding.log_density(sp)
        g = jax.jit(jax.value_and_grad(fs))
        v, gr = g(z, tree)
        grid = tree["data"]["grid"]
        compiled = g.lower(z, tree).compile()
        in_shard = compiled.input_shardings[0][1]["data"]["grid"]
        a, b = flat(g_ref), flat(gr)
        out["cases"][n_dev] = dict(
            n_sub=sp.n_sub, value=float(v),
            grad_rel=float(np.max(np.abs(a - b)) / np.max(np.abs(a))),
            grad_finite=bool(np.all(np.isfinite(b))),
            shards=sorted(s.device.id for s in grid.addressable_shards),
            shard_rows=[s.data.shape[0] for s in grid.addressable_shards],
            spec=list(grid.sharding.spec), in_devices=len(in_shard.device_set), in_spec=list(in_shard.spec),
            all_reduce="all-reduce" in compiled.as_text(),
            padded_mask=bool(np.asarray(sp.arrays["mask"])[problem.n_sub:].any()),
            padded_obs_mask=bool(sp.obs.mask[problem.n_sub:].any()),
            observed_rows=len(sp.observed_frame()))
    out["observed_rows"] = len(problem.observed_frame())
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded():
    """Figures of the sharded checks (one subprocess, about 1-3 min on a shared 2-core CPU)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=str(ROOT), env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip().splitlines()[-1])  # the figures (pytest -s)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_problem_has_four_devices_and_no_padding(sharded):
    assert sharded["devices"] == 4
    assert sharded["n_sub"] == 16
    # The argument-passing log density equals the problem's own NumPyro model (measured: equal to 1e-16).
    assert sharded["value"] == pytest.approx(sharded["own"], rel=1e-12)


@pytest.mark.parametrize("n_dev, n_sub", [(4, 16), (3, 18)])
def test_sharded_log_density_and_gradient_match_unsharded(sharded, n_dev, n_sub):
    case = sharded["cases"][str(n_dev)]
    assert case["n_sub"] == n_sub
    assert case["value"] == pytest.approx(sharded["value"], rel=1e-10)
    assert case["grad_finite"]
    assert case["grad_rel"] < 1e-10


@pytest.mark.parametrize("n_dev, n_sub", [(4, 16), (3, 18)])
def test_arrays_live_on_the_devices_and_the_program_is_partitioned(sharded, n_dev, n_sub):
    case = sharded["cases"][str(n_dev)]
    assert case["shards"] == list(range(n_dev))
    assert case["shard_rows"] == [n_sub // n_dev] * n_dev
    assert case["spec"] == ["subjects"]
    # The compiled function takes the grid split over the devices and sums across them.
    assert case["in_devices"] == n_dev and case["in_spec"] == ["subjects"]
    assert case["all_reduce"]


def test_padded_subjects_are_masked(sharded):
    case = sharded["cases"]["3"]
    assert not case["padded_mask"] and not case["padded_obs_mask"]
    assert case["observed_rows"] == sharded["observed_rows"] == 16 * 7


@pytest.mark.slow  # reason: five NUTS/gradient programs compile in a subprocess: 1-5 min on a shared 2-core CPU
def test_scaling_smoke():
    """``benchmarks/scaling.py --smoke`` (CI-sized: 12 and 50 subjects, 2 vectorised NUTS chains
    of 10 + 10, a 200-patient forecast) exits 0 and prints every part of the table. It uses the
    tests' persistent compilation cache (conftest), so repeated runs load its five programs
    instead of compiling them; the first run takes 1-3 min on a shared 2-core CPU."""
    cache = os.environ.get("PKPD_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "pkpd", "jax-tests"))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--smoke", "--cache", cache],
                          capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout
    for part in ("(a) log density + gradient", "(b) NUTS", "(c) population forecast", "backend cpu", "jax "):
        assert part in out, out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert {"12", "50"} <= {r[0] for r in rows}, out
    assert any(r[0] == "12" and r[1] == "2" and r[2] == "vectorized" for r in rows), out
