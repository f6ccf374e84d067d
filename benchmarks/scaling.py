"""Scaling: log-density gradient, NUTS throughput and a population forecast as subjects and chains grow.

    python benchmarks/scaling.py [--subjects 12 100 1000 10000] [--nuts-subjects 12 100]
                                 [--chains 1 4 16] [--chain-subjects 12] [--forecast 10000]
                                 [--devices N] [--solver rk4-grid|tsit5] [--smoke]

The design is that of the published Friberg benchmark (``benchmarks/nuts_friberg.py``,
card ``pumas2023_friberg_benchmark``): oral doses of 10, 20, 40 or 80 mg (subjects cycle
through the four) once daily for 7 days, 39 concentrations and 29 daily counts per
subject; N subjects are simulated from the card's typical values, IIV and residual errors
(``pkpd.simulate``, seed 123), and fitted with the benchmark's statistical model (full
IIV covariance over the nine parameters, centred, the published priors) and solver
(``rk4-grid`` by default).

Stages (each size, chain count and the forecast in its own process, so that the peak
resident set size is that stage's; ``--in-process`` runs everything in this process):

(a) log density + gradient (``jax.value_and_grad``, jitted) at the initial values: the
    first call (compile + run) and the median of ``--reps`` warm calls;
(b) NUTS (NumPyro, ``--warmup`` + ``--samples`` per chain, started at the prior typical
    values, diagonal mass): warm-up wall time (compile included), then ``--samples``
    draws twice from the adapted state; the first run compiles the sampling loop, the
    second is timed: gradient evaluations per second (leapfrog steps of all chains /
    its wall time), leapfrog steps per draw, and bulk ESS of its draws per second of its
    wall time for the nine log typical values (min and median over the nine), for the ``--nuts-subjects`` sizes with one chain and
    for ``--chains`` chains (``chain_method="vectorized"`` when more than one) at
    ``--chain-subjects`` subjects;
(c) a population forecast: ``--forecast`` virtual patients drawn from the card (typical
    values + IIV draws + residual error), 80 mg daily for 7 days, ANC every 6 h for 28 days
    (``pkpd.simulate``; first call and a warm second call);
(d) memory: peak resident set size of the stage's process (``resource.getrusage``; on a
    GPU also the device's peak bytes in use, where the backend reports it).

``--devices N`` shards the subjects across N devices (:mod:`pkpd.infer.sharding`; on a
CPU host N devices are forced with ``--xla_force_host_platform_device_count``): stages
(a) and (b) then run partitioned by XLA. The subject arrays are passed to the compiled
functions as arguments in every case (closed-over arrays are compiled in as constants).
``--smoke`` runs CI-sized settings (12 and 50 subjects, 2 vectorised chains of 10 + 10 at
12 subjects with trees at most 3 deep, a 200-patient forecast) in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

CARD = "pumas2023_friberg_benchmark"
PARAMS = ("CL", "V1", "Q2", "V2", "KA", "MTT", "Circ0", "gamma", "slope")
DOSES = (10.0, 20.0, 40.0, 80.0)
PK_TIMES = [24, 48, 72, 72.25, 72.5, 72.75, 73, 73.5, 74, 74.5, 75, 76, 78, 80, 84, 88, 92, 96, 120, 144]
PK_TIMES = sorted(set(PK_TIMES + [t + 72 for t in PK_TIMES[3:18]] + [180, 192, 204, 216]))


def design(n: int, forecast: bool = False):
    """``n`` subjects of the benchmark design (doses cycle 10/20/40/80 mg, 7 daily oral doses);
    ``forecast``: 80 mg for everyone and ANC every 6 h for 28 days (no PK)."""
    import pandas as pd

    ids = np.arange(1, n + 1)
    dose = np.full(n, 80.0) if forecast else np.array(DOSES)[(ids - 1) // 3 % 4]
    doses = pd.DataFrame(dict(ID=ids, TIME=0.0, AMT=dose, EVID=1, CMT=1, II=24.0, ADDL=6, DVID=0))
    if forecast:
        obs = [(t, 2) for t in np.arange(0.0, 28 * 24 + 1, 6.0)]
    else:
        obs = [(float(t), 1) for t in PK_TIMES] + [(24.0 * d, 2) for d in range(29)]
    t, dvid = np.array([o[0] for o in obs]), np.array([o[1] for o in obs])
    rows = pd.DataFrame(dict(ID=np.repeat(ids, len(obs)), TIME=np.tile(t, n), AMT=0.0, EVID=0, CMT=0, II=0.0, ADDL=0,
                             DVID=np.tile(dvid, n)))
    df = pd.concat([doses, rows], ignore_index=True).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False],
                                                               kind="stable").reset_index(drop=True)
    df["RATE"], df["SS"], df["DV"] = 0, 0, np.nan
    df["MDV"] = (df["EVID"] != 0).astype(int)
    return df


def spec(solver: str):
    """The statistical model of ``benchmarks/nuts_friberg.py`` (``build``)."""
    from pkpd.solve.solver import SolverOptions
    from pkpd.stats.population import FitSpec

    options = SolverOptions(solver="rk4-grid") if solver == "rk4-grid" else SolverOptions(rtol=1e-6, atol=1e-8)
    return FitSpec(covariance="full", iiv=PARAMS, prior_width=1.0, prior_values={"V2": 40.0}, omega_prior_scale=0.4,
                   sigma_prior_scale=0.5, lkj_eta=2.0, solver=options, parameterisation="centred")


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def device_peak_mb():
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def build_problem(n: int, solver: str, devices: int | None):
    import pkpd
    from pkpd.infer import sharding
    from pkpd.stats.population import PopulationProblem

    start = time.perf_counter()
    sim = pkpd.simulate(CARD, design(n), seed=123)
    dataset = pkpd.read_dataset(sim.drop(columns=["IPRED"]))
    problem = PopulationProblem(pkpd.load_model(CARD), dataset, spec(solver))
    if devices:
        problem = sharding.shard_subjects(problem, devices)
    return problem, time.perf_counter() - start


def gradient_stage(problem, reps: int) -> dict:
    import jax

    from pkpd.infer import sharding

    f, z0 = sharding.log_density(problem)
    subjects = sharding.subject_arrays(problem)
    grad = jax.jit(jax.value_and_grad(f))
    start = time.perf_counter()
    value, g = grad(z0, subjects)
    jax.block_until_ready(g)
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(grad(z0, subjects))
        times.append(time.perf_counter() - start)
    run = statistics.median(times)
    return dict(first_s=first, compile_s=max(first - run, 0.0), grad_ms=1000 * run, log_density=float(value),
                finite=bool(np.isfinite(float(value)) and all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))))


def nuts_stage(problem, chains: int, warmup: int, samples: int, max_tree_depth: int, seed: int) -> dict:
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_value

    from pkpd.infer import sharding

    model = sharding.numpyro_model(problem)
    subjects = sharding.subject_arrays(problem)
    kernel = NUTS(model, max_tree_depth=max_tree_depth, init_strategy=init_to_value(values=problem.initial_values()))
    method = "vectorized" if chains > 1 else "sequential"
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method=method,
                progress_bar=False, jit_model_args=True)
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    mcmc.warmup(key, subjects, extra_fields=("num_steps",), collect_warmup=True)
    jax.block_until_ready(mcmc.post_warmup_state)
    warm_s = time.perf_counter() - start
    warm_steps = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    # Sampling twice from the adapted state: the first run compiles the sampling program
    # (NumPyro compiles each phase's loop), the second is timed warm.
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, subjects, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(mcmc.get_samples())
        runs.append(time.perf_counter() - start)
        mcmc.post_warmup_state = mcmc.last_state
    sample_s = runs[1]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    steps = int(np.asarray(extra["num_steps"]).sum())
    post = mcmc.get_samples(group_by_chain=True)
    ess = [float(az.ess(np.asarray(post[f"log_tv_{p}"]), method="bulk")) for p in PARAMS]
    return dict(chains=chains, chain_method=method, warmup=warmup, samples=samples, warmup_s=warm_s,
                sample_first_s=runs[0], sample_s=sample_s, warmup_steps=warm_steps, sample_steps=steps,
                grads_per_s=steps / sample_s, steps_per_draw=steps / (chains * samples),
                divergences=int(np.asarray(extra["diverging"]).sum()), ess_min=min(ess),
                ess_median=float(np.median(ess)), ess_min_per_s=min(ess) / sample_s,
                ess_median_per_s=float(np.median(ess)) / sample_s)


def forecast_stage(n: int, seed: int) -> dict:
    import pkpd

    model = pkpd.load_model(CARD)
    df = design(n, forecast=True)
    out = {}
    for label in ("first_s", "warm_s"):
        start = time.perf_counter()
        sim = pkpd.simulate(model, df, seed=seed)
        out[label] = time.perf_counter() - start
    anc = sim[sim["EVID"] == 0].groupby("ID")["IPRED"].min().to_numpy()
    out.update(patients=n, points=int((sim["EVID"] == 0).sum()), nadir_median=float(np.median(anc)),
               nadir_p05=float(np.quantile(anc, 0.05)), nadir_p95=float(np.quantile(anc, 0.95)),
               p_grade4=float(np.mean(anc < 0.5)), finite=bool(np.all(np.isfinite(anc))))
    return out


_PROBLEMS: dict = {}


def run_task(task: dict) -> dict:
    """One stage: {"kind": "size"|"chains"|"forecast", ...} -> figures (with peak memory)."""
    import jax

    import pkpd

    pkpd.enable_x64()
    if task.get("cache"):
        pkpd.enable_compilation_cache(task["cache"])
    out = dict(task)
    if task["kind"] == "forecast":
        out.update(forecast_stage(task["n"], task["seed"]))
    else:
        key = (task["n"], task["solver"], task["devices"])
        if key not in _PROBLEMS:  # in one process (--in-process), stages of the same size share the problem
            _PROBLEMS[key] = build_problem(*key)
        problem, setup_s = _PROBLEMS[key]
        out.update(setup_s=setup_s, n_sub=int(problem.n_sub), n_obs=int(problem.n_obs), solver=problem.solver.solver)
        if task["kind"] == "size":
            out.update(gradient_stage(problem, task["reps"]))
            out["rss_grad_mb"] = peak_rss_mb()
        out["nuts"] = [nuts_stage(problem, c, task["warmup"], task["samples"], task["max_tree_depth"], task["seed"])
                       for c in task.get("nuts_chains", [])]
    out["rss_mb"] = peak_rss_mb()
    out["device_peak_mb"] = device_peak_mb()
    out["backend"] = jax.default_backend()
    return out


def run_child(task: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        return dict(task, error=(proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1][:300])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[12, 100, 1000, 10000])
    parser.add_argument("--nuts-subjects", type=int, nargs="*", default=[12, 100],
                        help="sizes (of --subjects) also sampled with one NUTS chain")
    parser.add_argument("--chains", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--chain-subjects", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--chain-warmup", type=int, help="warm-up of the chain stage (default --warmup)")
    parser.add_argument("--chain-samples", type=int, help="draws of the chain stage (default --samples)")
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--forecast", type=int, default=10000, help="virtual patients of the forecast (0: skip)")
    parser.add_argument("--reps", type=int, default=5, help="warm gradient calls (median)")
    parser.add_argument("--solver", default="rk4-grid", choices=["rk4-grid", "tsit5"])
    parser.add_argument("--devices", type=int, help="shard subjects across this many devices")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="all stages in this process (memory: cumulative)")
    parser.add_argument("--smoke", action="store_true", help="CI-sized settings, in one process")
    parser.add_argument("--cache", help="JAX persistent compilation cache folder (compile figures are then cache "
                        "loads where it holds the program)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.devices and args.devices > 1:  # CPU host devices (ignored by other platforms); set before importing jax
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    if args.child:
        print(json.dumps(run_task(json.loads(args.child))))
        return
    if args.smoke:
        args.subjects, args.nuts_subjects, args.chains, args.chain_subjects = [12, 50], [], [2], 12
        args.warmup = args.samples = 10
        args.max_tree_depth, args.forecast, args.reps, args.in_process = 3, 200, 2, True

    import jax
    import numpyro

    import pkpd

    if args.devices and len(jax.devices()) < args.devices:
        raise SystemExit(f"--devices {args.devices}: only {len(jax.devices())} device(s) visible ({jax.devices()})")
    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, Python "
          f"{platform.python_version()}; backend {jax.default_backend()}, devices {jax.devices()} "
          f"({jax.devices()[0].device_kind}); {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# card {CARD}, benchmark design (39 PK + 29 ANC per subject), solver {args.solver}, float64; "
          f"sharded over {args.devices or 1} device(s); "
          + ("stages in one process (peak RSS cumulative)" if args.in_process else "one process per stage")
          + (f"; compilation cache {args.cache}" if args.cache else "; no compilation cache"),
          flush=True)

    common = dict(cache=args.cache, solver=args.solver, devices=args.devices, seed=args.seed, max_tree_depth=args.max_tree_depth)
    tasks = [dict(common, kind="size", n=n, reps=args.reps, warmup=args.warmup, samples=args.samples,
                  nuts_chains=[1] if n in args.nuts_subjects else []) for n in args.subjects]
    if args.chains:
        tasks.append(dict(common, kind="chains", n=args.chain_subjects, nuts_chains=list(args.chains),
                          warmup=args.chain_warmup or args.warmup, samples=args.chain_samples or args.samples))
    if args.forecast:
        tasks.append(dict(common, kind="forecast", n=args.forecast))
    env = dict(os.environ)
    results = []
    for task in tasks:
        start = time.perf_counter()
        res = run_task(task) if args.in_process else run_child(task, env)
        res["stage_wall_s"] = time.perf_counter() - start
        results.append(res)
        if "error" in res:
            print(f"# {task['kind']} n={task['n']}: FAILED: {res['error']}", flush=True)
        else:
            print(f"# {task['kind']} n={task['n']} done in {res['stage_wall_s']:.0f} s", flush=True)

    print("\n(a) log density + gradient, and (d) memory")
    print(f"{'subjects':>9} {'padded':>7} {'obs':>8} {'setup s':>8} {'compile s':>9} {'ms/grad':>10} "
          f"{'ms/grad/subj':>12} {'peak RSS MB':>11} {'dev peak MB':>11}")
    for r in results:
        if r["kind"] == "size" and "error" not in r:
            print(f"{r['n']:>9} {r['n_sub']:>7} {r['n_obs']:>8} {r['setup_s']:>8.1f} {r['compile_s']:>9.1f} "
                  f"{r['grad_ms']:>10.2f} {r['grad_ms'] / r['n']:>12.4f} {r['rss_grad_mb']:>11.0f} "
                  f"{fmt(r['device_peak_mb'], '.0f'):>11}")
    print("\n(b) NUTS (warm-up + draws per chain; warm-up s and 1st smp s include compilation; sample s: a second, "
          "warm run of the draws, which grads/s, steps/draw, divergences and ESS (bulk, nine log typical values) "
          "describe)")
    print(f"{'subjects':>9} {'chains':>6} {'method':>10} {'iters':>9} {'warmup s':>9} {'1st smp s':>9} {'sample s':>9} "
          f"{'grads/s':>9} {'steps/draw':>10} {'div':>4} {'ESS min':>8} {'ESS med':>8} {'ESS/s min':>9} "
          f"{'ESS/s med':>9} {'peak RSS MB':>11}")
    for r in results:
        for s in r.get("nuts", []) if "error" not in r else []:
            print(f"{r['n']:>9} {s['chains']:>6} {s['chain_method']:>10} {s['warmup']:>4}+{s['samples']:<4} "
                  f"{s['warmup_s']:>9.1f} {s['sample_first_s']:>9.1f} {s['sample_s']:>9.1f} {s['grads_per_s']:>9.1f} {s['steps_per_draw']:>10.1f} "
                  f"{s['divergences']:>4} {s['ess_min']:>8.1f} {s['ess_median']:>8.1f} {s['ess_min_per_s']:>9.3f} "
                  f"{s['ess_median_per_s']:>9.3f} {r['rss_mb']:>11.0f}")
    for r in results:
        if r["kind"] == "forecast" and "error" not in r:
            print(f"\n(c) population forecast: {r['patients']} patients x {r['points'] // r['patients']} ANC points "
                  f"(80 mg daily x 7, 28 days, card IIV + residual): first call {r['first_s']:.1f} s, warm "
                  f"{r['warm_s']:.1f} s ({r['patients'] / r['warm_s']:.0f} patients/s); nadir median "
                  f"{r['nadir_median']:.3g} (5-95% {r['nadir_p05']:.3g}-{r['nadir_p95']:.3g}), P(ANC < 0.5) "
                  f"{r['p_grade4']:.3f}; peak RSS {r['rss_mb']:.0f} MB, device peak {fmt(r['device_peak_mb'], '.0f')} MB")
    failed = [r for r in results if "error" in r]
    if failed:
        raise SystemExit(f"{len(failed)} stage(s) failed")


if __name__ == "__main__":
    main()
