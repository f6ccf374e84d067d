"""ChEES-HMC with many short chains on the published Friberg benchmark, beside NUTS.

    python benchmarks/chees_friberg.py [--chains 64 --superchains 8 --warmup 500 --samples 63]
                                       [--solver rk4-grid|tsit5] [--nuts CHAINS,WARMUP,SAMPLES]

Same data, model, priors and parameterisation as ``benchmarks/nuts_friberg.py`` (whose
``build`` and ``published`` this reuses). All chains run together under ``vmap`` in one
process (``pkpd.infer.chees.run_chees``: BlackJAX ``chees_adaptation`` + ``dynamic_hmc``),
the superchains starting at jittered copies of the prior typical values. Default budget:
64 x 63 = 4,032 post-warm-up draws, the published 4 x 1,000 (the warm-up is counted in the
time). ESS per second = bulk ESS / wall time of warm-up plus sampling (one process: wall
time = core time on one core; on a GPU, device time). ``--nuts`` also runs NUTS (sequential
chains, centred, SVI start, the nuts_friberg settings) with the given budget in the same
process, for ESS per second and posterior agreement measured in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nuts_friberg import CARD, PARAMS, build, published  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--superchains", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=63)
    parser.add_argument("--seed", type=int, default=112356)
    parser.add_argument("--solver", default="rk4-grid", choices=["rk4-grid", "tsit5"])
    parser.add_argument("--parameterisation", default="centred", choices=["centred", "noncentred"])
    parser.add_argument("--external", default=str(Path(__file__).resolve().parents[2] / "shared" / "external"))
    parser.add_argument("--mass-matrix", choices=["unit", "diagonal"], default="unit")
    parser.add_argument("--nuts", help="also run NUTS with CHAINS,WARMUP,SAMPLES (e.g. 2,200,200)")
    args = parser.parse_args()
    args.init = "svi"
    args.progress = False

    import arviz as az
    import jax
    import numpyro

    import pkpd
    from pkpd.infer.chees import nested_rhat, run_chees
    from pkpd.stats.population import PopulationProblem

    dataset, source, spec = build(args)
    refs = published(Path(args.external))
    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, "
          f"device {jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; data {source}, {dataset.n_subjects} subjects")
    problem = PopulationProblem(pkpd.load_model(CARD), dataset, spec)
    start = time.perf_counter()
    idata, info = run_chees(problem, chains=args.chains, warmup=args.warmup, samples=args.samples,
                            seed=args.seed, superchains=args.superchains,
                            mass_matrix=None if args.mass_matrix == "unit" else "diagonal")
    wall = time.perf_counter() - start
    print(f"# ChEES: {args.chains} chains ({args.superchains} superchains) x ({args.warmup} + {args.samples}), mass matrix {args.mass_matrix}; "
          f"wall {wall:.0f} s (compile included); step size {info['step_size']:.3g}; mean leapfrog steps "
          f"{info['mean_leapfrog_steps']:.1f}; divergences {info['divergences']} "
          f"({100 * info['divergences'] / (args.chains * args.samples):.2f}%); max nested R-hat "
          f"{info['max_nested_rhat']:.3f}", flush=True)
    runs = {"chees": (idata.posterior, wall)}
    if args.nuts:
        chains, warmup, samples = (int(v) for v in args.nuts.split(","))
        start = time.perf_counter()
        tv_sites = tuple(f"log_tv_{p}" for p in PARAMS.values())
        fit = pkpd.fit(CARD, dataset, method="nuts", spec=spec, chains=chains, warmup=warmup, samples=samples,
                       seed=args.seed, dense_mass=[tv_sites], init="svi", chain_method="sequential",
                       progress=False, log_likelihood=False)
        runs["nuts"] = (fit.idata.posterior, time.perf_counter() - start)
        d = fit.diagnostics()
        print(f"# NUTS: {chains} x ({warmup} + {samples}); wall {runs['nuts'][1]:.0f} s; divergences "
              f"{d['divergences']}; max R-hat {d['max_r_hat']:.3f}", flush=True)
    consensus = {label: np.nanmean([refs[e].loc[label, "mean"] for e in refs]) for label in PARAMS} if refs else {}
    print(f"{'param':<8} {'sampler':<6} {'mean':>10} {'consensus':>10} {'ess_bulk':>9} {'r_hat/nR':>9} "
          f"{'ESS/s':>8} {'NONMEM':>8} {'x NONMEM':>9}")
    for label, name in PARAMS.items():
        for sampler, (post, seconds) in runs.items():
            x = post[f"tv_{name}"].values
            ess = float(az.ess(x, method="bulk"))
            rhat = float(nested_rhat(x, args.superchains)) if sampler == "chees" else float(az.rhat(x))
            nonmem = refs["nonmem"].loc[label, "ess_per_sec"] if "nonmem" in refs else np.nan
            print(f"{label:<8} {sampler:<6} {x.mean():>10.4g} {consensus.get(label, np.nan):>10.4g} {ess:>9.0f} "
                  f"{rhat:>9.3f} {ess / seconds:>8.3f} {nonmem:>8.4f} {ess / seconds / nonmem:>9.1f}")


if __name__ == "__main__":
    main()
