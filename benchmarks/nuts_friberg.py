"""NUTS on the published Friberg benchmark (PumasAI Bayesian-Benchmarks 05-friberg) vs NONMEM, Stan, Pumas.

    python benchmarks/nuts_friberg.py [--chains 4 --warmup 500 --samples 1000] [--seed 112356]
                                      [--solver rk4-grid|tsit5] [--external ../shared/external]
                                      [--parameterisation centred|noncentred|partial [--noncentred Q2,V2]]
                                      [--init svi|prior] [--target-accept 0.8]
                                      [--sequential | --processes N]

Same data (read from ``../shared/external/pumas-friberg`` when present, otherwise a data
set of the same design regenerated from the published true values), same model (oral
2-compartment PK + Friberg with Edrug = min(1, alpha*C), log-normal IIV on all nine
parameters with a full correlation matrix, log-normal residual errors), same priors
(typical values LogNormal(log v, 1) with the published locations, TVVP at 40; omega
HalfNormal(0.4); LKJ(2); sigma HalfNormal(0.5); the published KA truncation at the
largest disposition eigenvalue is not applied) and the same sampler budget. ESS per
second is computed as published: ESS divided by the summed wall time of the chains.
By default the chains run in parallel, each in its own process (seed + chain number), at
most ``--processes`` at a time (default ``min(chains, CPUs)``, so no two chain processes
share a core): the summed chain time is then counted as
the chain processes' summed CPU time (core-seconds, SVI start and compile included), which
is what the published figures measure when each chain has a core; ESS per wall-second is printed too. (One process
with a JAX host device per chain and ``pmap`` grows its memory steadily on CPU; see
``parallel_chains``.) ``--sequential`` runs the chains one after another in this process
(summed chain time = wall time less one compile). Compile time (one gradient, timed on
its own) is reported separately.

The individual parameters are sampled centred (``log_theta_i ~ N(log TV, Sigma)``): every
subject here has 39 concentrations and 29 counts, so its parameters are well identified
and the non-centred form makes the population and standardised parameters strongly
correlated (warm-up then hits the maximum tree depth). NUTS starts from a mean-field SVI
fit (``init="svi"``: its median, and its variances as the initial mass matrix; one SVI
fit per chain, with the chain's seed); the SVI time counts as sampling time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

PARAMS = {"TVCL": "CL", "TVVC": "V1", "TVQ": "Q2", "TVVP": "V2", "TVKA": "KA", "TVMTT": "MTT",
          "TVCIRC0": "Circ0", "TVGAMMA": "gamma", "TVALPHA": "slope"}
CARD = "pumas2023_friberg_benchmark"


def load_data(external: Path):
    import pandas as pd

    import pkpd

    path = external / "pumas-friberg" / "multiple_dose.csv"
    if path.is_file():
        raw = pd.read_csv(path, na_values=".")
        raw["DVID"] = np.where(raw["EVID"] == 0, np.where(raw["CMT"] == 2, 1, 2), 0)
        raw = raw.drop(columns=["CP", "DVLN", "BLOQ", "LLOQ"])
        return pkpd.read_dataset(raw, units={"CONC": "ug/L"}, dose_unit="ug"), f"{path}"
    # Same design from the published true values: 3 subjects x 10/20/40/80 mg, 7 daily doses.
    pk_times = [24, 48, 72, 72.25, 72.5, 72.75, 73, 73.5, 74, 74.5, 75, 76, 78, 80, 84, 88, 92, 96, 120, 144]
    pk_times += [t + 72 for t in pk_times[3:18]] + [180, 192, 204, 216]
    frames = []
    for i, dose in enumerate([10, 10, 10, 20, 20, 20, 40, 40, 40, 80, 80, 80]):
        rows = [dict(ID=i + 1, TIME=0.0, AMT=dose, EVID=1, CMT=1, II=24.0, ADDL=6, DVID=0)]
        rows += [dict(ID=i + 1, TIME=float(t), AMT=0.0, EVID=0, CMT=0, II=0.0, ADDL=0, DVID=1) for t in sorted(set(pk_times))]
        rows += [dict(ID=i + 1, TIME=24.0 * d, AMT=0.0, EVID=0, CMT=0, II=0.0, ADDL=0, DVID=2) for d in range(29)]
        frames.append(pd.DataFrame(rows).sort_values(["TIME", "EVID"], kind="stable"))
    design = pd.concat(frames, ignore_index=True)
    for col in ("RATE", "SS"):
        design[col] = 0
    design["MDV"] = (design["EVID"] != 0).astype(int)
    design["DV"] = np.nan
    sim = pkpd.simulate(CARD, design, seed=123)
    return pkpd.read_dataset(sim.drop(columns=["IPRED"])), "regenerated from the published true values (seed 123)"


def published(external: Path):
    import pandas as pd

    out = {}
    for engine in ("nonmem", "stan", "pumas"):
        path = external / "pumas-friberg" / "results" / engine / "05.csv"
        if path.is_file():
            out[engine] = pd.read_csv(path).set_index("parameters")
    return out


def parameterisation(args):
    """The ``FitSpec.parameterisation`` of ``args``: partial centring centres every parameter
    but those named by ``--noncentred``."""
    if getattr(args, "parameterisation", "centred") != "partial":
        return getattr(args, "parameterisation", "centred")
    rest = {p.strip() for p in args.noncentred.split(",") if p.strip()}
    bad = rest - set(PARAMS.values())
    if bad:
        raise SystemExit(f"--noncentred: unknown parameter(s) {sorted(bad)}; choose from {list(PARAMS.values())}")
    return tuple(p for p in PARAMS.values() if p not in rest)


def build(args):
    """The data, its source and the statistical-model spec (same in the parent and the chain workers)."""
    import pkpd
    from pkpd.solve.solver import SolverOptions
    from pkpd.stats.population import FitSpec

    pkpd.enable_x64()
    dataset, source = load_data(Path(args.external))
    solver = SolverOptions(solver="rk4-grid") if args.solver == "rk4-grid" else SolverOptions(rtol=1e-6, atol=1e-8)
    spec = FitSpec(covariance="full", iiv=tuple(PARAMS.values()), prior_width=1.0, prior_values={"V2": 40.0},
                   omega_prior_scale=0.4, sigma_prior_scale=0.5, lkj_eta=2.0, solver=solver,
                   parameterisation=parameterisation(args))
    return dataset, source, spec


def run_chains(args, chains: int, seed: int):
    """``chains`` NUTS chains, one after another in this process (published budget and priors)."""
    import pkpd

    dataset, _, spec = build(args)
    tv_sites = tuple(f"log_tv_{p}" for p in PARAMS.values())
    return pkpd.fit(CARD, dataset, method="nuts", spec=spec, chains=chains, warmup=args.warmup,
                    samples=args.samples, seed=seed, dense_mass=[tv_sites], init=args.init,
                    target_accept=args.target_accept, chain_method="sequential", progress=args.progress,
                    log_likelihood=False)


def chain_worker(args, chain: int, path: str) -> dict:
    """One chain in its own process (seed + chain), saved to ``path``; returns its settings
    with ``cpu_s``, the process's CPU time (its core-seconds, SVI start and compile included)."""
    import resource

    fit = run_chains(args, 1, args.seed + chain)
    fit.save(path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**fit.settings, "cpu_s": usage.ru_utime + usage.ru_stime}


