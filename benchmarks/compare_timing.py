"""Warm and cold timing of the README what-if comparison (docetaxel with vs without pegfilgrastim).

Run from the checkout: ``python benchmarks/compare_timing.py``. Prints the wall time of two calls of
``pkpd.forecast`` in one process (the first compiles) with the inference / trajectory split, and the
comparison table. Figures are recorded in benchmarks/README.md.
"""

import time

import pkpd

REGIMENS = ["docetaxel 100 mg/m2 1h @504h", "docetaxel 100 mg/m2 1h @504h; pegfilgrastim 6 mg sc @528h"]


def main():
    pkpd.enable_x64()
    patient = pkpd.read_dataset("data/example.csv").subset([8]).until(7 * 24)
    for k in range(2):
        t0 = time.perf_counter()
        fc = pkpd.forecast("kloft2006_docetaxel_filgrastim", patient, REGIMENS, covariates={"WT": 70},
                           method="laplace", seed=k)
        d = fc.diagnostics
        print(f"call {k + 1}: {time.perf_counter() - t0:.1f} s (inference {d['inference_s']:.2f} s, "
              f"trajectories {d['trajectory_s']:.2f} s)")
    from pkpd.forecasting.compare import compare

    print(compare(fc).text())


if __name__ == "__main__":
    main()
