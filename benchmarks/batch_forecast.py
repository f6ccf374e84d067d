"""Batch forecasts: a ward of patients forecast in one call (issue "Throughput", deliverable 5).

    python benchmarks/batch_forecast.py [--patients 40] [--method nuts laplace] [--calls 2] [--devices N]
                                        [--single-only] [--single 0 1 2 3] [--warmup W]

Virtual patients from the Kloft 2006 card (its IIV and residual error; docetaxel 100 mg/m2 1 h at
time 0; BSA 1.8) with a week of daily ANC (days 0-7), forecast together by ``pkpd.forecast`` (500
draws, 21-day horizon, the card as prior), then one of them alone. Prints the wall time of each call
(the first compiles), split into inference and trajectories. ``--devices N`` makes JAX expose N CPU host
devices (``--xla_force_host_platform_device_count``, as ``pkpd forecast`` does with one per core; default:
JAX's own, one): the patients' inference and the trajectory draws are then split across them, and a
patient alone gets one NUTS chain per device sharing its draws. ``--single-only``: the one patient only.
``--single``: which patients of the ward are forecast alone (default: the first), each ``--calls``
times with seeds 0, 1, ...; with NUTS and several chains per patient, the bulk and tail effective
sample sizes (ArviZ, over the chains; the smallest over the random effects) are printed, and a
summary over the warm calls (each method's first one-patient call compiles and is left out). ``--warmup``:
NUTS warm-up iterations (default: ``pkpd.forecast``'s). Figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CARD = "kloft2006_docetaxel"
COV = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--method", nargs="+", default=["laplace", "nuts"], choices=("laplace", "nuts"))
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--devices", type=int, help="CPU host devices (set before JAX starts)")
    ap.add_argument("--single-only", action="store_true", help="forecast the one patient only, not the ward")
    ap.add_argument("--single", type=int, nargs="+", default=[0], help="ward patients forecast alone")
    ap.add_argument("--warmup", type=int, help="NUTS warm-up iterations (default: pkpd.forecast's)")
    args = ap.parse_args()
    if args.devices is not None:
        if args.devices < 1:
            ap.error(f"--devices must be at least 1, got {args.devices}")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax

    import pkpd

    pkpd.enable_x64()
    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, {len(jax.devices())} {jax.default_backend()} "
          f"device(s), {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}", flush=True)
    sim = pkpd.simulate(CARD, "100 mg/m2 1h", args.patients, seed=20261130, times=np.arange(0.0, 8 * 24, 24.0),
                        covariates=COV)
    ward = pkpd.read_dataset(sim.drop(columns=["IPRED"]))
    settings = {} if args.warmup is None else {"warmup": args.warmup}
    for method in args.method:
        seen_single = False  # the method's first one-patient call compiles: left out of the summary
        cases = [] if args.single_only else [(f"{args.patients} patients", ward)]
        cases += [(f"patient {i}", ward.subset([ward.ids[i]])) for i in args.single]
        warm = []
        for label, data in cases:
            for k in range(args.calls):
                t0 = time.perf_counter()
                fc = pkpd.forecast(CARD, data, method=method, seed=k, **settings)
                wall = time.perf_counter() - t0
                d = fc.diagnostics
                extra = ""
                if method == "nuts":
                    extra = (f"; mean leapfrog steps {np.mean(d['mean_steps']):.1f}, step size "
                             f"{np.mean(d['step_size']):.3f}, divergences {int(np.sum(d['divergences']))}, "
                             f"chains per patient {d['chains']}")
                    if d["r_hat"] is not None:
                        extra += f", largest R-hat {max(d['r_hat']):.3f}"
                    if data.n_subjects == 1 and d["chains"] > 1:
                        bulk, tail = _ess(fc, d["chains"])
                        extra += f", ESS bulk {bulk:.0f} tail {tail:.0f}"
                        if seen_single:
                            warm.append((wall, d["inference_s"], bulk, tail))
                seen_single = seen_single or data.n_subjects == 1
                print(f"{method:8s} {label:12s} call {k + 1}: {wall:6.1f} s (inference {d['inference_s']:.1f} s, "
                      f"trajectories {d['trajectory_s']:.1f} s){extra}", flush=True)
        if warm:
            w = np.array(warm)
            print(f"{method:8s} alone, {len(w)} warm calls: wall median {np.median(w[:, 0]):.2f} s, inference median "
                  f"{np.median(w[:, 1]):.2f} s; ESS bulk median {np.median(w[:, 2]):.0f} (smallest {w[:, 2].min():.0f}), "
                  f"tail median {np.median(w[:, 3]):.0f} (smallest {w[:, 3].min():.0f}); bulk ESS per inference-second "
                  f"median {np.median(w[:, 2] / w[:, 1]):.0f}", flush=True)


def _ess(fc, chains: int) -> tuple[float, float]:
    """Bulk and tail ESS of a one-patient forecast's random effects over its chains (the smallest)."""
    import arviz as az

    z = fc.draws[[c for c in fc.draws.columns if c.startswith("z_")]].to_numpy()
    z = z.reshape(chains, -1, z.shape[-1])  # chain-major (pkpd.forecasting.inference.per_patient_draws)
    bulk = min(float(az.ess(z[:, :, j], method="bulk")) for j in range(z.shape[-1]))
    tail = min(float(az.ess(z[:, :, j], method="tail")) for j in range(z.shape[-1]))
    return bulk, tail


if __name__ == "__main__":
    main()