def parallel_chains(args):
    """Run each chain in its own process, all at once, and join them into one fit.

    JAX host devices (``--xla_force_host_platform_device_count`` and ``pmap``) would run the
    chains in one process, but with jax 0.10 on CPU that process's memory grows steadily
    while it samples (measured here: 13.6 GB after 23 minutes of this benchmark, about
    0.5 GB a minute; no growth with one device), which a full-budget run cannot afford.
    """
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    import arviz as az

    import pkpd

    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp) / f"chain{i}.nc") for i in range(args.chains)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.processes, mp_context=context) as pool:
            runs = list(pool.map(chain_worker, [args] * args.chains, range(args.chains), paths))
        fits = [pkpd.load_fit(p) for p in paths]
    for i, f in enumerate(fits):
        for group in f.idata.groups():
            data = getattr(f.idata, group)
            if "chain" in data.dims:
                setattr(f.idata, group, data.assign_coords(chain=[i]))
    idata = az.concat([f.idata for f in fits], dim="chain")
    first = fits[0]
    settings = {**first.settings, "chains": args.chains, "chain_method": "one process per chain",
                "seeds": [args.seed + i for i in range(args.chains)]}
    fit = pkpd.Fit(idata, card=first.card, model_name=first.model_name, dataset_hash=first.dataset_hash,
                   settings=settings)
    return fit, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=112356)
    parser.add_argument("--solver", default="rk4-grid", choices=["rk4-grid", "tsit5"])
    parser.add_argument("--external", default=str(Path(__file__).resolve().parents[2] / "shared" / "external"))
    parser.add_argument("--out", help="also save the fit (netCDF) here")
    parser.add_argument("--progress", action="store_true", help="show NUTS progress bars")
    parser.add_argument("--parameterisation", default="centred", choices=["centred", "noncentred", "partial"])
    parser.add_argument("--noncentred", default="Q2,V2",
                        help="with --parameterisation partial: the parameters left non-centred (default Q2,V2)")
    parser.add_argument("--init", default="svi", choices=["svi", "prior"])
    parser.add_argument("--target-accept", type=float, default=0.8,
                        help="NUTS step-size adaptation target (pkpd.fit's default 0.8)")
    parser.add_argument("--sequential", action="store_true", help="run the chains one after another")
    parser.add_argument("--processes", type=int,
                        help="chain processes at a time (default min(chains, CPUs): one core each)")
    args = parser.parse_args()
    if args.processes is None:
        args.processes = max(1, min(args.chains, os.cpu_count() or 1))
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    cores = 1 if args.sequential else min(args.processes, os.cpu_count() or 1)

    import arviz as az
    import jax
    import numpyro
    from numpyro.infer.util import initialize_model

    import pkpd
    from pkpd.stats.population import PopulationProblem

    dataset, source, spec = build(args)
    refs = published(Path(args.external))
    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, "
          f"device {jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print(f"# data: {source}; {dataset.n_subjects} subjects")

    # Compile time: one log-density gradient of the same problem, timed on its own.
    problem = PopulationProblem(pkpd.load_model(CARD), dataset, spec)
    info = initialize_model(jax.random.PRNGKey(0), problem.numpyro_model(),
                            init_strategy=numpyro.infer.init_to_value(values=problem.initial_values()))
    grad = jax.jit(jax.value_and_grad(info.potential_fn))
    start = time.perf_counter()
    jax.block_until_ready(grad(info.param_info.z))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(20):
        jax.block_until_ready(grad(info.param_info.z))
    grad_ms = (time.perf_counter() - start) / 20 * 1000
    print(f"# solver {problem.solver.solver} (grid error {problem.grid_error}); one gradient {grad_ms:.1f} ms; "
          f"compile {compile_s:.1f} s", flush=True)

    start = time.perf_counter()
    if args.sequential:
        fit = run_chains(args, args.chains, args.seed)
        wall = time.perf_counter() - start
        sampling = fit.settings["sampling_time_s"]
        runs = [fit.settings]
    else:  # wall time of the whole parallel section, process start-up and SVI starts included
        fit, runs = parallel_chains(args)
        wall = sampling = time.perf_counter() - start
    if args.out:
        fit.save(args.out)

    post = fit.idata.posterior
    diag = fit.diagnostics()
    steps = float(np.mean([r["mean_leapfrog_steps"] for r in runs]))
    init_s = max(r.get("init_time_s", 0.0) for r in runs)
    print(f"# wall {wall:.0f} s (sampling {sampling:.0f} s incl. one compile of about {compile_s:.0f} s); "
          f"divergences {diag['divergences']}; mean tree depth {diag['mean_tree_depth']:.2f}; "
          f"mean leapfrog steps {steps:.1f}")
    # Summed chain time in core-seconds: each chain process's CPU time (chains that finish
    # early free their core, so wall x cores would over-count), or the sequential wall time.
    chain_time = sum(r["cpu_s"] for r in runs) if not args.sequential else sampling - compile_s
    mode = "sequential" if args.sequential else f"one process per chain, {args.processes} at a time"
    print(f"# chains {args.chains} ({mode}, {cores} core(s)); parameterisation {parameterisation(args)}; "
          f"target_accept {args.target_accept}; "
          f"init {args.init} ({init_s:.0f} s); summed chain time {chain_time:.0f} core-s")
    header = (f"{'param':<8} {'pkpd':>10} {'NONMEM':>10} {'Stan':>10} {'Pumas':>10} {'ess_bulk':>9} {'ess_tail':>9}"
              f" {'r_hat':>6} {'ESS/s':>8} {'NONMEM':>8} {'Stan':>8} {'Pumas':>8} {'x NONMEM':>9} {'ESS/wall-s':>10}")
    print(header)
    for label, name in PARAMS.items():
        x = post[f"tv_{name}"].values
        ess_b, ess_t, rhat = float(az.ess(x, method="bulk")), float(az.ess(x, method="tail")), float(az.rhat(x))
        ours = ess_b / chain_time
        means = [refs[e].loc[label, "mean"] if e in refs else np.nan for e in ("nonmem", "stan", "pumas")]
        rates = [refs[e].loc[label, "ess_per_sec"] if e in refs else np.nan for e in ("nonmem", "stan", "pumas")]
        print(f"{label:<8} {x.mean():>10.4g} {means[0]:>10.4g} {means[1]:>10.4g} {means[2]:>10.4g} {ess_b:>9.0f} "
              f"{ess_t:>9.0f} {rhat:>6.3f} {ours:>8.4f} {rates[0]:>8.4f} {rates[1]:>8.4f} {rates[2]:>8.4f} "
              f"{ours / rates[0]:>9.1f} {ess_b / (sampling - compile_s):>10.4f}")
    consensus = {label: np.nanmean([refs[e].loc[label, "mean"] for e in refs]) for label in PARAMS} if refs else {}
    if consensus:
        dev = max(abs(post[f"tv_{n}"].values.mean() / consensus[label] - 1) for label, n in PARAMS.items())
        print(f"# max deviation of posterior means from the published consensus: {100 * dev:.1f}%")


if __name__ == "__main__":
    main()
