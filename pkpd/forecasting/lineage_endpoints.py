r"""Lineage-specific forecast endpoints: depth and duration of cytopenia, transfusion
thresholds by day, engraftment, and the ESA label's haemoglobin rules.

:func:`lineage_endpoints` adds to a forecast entry (one patient x regimen x lineage, see
:func:`pkpd.forecasting.endpoints.patient_summary`) what the lineage table
(:data:`pkpd.forecasting.lineage.LINEAGES`) makes meaningful for that lineage:

``time_below_h``
    time (h) below each grade bound of grade 3 and above in the window ``t >= after``
    (ANC 1.0 and 0.5; PLT 50 and 25; HGB 8; WBC 2.0 and 1.0): mean and median over
    draws (:func:`~pkpd.forecasting.endpoints.time_below`).
``p_below_by_day``
    lineages with transfusion thresholds (PLT 10 and 20; HGB 7 and 8): the probability
    that the count is below each threshold on each day of the window,
    :math:`P(y(a + 24k) < r)`, with the times ``time_h``.
``engraftment_day``
    lineages with an engraftment definition (ANC: 3 days >= 0.5; PLT: 3 days >= 20
    without platelet transfusion in the 7 days before; MODELS.md 6.3): the first
    engraftment day (day 0 = time 0 of the data, e.g. the transplant), summarised with
    not-engrafted draws as not reached, and ``p_not_engrafted`` within the grid.
``esa`` (HGB)
    ``time_to_h``: hours from the cycle start to Hb >= 10 and >= 11 (0 when already
    there; not reached as null with ``p_not_reached``); ``p_rise_gt_1_in_2w``: the
    probability of a rise of more than 1 g/dL within any 14 days of the window;
    ``p_above_12``: the probability that Hb exceeds 12 g/dL at any time of the window.
    These are the quantities the ESA labels act on (epoetin alfa / darbepoetin alfa
    prescribing information, chemotherapy-induced anaemia: reduce the dose by 25% when
    Hb rises by more than 1 g/dL in any 2-week period; withhold when Hb exceeds the
    level needed to avoid transfusion; 12 g/dL is the upper target the issue fixes).
"""

from __future__ import annotations

import numpy as np

from . import endpoints as ep
from .lineage import get_lineage

__all__ = ["lineage_endpoints", "rise_within", "ESA_RISE_G_DL", "ESA_WINDOW_H", "ESA_UPPER_G_DL",
           "ESA_TARGETS_G_DL"]

#: ESA label rules (g/dL, h): a rise of more than 1 g/dL in any 2 weeks; Hb above 12.
ESA_RISE_G_DL, ESA_WINDOW_H, ESA_UPPER_G_DL = 1.0, 14 * 24.0, 12.0
#: Haemoglobin levels whose time of reaching is reported after an ESA start (g/dL).
ESA_TARGETS_G_DL = (10.0, 11.0)


def _key(x) -> str:
    return repr(float(x))


def rise_within(t, y, window_h, start=None, step_h=12.0):
    """Largest rise within any ``window_h`` of trajectories ``y [..., T]`` on the grid ``t``
    (h): ``max over start <= s < u <= s + window_h of y(u) - y(s)``, at least 0.

    Evaluated on the trajectory sampled every ``step_h`` hours from ``start`` (linear
    interpolation; 12 h resolves haemoglobin, which changes over days), over every pair
    of samples at most ``window_h`` apart.
    """
    t, y = ep._grid(t, y)
    s0 = t[0] if start is None else max(float(start), float(t[0]))
    times = np.arange(s0, t[-1] + 1e-9, float(step_h))
    best = np.zeros(y.shape[:-1])
    if times.size < 2:
        return best
    v = ep._sample(t, y, times)
    for k in range(1, min(int(round(window_h / step_h)), times.size - 1) + 1):
        best = np.maximum(best, np.max(v[..., k:] - v[..., :-k], axis=-1))
    return best


def lineage_endpoints(t, draws, lineage, *, after=0.0, interval=0.9, transfusions=None) -> dict:
    """The lineage-specific entries of a forecast (module docstring) for trajectory draws
    ``[n_draws, T]`` on the hourly grid ``t`` with the cycle starting at ``after`` (h);
    ``transfusions``: times (h) of this lineage's transfusions in the plan."""
    t, y = ep._grid(t, draws)
    spec = get_lineage(lineage)
    start = max(float(after), float(t[0]))
    out = {}
    below = {}
    bounds = [bound for grade, bound in spec.grade_bounds if grade >= 3]
    if bounds:
        durations = ep.time_below(t, y, np.asarray(bounds, dtype=float)[:, None], start=start)  # [bounds, draws]
        for bound, dur in zip(bounds, durations):
            below[_key(bound)] = {"mean": float(np.nanmean(dur)), "median": float(np.nanmedian(dur))}
    out["time_below_h"] = below
    if spec.transfusion:
        times = np.arange(start, t[-1] + 1e-9, 24.0)
        values = ep._sample(t, y, times)
        daily = {"time_h": [float(v) for v in times]}
        for r in spec.transfusion:
            daily[_key(r)] = [float(v) for v in np.mean(values < r, axis=0)]
        out["p_below_by_day"] = daily
    if spec.engraftment is not None:
        day = ep.engraftment_day(t, y, lineage=lineage, transfusions=transfusions if transfusions else None)
        s = ep.summarise(day, interval=interval)
        out["engraftment_day"] = {"median": s["median"], "lo": s["lo"], "hi": s["hi"],
                                  "p_not_engrafted": s["p_not_reached"]}
    if spec.name == "HGB":
        time_to = {}
        for level in ESA_TARGETS_G_DL:
            reach = ep.recovery_time(t, y, level, after_nadir=False, after=start) - start
            s = ep.summarise(reach, interval=interval)
            time_to[_key(level)] = {"median": s["median"], "lo": s["lo"], "hi": s["hi"],
                                    "p_not_reached": s["p_not_reached"]}
        window = t >= start
        out["esa"] = {
            "time_to_h": time_to,
            "p_rise_gt_1_in_2w": float(np.mean(rise_within(t, y, ESA_WINDOW_H, start=start) > ESA_RISE_G_DL)),
            "p_above_12": float(np.mean(np.any(y[:, window] > ESA_UPPER_G_DL, axis=-1))),
        }
    return out
