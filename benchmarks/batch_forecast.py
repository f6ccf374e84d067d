"""Batch forecasts: a ward of patients forecast in one call (issue "Throughput", deliverable 5).

    python benchmarks/batch_forecast.py [--patients 40] [--method nuts laplace] [--calls 2] [--devices N]
                                        [--single-only]

Virtual patients from the Kloft 2006 card (its IIV and residual error; docetaxel 100 mg/m2 1 h at
time 0; BSA 1.8) with a week of daily ANC (days 0-7), forecast together by ``pkpd.forecast`` (500
draws, 21-day horizon, the card as prior), then one of them alone. Prints the wall time of each call
(the first compiles), split into inference and trajectories. ``--devices N`` makes JAX expose N CPU host
devices (``--xla_force_host_platform_device_count``, as ``pkpd forecast`` does with one per core; default:
JAX's own, one): the patients' inference and the trajectory draws are then split across them, and a
patient alone gets one NUTS chain per device sharing its draws. ``--single-only``: the one patient only.
Figures in benchmarks/README.md.
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
    one = ward.subset([ward.ids[0]])
    for method in args.method:
        cases = [(f"{args.patients} patients", ward), ("1 patient", one)]
        for label, data in cases[1:] if args.single_only else cases:
            for k in range(args.calls):
                t0 = time.perf_counter()
                fc = pkpd.forecast(CARD, data, method=method, seed=k)
                wall = time.perf_counter() - t0
                d = fc.diagnostics
                extra = ""
                if method == "nuts":
                    extra = (f"; mean leapfrog steps {np.mean(d['mean_steps']):.1f}, divergences "
                             f"{int(np.sum(d['divergences']))}, chains per patient {d['chains']}")
                    if d["r_hat"] is not None:
                        extra += f", largest R-hat {max(d['r_hat']):.3f}"
                print(f"{method:8s} {label:12s} call {k + 1}: {wall:6.1f} s (inference {d['inference_s']:.1f} s, "
                      f"trajectories {d['trajectory_s']:.1f} s){extra}", flush=True)


if __name__ == "__main__":
    main()
