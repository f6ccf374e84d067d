"""Time a single-patient forecast (one cycle) with and without compilation.

    python benchmarks/forecast_timing.py [--method nuts|laplace] [--calls 7] [--cache DIR]

Patient 8 of ``data/example.csv``: its doses and its first week of ANC, the Kloft 2006
card as prior, 500 draws, horizon 21 days. The first call compiles (or loads the compiled
programs from JAX's persistent cache: run the script twice to see both); the following
calls, with other seeds, are warm.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import pkpd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=("nuts", "laplace"), default="nuts")
    ap.add_argument("--calls", type=int, default=7)
    ap.add_argument("--cache", help="persistent compilation cache folder (default: pkpd's)")
    args = ap.parse_args()
    pkpd.enable_x64()
    print(f"# compilation cache: {pkpd.enable_compilation_cache(args.cache)}")
    df = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "example.csv", na_values=".")
    patient = pkpd.read_dataset(df[(df["ID"] == 8) & ((df["TIME"] <= 168) | (df["EVID"] == 1))])
    times = []
    for seed in range(args.calls):
        start = time.perf_counter()
        fc = pkpd.forecast("kloft2006_docetaxel", patient, method=args.method, seed=seed)
        times.append(time.perf_counter() - start)
        d = fc.diagnostics
        print(f"call {seed} ({'first' if seed == 0 else 'warm'}): {times[-1]:.2f} s; mean steps "
              f"{d['mean_steps'][0]:.1f}, divergences {d['divergences'][0]}", flush=True)
    warm = sorted(times[1:])
    if warm:
        print(f"# {args.method}: first call {times[0]:.1f} s; warm median {warm[len(warm) // 2]:.2f} s "
              f"(range {warm[0]:.2f}-{warm[-1]:.2f} s)")


if __name__ == "__main__":
    main()
