"""Simulation throughput: one 21-day cycle of the Kloft 2006 docetaxel model, hourly output.

    python benchmarks/simulate.py [--subjects 1000 10000] [--repeats 3]

For each population size: draws individual parameters from the card's IIV (typical
covariates), solves the PD ODE for every subject in one jitted, vmapped call, and
reports compile time (first call minus a warm call) separately from run time,
subjects per second (warm) and the solver steps taken per subject.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import pandas as pd

    import pkpd
    from pkpd.dosing.events import evaluation_keys
    from pkpd.solve.solver import predict_outputs

    pkpd.enable_x64()
    model = pkpd.load_model("kloft2006_docetaxel")
    cov = {"BSA": 1.8, "SEX": 1, "PERF": 0, "PC": 0, "AAG": 1.34}
    times = np.arange(0.0, 21 * 24 + 1, 1.0)
    # One subject's design, replicated: the per-subject arrays are identical in shape.
    design = pkpd.simulate(model, "100 mg/m2 1h", times=times, covariates=cov, iiv=False, residual=False)
    dynamics = model.dynamics_for(design)

    print(f"# pkpd {pkpd.__version__}, jax {jax.__version__}, device {jax.devices()[0].device_kind}, "
          f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'subjects':>9} {'compile s':>10} {'run s':>8} {'subjects/s':>11} {'steps/subject':>14} {'failed':>7}")
    rng = np.random.default_rng(1)
    for n in args.subjects:
        df = pd.concat([design.assign(ID=i + 1) for i in range(n)], ignore_index=True)
        ids = list(range(1, n + 1))
        dynamics, data = model.prepare(df, ids, n_subjects=n)
        rows = np.flatnonzero(df["EVID"].to_numpy() == 0)
        t, order, _, _ = evaluation_keys(df, rows, ids, n_subjects=n)
        eta = {k: rng.normal(0, s.omega, n) for k, s in model.parameters.items() if s.omega > 0}
        covs = {k: np.full(n, float(v)) for k, v in cov.items()}
        theta = {k: jnp.asarray(v) for k, v in model.individual_parameters(covs, eta, n=n).items()}
        t, order = jnp.asarray(t), jnp.asarray(order)

        start = time.perf_counter()
        out, ok, steps = predict_outputs(dynamics, data, theta, t, order)
        jax.block_until_ready(out)
        first = time.perf_counter() - start
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out, ok, steps = predict_outputs(dynamics, data, theta, t, order)
            jax.block_until_ready(out)
            runs.append(time.perf_counter() - start)
        run = min(runs)
        print(f"{n:>9} {first - run:>10.2f} {run:>8.2f} {n / run:>11.0f} {float(np.mean(steps)):>14.1f} "
              f"{int((~np.asarray(ok)).sum()):>7}")


if __name__ == "__main__":
    main()
