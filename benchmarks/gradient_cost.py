"""Log-density gradient cost (Friberg benchmark or a counts-only study), this checkout vs a baseline.

    python benchmarks/gradient_cost.py [--baseline ../pkpd-baseline] [--rounds 3] [--reps 30]
                                       [--solver rk4-grid|tsit5] [--study friberg|counts]

Times one ``value_and_grad`` of the population log density at the initial values, after
compilation, of ``--study friberg`` (default: 12 subjects, 468 PK + 348 ANC observations,
the model and priors of ``benchmarks/nuts_friberg.py``; every parameter estimated) or
``--study counts`` (40 virtual patients of the Kloft 2006 card, docetaxel 100 mg/m2 1 h,
daily ANC for 21 days and no concentrations, so the PK parameters are fixed), in fresh
subprocesses that alternate between the two code trees (``--rounds`` times each), so both
are measured in the same conditions. The baseline is any other checkout of pkpd (e.g.
``git worktree add ../pkpd-baseline <commit>``); without ``--baseline`` only this checkout
is timed. Prints the median per tree and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/benchmarks")
import jax, numpyro
jax.config.update("jax_enable_x64", True)
from numpyro.infer.util import initialize_model
import pkpd
try:
    from pkpd.stats.population import PopulationProblem
except ImportError:  # older layout
    from pkpd.statmodel import PopulationProblem
import nuts_friberg as nf
from pathlib import Path
args = type("A", (), dict(solver={solver!r}, parameterisation="centred", external={external!r}))()
if {study!r} == "friberg":
    dataset, source, spec = nf.build(args)
    card = nf.CARD
else:
    import numpy as np
    from pkpd.stats.population import FitSpec
    card = "kloft2006_docetaxel"
    sim = pkpd.simulate(card, "100 mg/m2 1h", 40, seed=20261130, times=np.arange(0.0, 22 * 24, 24.0),
                        covariates={{"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}})
    dataset = pkpd.read_dataset(sim.drop(columns=["IPRED"]))
    spec = FitSpec(solver=pkpd.SolverOptions(solver={solver!r}))
problem = PopulationProblem(pkpd.load_model(card), dataset, spec)
info = initialize_model(jax.random.PRNGKey(0), problem.numpyro_model(),
                        init_strategy=numpyro.infer.init_to_value(values=problem.initial_values()))
grad = jax.jit(jax.value_and_grad(info.potential_fn))
t0 = time.perf_counter(); v, g = grad(info.param_info.z); jax.block_until_ready(g); compile_s = time.perf_counter() - t0
t0 = time.perf_counter()
for _ in range({reps}):
    jax.block_until_ready(grad(info.param_info.z))
ms = (time.perf_counter() - t0) / {reps} * 1000
print(json.dumps(dict(ms=ms, compile_s=compile_s, value=float(v), pkpd=pkpd.__file__)))
"""


def run(root: Path, solver: str, reps: int, external: str, study: str = "friberg") -> dict:
    code = _CHILD.format(root=str(root), solver=solver, reps=reps, external=external, study=study)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(root))
    if proc.returncode != 0:
        raise SystemExit(f"{root}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another pkpd checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--solver", default="rk4-grid", choices=["rk4-grid", "tsit5"])
    parser.add_argument("--study", default="friberg", choices=["friberg", "counts"])
    parser.add_argument("--external", default=str(HERE.parent / "shared" / "external"))
    args = parser.parse_args()
    trees = {"this": HERE}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    times = {k: [] for k in trees}
    values = {}
    for r in range(args.rounds):
        for name, root in trees.items():
            out = run(root, args.solver, args.reps, args.external, args.study)
            times[name].append(out["ms"])
            values[name] = out["value"]
            print(f"round {r + 1} {name:8s} {out['ms']:7.2f} ms per gradient (compile {out['compile_s']:.1f} s, "
                  f"log density {out['value']:.6f}, {out['pkpd']})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"median {k}: {v:.2f} ms")
    if "baseline" in med:
        print(f"ratio this/baseline: {med['this'] / med['baseline']:.3f}; log densities agree to "
              f"{abs(values['this'] - values['baseline']):.2e}")


if __name__ == "__main__":
    main()
