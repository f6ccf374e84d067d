"""Clinical endpoints of blood-count trajectories: CTCAE grade, nadir, crossings, recovery.

All functions take a time grid ``t`` of shape ``[T]`` (strictly increasing, hours unless
stated) and trajectories ``y`` of shape ``[..., T]`` (any number of leading axes, e.g.
draws × patients × regimens) and return arrays over the leading axes. Between grid
points a trajectory is taken to be *linear* (crossing times and durations are
interpolated), which is exact for piecewise-linear inputs and second-order accurate
for smooth ones.

Definitions and sources
-----------------------
* **CTCAE v5.0** (NCI, 2017) grades of "neutrophil count decreased", "platelet count
  decreased", "white blood cell decreased" and "anemia": grade *g* is assigned when the
  value is strictly below the grade's lower bound (``"<0.5"`` is grade 4 for ANC, so
  ANC = 0.5 is grade 3). Grade 1 is "<LLN", with the lower limit of normal supplied per
  laboratory. Anaemia grade 4 ("life-threatening; urgent intervention") is clinical and
  is never assigned from a haemoglobin value.
* **Cycle-level variables** as coded in DDMoRe model DDMODEL00000224 (Netterberg I et al.
  Cancer Chemother Pharmacol 2017;80:343): nadir = minimum after the dose (the code
  searches after 72 h); duration of grade-4 neutropenia = time with ANC < 0.5 ×10^9/L;
  time to grade 0 = first time ANC >= 2.0 while rising; time to return to baseline =
  first time ANC > BASE after the nadir.
* **Engraftment** (ASTCT consensus, Kharfan-Dabaja MA et al. Transplant Cell Ther 2021,
  as tabulated in Bone Marrow Transplant 2024;59:832): neutrophils, the first of 3
  successive days with ANC >= 0.5 ×10^9/L after the post-transplant nadir; platelets,
  the first of 3 successive days with PLT >= 20 ×10^9/L without a platelet transfusion
  in the 7 days before.

The lineage-specific numbers (grade bounds, thresholds, engraftment definitions) come
from the lineage table :data:`pkpd.forecasting.lineage.LINEAGES`. See ``MODELS.md`` §6
and validation case §9 item 7.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from ..errors import PkpdError
from .lineage import LINEAGES, get_lineage

__all__ = [
    "CTCAE_THRESHOLDS",
    "grade_thresholds",
    "ctcae_grade",
    "nadir",
    "first_crossing",
    "time_below",
    "recovery_time",
    "engraftment_day",
    "interpolate_at",
    "probability",
    "summarise",
    "grade_probability",
    "patient_summary",
    "PATIENT_SUMMARY_KEYS",
]

#: CTCAE v5.0 lower bounds per lineage: ``{grade: bound}``; a value strictly below the
#: bound of grade *g* is at least grade *g*. Grade 1 is the lower limit of normal (LLN),
#: here a typical default that should be replaced by the laboratory's (``lln=``).
#: Units: ×10^9/L for ANC, PLT and WBC; g/dL for HGB (no grade 4: it is clinical).
#: A read-only view of the lineage table (:data:`pkpd.forecasting.lineage.LINEAGES`).
CTCAE_THRESHOLDS: Mapping[str, Mapping[int, float]] = MappingProxyType(
    {name: lin.grades for name, lin in LINEAGES.items()}
)


# ----------------------------------------------------------------------------- helpers
def _grid(t, y):
    """Validate and convert a grid ``t`` [T] and trajectories ``y`` [..., T]."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.ndim != 1 or t.size < 2:
        raise PkpdError(f"time grid must be 1-D with at least 2 points, got shape {t.shape}")
    if not np.all(np.diff(t) > 0):
        raise PkpdError("time grid must be strictly increasing")
    if y.ndim < 1 or y.shape[-1] != t.size:
        raise PkpdError(f"trajectories must have shape [..., {t.size}] to match the grid, got {y.shape}")
    return t, y


def _window_start(t, after):
    """Broadcastable lower bound of a search window; a scalar beyond the grid is an error."""
    a = np.asarray(-np.inf if after is None else after, dtype=float)
    if a.ndim == 0 and a > t[-1]:
        raise PkpdError(f"search window starts at {float(a)}, after the end of the grid ({t[-1]})")
    return a


def grade_thresholds(lineage="ANC", lln=None, thresholds=None) -> dict[int, float]:
    """Lower bounds ``{grade: bound}`` used for grading one lineage.

    Parameters
    ----------
    lineage : str
        ``"ANC"``, ``"PLT"``, ``"WBC"`` or ``"HGB"`` (case-insensitive); any other name
        requires ``thresholds``.
    lln : float, optional
        Lower limit of normal, the grade-1 bound (overrides ``thresholds[1]``).
    thresholds : mapping of int to float, optional
        Bounds merged over the CTCAE v5 defaults of the lineage table
        (:data:`CTCAE_THRESHOLDS`, :data:`pkpd.forecasting.lineage.LINEAGES`).

    Returns
    -------
    dict
        ``{grade: bound}`` for the grades that are assigned from a value.
    """
    key = str(lineage).upper()
    base = dict(LINEAGES[key].grade_bounds) if key in LINEAGES else {}
    if thresholds is not None:
        base.update({int(g): float(v) for g, v in thresholds.items()})
    if lln is not None:
        base[1] = float(lln)
    if not base:
        raise PkpdError(f"no CTCAE thresholds for lineage {lineage!r}; pass thresholds={{grade: bound}}")
    bad = [g for g in base if not 1 <= g <= 4]
    if bad:
        raise PkpdError(f"CTCAE grades must be 1..4, got {sorted(bad)}")
    return dict(sorted(base.items()))


# ----------------------------------------------------------------------------- grading
def ctcae_grade(value, lineage="ANC", lln=None, thresholds=None) -> np.ndarray:
    """CTCAE v5.0 grade (0-4) of laboratory values.

    The grade is the highest *g* whose lower bound the value is strictly below
    (``"<0.5"`` is ANC grade 4, so ANC 0.5 is grade 3). Taking the highest grade rather
    than counting bounds keeps the result right when the LLN is below the grade-2 bound.

    Parameters
    ----------
    value : array_like
        Counts (×10^9/L) or haemoglobin (g/dL), any shape.
    lineage, lln, thresholds
        See :func:`grade_thresholds`. Defaults: ANC LLN 2.0, PLT 150, WBC 4.0, HGB 12.0.

    Returns
    -------
    numpy.ndarray of int
        Grades, same shape as ``value``; ``-1`` where the value is NaN.

    References
    ----------
    NCI Common Terminology Criteria for Adverse Events v5.0 (2017); MODELS.md §6.1.
    """
    v = np.asarray(value, dtype=float)
    grade = np.zeros(v.shape, dtype=int)
    for g, bound in grade_thresholds(lineage, lln, thresholds).items():
        grade = np.maximum(grade, np.where(v < bound, g, 0))
    return np.where(np.isnan(v), -1, grade)


# ----------------------------------------------------------------------------- nadir
def _nadir_index(t, y, after):
    """Index of the first minimum with ``t >= after`` and whether the window had data."""
    a = _window_start(t, after)
    mask = np.broadcast_to(t >= a[..., None], np.broadcast_shapes(y.shape, a.shape + (1,)))
    yy = np.broadcast_to(y, mask.shape)
    z = np.where(mask & ~np.isnan(yy), yy, np.inf)
    idx = np.argmin(z, axis=-1)
    valid = np.take_along_axis(mask & ~np.isnan(yy), idx[..., None], axis=-1)[..., 0]
    return idx, valid, mask, yy


def nadir(t, y, after=0.0, refine=True):
    """Nadir (minimum) of trajectories and its time.

    Parameters
    ----------
    t : array_like, shape [T]
        Time grid (h).
    y : array_like, shape [..., T]
        Trajectories.
    after : float or array_like
        Only times ``t >= after`` are searched (DDMODEL00000224 uses minima after 72 h);
        an array broadcasts over the leading axes.
    refine : bool
        Refine the *time* by the vertex of the parabola through the grid minimum and its
        two neighbours (when both neighbours are inside the window; on a non-uniform grid
        too). The vertex lies between the neighbouring midpoints and is exact for a
        quadratic trajectory. The *value* returned is the grid minimum (not the vertex
        value), so it agrees with grades and durations computed on the same grid.

    Returns
    -------
    value, time : numpy.ndarray
        Arrays over the leading axes; NaN where the window holds no finite value. Ties
        resolve to the first minimum.
    """
    t, y = _grid(t, y)
    idx, valid, mask, yy = _nadir_index(t, y, after)
    value = np.where(valid, np.take_along_axis(yy, idx[..., None], -1)[..., 0], np.nan)
    time = np.where(valid, t[idx], np.nan)
    if refine:
        T = t.size
        im, ip = np.clip(idx - 1, 0, T - 1), np.clip(idx + 1, 0, T - 1)
        y0 = np.take_along_axis(yy, im[..., None], -1)[..., 0]
        y1 = np.take_along_axis(yy, idx[..., None], -1)[..., 0]
        y2 = np.take_along_axis(yy, ip[..., None], -1)[..., 0]
        inside = np.take_along_axis(mask, im[..., None], -1)[..., 0]
        interior = valid & (idx > 0) & (idx < T - 1) & inside & np.isfinite(y0) & np.isfinite(y2)
        t0, t1, t2 = t[im], t[idx], t[ip]
        with np.errstate(divide="ignore", invalid="ignore"):
            s1 = (y1 - y0) / (t1 - t0)  # slope at the left midpoint (<= 0)
            s2 = (y2 - y1) / (t2 - t1)  # slope at the right midpoint (>= 0)
            m1, m2 = 0.5 * (t0 + t1), 0.5 * (t1 + t2)
            vertex = m1 - s1 * (m2 - m1) / (s2 - s1)
        ok = interior & (s2 - s1 > 0) & np.isfinite(vertex)
        time = np.where(ok, vertex, time)
    return value, time


# ----------------------------------------------------------------------------- crossings
def first_crossing(t, y, threshold, direction="down", after=None, start=None):
    """First time a trajectory crosses a threshold, interpolated linearly.

    A *down* crossing goes from ``y >= threshold`` to ``y < threshold`` between two grid
    points, an *up* crossing from ``y < threshold`` to ``y >= threshold``; the time is
    where the straight line between the two points meets the threshold.

    Parameters
    ----------
    t : array_like, shape [T]
        Time grid.
    y : array_like, shape [..., T]
        Trajectories.
    threshold : float or array_like
        Broadcasts over the leading axes.
    direction : {"down", "up"}
    after : float or array_like, optional
        Only crossings at times ``>= after`` count; may be one time per trajectory (e.g.
        the nadir time).
    start : float, optional
        Same as ``after`` (both may be given: the later bound applies).

    Returns
    -------
    numpy.ndarray
        Crossing times over the leading axes; NaN when there is none within the grid. A
        trajectory that is already past the threshold at the window start has not
        crossed there.
    """
    t, y = _grid(t, y)
    if direction not in ("down", "up"):
        raise PkpdError(f"direction must be 'down' or 'up', got {direction!r}")
    lower = np.maximum(_window_start(t, after), _window_start(t, start))
    thr = np.asarray(threshold, dtype=float)[..., None]
    y0, y1 = y[..., :-1], y[..., 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        if direction == "down":
            hit = (y0 >= thr) & (y1 < thr)
            frac = (y0 - thr) / (y0 - y1)
        else:
            hit = (y0 < thr) & (y1 >= thr)
            frac = (thr - y0) / (y1 - y0)
    tau = t[:-1] + np.clip(frac, 0.0, 1.0) * np.diff(t)
    ok = hit & (tau >= lower[..., None])
    first = np.argmax(ok, axis=-1)
    found = np.take_along_axis(ok, first[..., None], -1)[..., 0]
    tau = np.broadcast_to(tau, ok.shape)
    return np.where(found, np.take_along_axis(tau, first[..., None], -1)[..., 0], np.nan)


def time_below(t, y, threshold, start=None, end=None):
    """Total time with ``y < threshold`` (linear interpolation inside grid intervals).

    "Duration of grade 4 neutropenia" (DSN, DDMODEL00000224) is
    ``time_below(t, anc, 0.5)``.

    Parameters
    ----------
    t : array_like, shape [T]
    y : array_like, shape [..., T]
    threshold : float or array_like
        Broadcasts over the leading axes.
    start, end : float, optional
        Restrict to the window ``[start, end]`` (scalars; default the whole grid).

    Returns
    -------
    numpy.ndarray
        Durations in the units of ``t``; NaN if a trajectory has NaN in the window.
    """
    t, y = _grid(t, y)
    a = t[0] if start is None else float(start)
    b = t[-1] if end is None else float(end)
    thr = np.asarray(threshold, dtype=float)[..., None]
    # only the intervals that overlap [a, b] contribute: work on that slice of the grid
    i0 = max(int(np.searchsorted(t, a, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(t, b, side="left")), t.size - 1)
    if i1 <= i0:
        return np.zeros(np.broadcast_shapes(thr.shape[:-1], y.shape[:-1]))
    t, y = t[i0: i1 + 1], y[..., i0: i1 + 1]
    ta, tb = np.maximum(t[:-1], a), np.minimum(t[1:], b)
    h = np.diff(t)
    length = np.where(tb > ta, tb - ta, 0.0)  # [I], the part of each interval inside the window
    lo, hi = np.minimum(y[..., :-1], y[..., 1:]), np.maximum(y[..., :-1], y[..., 1:])
    # Only the first and last intervals can be cut by the window: their values at the cut
    # ends, on the straight line of the interval.
    for k in {0, t.size - 2}:
        if length[k] > 0 and (ta[k] > t[k] or tb[k] < t[k + 1]):
            y0, y1 = y[..., k], y[..., k + 1]
            va, vb = y0 + (ta[k] - t[k]) / h[k] * (y1 - y0), y0 + (tb[k] - t[k]) / h[k] * (y1 - y0)
            lo[..., k], hi[..., k] = np.minimum(va, vb), np.maximum(va, vb)
    # An interval wholly below the threshold counts in full; one it crosses (lo < thr <= hi,
    # so hi > lo), by the fraction of the line below it; the rest not at all.
    full = hi < thr
    dur = np.where(full, length, 0.0).sum(axis=-1)
    cross = (lo < thr) & ~full
    idx = np.nonzero(cross)
    if idx[0].size:
        thr_c, lo_c, hi_c = (np.broadcast_to(v, cross.shape)[idx] for v in (thr, lo, hi))
        part = (thr_c - lo_c) / (hi_c - lo_c) * length[idx[-1]]
        if dur.ndim:
            dur = dur + np.bincount(np.ravel_multi_index(idx[:-1], dur.shape), weights=part,
                                    minlength=dur.size).reshape(dur.shape)
        else:
            dur = dur + part.sum()
    return np.where(np.isnan(lo).any(axis=-1) | np.isnan(hi).any(axis=-1), np.nan, dur)


def interpolate_at(t, y, at):
    """Linear interpolation of trajectories at times inside the grid.

    Parameters
    ----------
    t : array_like, shape [T]
    y : array_like, shape [..., T]
    at : float or array_like
        One time, or one per trajectory (broadcasting over the leading axes).

    Returns
    -------
    numpy.ndarray
        Values over the leading axes.
    """
    t, y = _grid(t, y)
    at = np.asarray(at, dtype=float)
    if np.any(at < t[0]) or np.any(at > t[-1]):
        raise PkpdError(f"interpolation time outside the grid [{t[0]}, {t[-1]}]")
    k = np.clip(np.searchsorted(t, at, side="right") - 1, 0, t.size - 2)
    w = (at - t[k]) / (t[k + 1] - t[k])
    shape = np.broadcast_shapes(y.shape[:-1], at.shape)
    yb = np.broadcast_to(y, shape + (t.size,))
    kb = np.broadcast_to(k, shape)[..., None]
    y0 = np.take_along_axis(yb, kb, -1)[..., 0]
    y1 = np.take_along_axis(yb, kb + 1, -1)[..., 0]
    return y0 + w * (y1 - y0)


def _sample(t, y, times):
    """Values of trajectories ``[..., T]`` at shared times ``[D]`` (inside the grid) → ``[..., D]``."""
    k = np.clip(np.searchsorted(t, times, side="right") - 1, 0, t.size - 2)
    w = (times - t[k]) / (t[k + 1] - t[k])
    return y[..., k] + w * (y[..., k + 1] - y[..., k])


def recovery_time(t, y, threshold, after_nadir=True, after=0.0):
    """Time of recovery to a threshold.

    Definition: the first time ``s' >= s`` at which ``y >= threshold``, where the
    reference time ``s`` is the nadir (``after_nadir=True``; the nadir is searched in
    ``t >= after``) or ``after`` itself. Concretely:

    * if the trajectory is already ``>= threshold`` at the reference (for the nadir this
      means it never fell below the threshold in the window), the result is the
      reference time: the *nadir time* (as returned by :func:`nadir`), i.e. "already
      recovered", not NaN;
    * otherwise it is the first rising crossing (:func:`first_crossing`, ``"up"``) after
      the reference; the search starts at the grid point of the minimum, so a crossing
      earlier than the parabola-refined nadir time is not missed;
    * NaN when the trajectory does not recover within the grid ("not reached").

    With the baseline as threshold this is the "time to return to baseline" and with
    2.0 the "time to grade 0" of DDMODEL00000224 (which use ``>`` for baseline; the two
    differ on a set of measure zero).

    Parameters
    ----------
    t : array_like, shape [T]
    y : array_like, shape [..., T]
    threshold : float or array_like
        Broadcasts over the leading axes (e.g. one baseline per draw).
    after_nadir : bool
    after : float or array_like

    Returns
    -------
    numpy.ndarray
        Recovery times over the leading axes.
    """
    t, y = _grid(t, y)
    thr = np.asarray(threshold, dtype=float)
    if after_nadir:
        idx, valid, _, _ = _nadir_index(t, y, after)
        value, tn = nadir(t, y, after)
        cross = first_crossing(t, y, thr, "up", after=t[idx])
        return np.where(valid, np.where(value >= thr, tn, cross), np.nan)
    s = _window_start(t, after)
    s = np.maximum(s, t[0])
    at_s = interpolate_at(t, y, s)
    cross = first_crossing(t, y, thr, "up", after=s)
    return np.where(at_s >= thr, np.broadcast_to(s, np.shape(cross)), cross)


def engraftment_day(t, y, threshold=None, consecutive=None, after_nadir=True, unit="h", *, lineage="ANC",
                    transfusions=None, transfusion_free_days=None):
    """Engraftment day: first of ``consecutive`` successive days ``>= threshold`` (ASTCT).

    The trajectory is sampled at every whole day inside the grid by linear
    interpolation (so the grid need not contain whole days); the nadir is the first
    minimum of these daily values, and with ``after_nadir`` only days from the nadir day
    on count. If the daily nadir is itself ``>= threshold`` (no cytopenia) the result
    is the nadir day. With transfusions (platelets), day :math:`d` can only be the first
    day of engraftment when no transfusion time :math:`\\tau` (days) falls in
    :math:`[d - f, d + k - 1]` (:math:`f` transfusion-free days before, :math:`k`
    consecutive days): "without platelet transfusion in the preceding 7 days".

    Parameters
    ----------
    t : array_like, shape [T]
        Time grid in hours (``unit="h"``) or days (``unit="d"``), day 0 = transplant.
    y : array_like, shape [..., T]
        Counts (×10^9/L) of ``lineage``.
    threshold : float, optional
        Default: the lineage's definition (ANC 0.5 ×10^9/L = 500/µL; PLT 20 ×10^9/L).
    consecutive : int, optional
        Number of successive days required (default 3).
    after_nadir : bool
    unit : {"h", "d"}
        Unit of ``t`` and of ``transfusions``.
    lineage : str
        Lineage whose definition (:attr:`pkpd.forecasting.lineage.Lineage.engraftment`)
        supplies the defaults.
    transfusions : array_like, optional
        Times of transfusions of this lineage (shared by all trajectories).
    transfusion_free_days : int, optional
        Days without transfusion required before the first engraftment day (default:
        the lineage's, 7 for platelets, 0 for neutrophils).

    Returns
    -------
    numpy.ndarray
        Engraftment day (days, integer-valued floats) over the leading axes; NaN if none.

    References
    ----------
    Kharfan-Dabaja MA et al., ASTCT consensus definitions (2021), as tabulated in Bone
    Marrow Transplant 2024;59:832; MODELS.md §6.3.
    """
    t, y = _grid(t, y)
    if unit not in ("h", "d"):
        raise PkpdError(f"unit must be 'h' or 'd', got {unit!r}")
    definition = get_lineage(lineage).engraftment
    if definition is None and (threshold is None or consecutive is None):
        raise PkpdError(f"lineage {lineage!r} has no engraftment definition: pass threshold and consecutive")
    threshold = definition.threshold if threshold is None else float(threshold)
    consecutive = definition.consecutive_days if consecutive is None else consecutive
    if transfusion_free_days is None:
        transfusion_free_days = definition.transfusion_free_days if definition is not None else 0
    if int(consecutive) < 1:
        raise PkpdError("consecutive must be >= 1")
    if int(transfusion_free_days) < 0:
        raise PkpdError(f"transfusion_free_days must be >= 0, got {transfusion_free_days!r}")
    k = int(consecutive)
    td = t / 24.0 if unit == "h" else t
    days = np.arange(np.ceil(td[0] - 1e-9), np.floor(td[-1] + 1e-9) + 1.0)
    days = days[(days >= td[0] - 1e-9) & (days <= td[-1] + 1e-9)]
    out_shape = y.shape[:-1]
    if days.size < k:
        return np.full(out_shape, np.nan)
    daily = _sample(td, y, np.clip(days, td[0], td[-1]))
    ok = daily >= threshold
    if after_nadir:
        nidx = np.argmin(np.where(np.isnan(daily), np.inf, daily), axis=-1)
        ok &= np.arange(days.size) >= nidx[..., None]
    c = np.concatenate([np.zeros(out_shape + (1,), dtype=int), np.cumsum(ok, axis=-1)], axis=-1)
    run = (c[..., k:] - c[..., :-k]) == k
    if transfusions is not None:
        tau = np.atleast_1d(np.asarray(transfusions, dtype=float))
        if tau.ndim != 1 or not np.all(np.isfinite(tau)):
            raise PkpdError(f"transfusions must be a 1-D array of finite times, got {transfusions!r}")
        tau = tau / 24.0 if unit == "h" else tau
        first_days = days[: run.shape[-1]]
        lo, hi = first_days - int(transfusion_free_days), first_days + (k - 1)
        blocked = ((tau[None, :] >= lo[:, None]) & (tau[None, :] <= hi[:, None])).any(axis=1)
        run = run & ~blocked
    first = np.argmax(run, axis=-1)
    found = run.any(axis=-1)
    return np.where(found, days[first], np.nan)


# ----------------------------------------------------------------------------- summaries
def probability(values_bool, axis=0):
    """Probability (fraction of draws) that an event happened.

    Parameters
    ----------
    values_bool : array_like
        Booleans; a float array is NaN-aware (NaN draws are left out, non-zero is true).
    axis : int
        Axis of the draws.

    Returns
    -------
    float or numpy.ndarray
    """
    v = np.asarray(values_bool)
    if v.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            p = np.nanmean(np.where(np.isnan(v), np.nan, v != 0), axis=axis)
    else:
        p = np.mean(v.astype(bool), axis=axis)
    return float(p) if np.ndim(p) == 0 else p


def _quantiles_not_reached(x, qs):
    """Quantiles along axis 0 with NaN = +inf; NaN where a quantile touches +inf."""
    z = np.sort(np.where(np.isnan(x), np.inf, x), axis=0)
    n = z.shape[0]
    out = []
    for q in qs:
        pos = round(q * (n - 1), 9)
        lo, hi = int(np.floor(pos)), int(np.ceil(pos))
        frac = pos - lo
        zl, zh = z[lo], z[hi]
        with np.errstate(invalid="ignore"):
            val = zl if frac == 0 else zl + (zh - zl) * frac
        out.append(np.where(np.isfinite(val), val, np.nan))
    return out


def summarise(draws, axis=0, interval=0.9, nan="not_reached"):
    """Median and central interval of draws.

    Parameters
    ----------
    draws : array_like
        Draws along ``axis``.
    axis : int
    interval : float
        Central interval mass; 0.9 gives the 5% and 95% quantiles (linear interpolation
        between order statistics, numpy's default method).
    nan : {"not_reached", "omit"}
        ``"not_reached"`` (for event times): a NaN draw means "not reached within the
        horizon" and sorts as +inf; a quantile that falls on (or interpolates towards)
        such a draw is *not reached*. ``"omit"``: NaN draws are left out.

    Returns
    -------
    dict
        ``median``, ``lo``, ``hi`` and ``p_not_reached`` (fraction of NaN draws). For
        1-D draws the values are Python floats and a not-reached quantile is ``None``;
        for more dimensions they are float arrays with NaN for not reached (None cannot
        live in a float array).
    """
    if not 0.0 < interval < 1.0:
        raise PkpdError(f"interval must be in (0, 1), got {interval}")
    x = np.moveaxis(np.asarray(draws, dtype=float), axis, 0)
    if x.shape[0] == 0:
        raise PkpdError("no draws to summarise")
    # rounded so that e.g. interval 0.9 gives exactly 0.05 and 0.95
    qs = (0.5, round((1.0 - interval) / 2.0, 12), round((1.0 + interval) / 2.0, 12))
    p_nr = np.isnan(x).mean(axis=0)
    if nan == "not_reached":
        med, lo, hi = _quantiles_not_reached(x, qs)
    elif nan == "omit":
        if not np.isnan(x).any():  # numpy's nanquantile loops over the columns in Python
            med, lo, hi = np.quantile(x, qs, axis=0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
                med, lo, hi = np.nanquantile(x, qs, axis=0)
    else:
        raise PkpdError(f"nan must be 'not_reached' or 'omit', got {nan!r}")
    if np.ndim(med) == 0:

        def conv(v):
            return None if not np.isfinite(v) else float(v)

        return {"median": conv(med), "lo": conv(lo), "hi": conv(hi), "p_not_reached": float(p_nr)}
    return {"median": np.asarray(med), "lo": np.asarray(lo), "hi": np.asarray(hi), "p_not_reached": p_nr}


def grade_probability(draws, lineage="ANC", grade=4, *, axis=0, t=None, after=None, lln=None, thresholds=None):
    """Probability that the minimum of a trajectory reaches at least a CTCAE grade.

    Parameters
    ----------
    draws : array_like, shape [..., T]
        Trajectories; the draws are along ``axis`` (one of the leading axes).
    lineage, lln, thresholds
        See :func:`grade_thresholds`.
    grade : int
        1..4; ``P(grade(min_t y) >= grade)``.
    axis : int
        Axis of the draws (must not be the time axis).
    t, after : optional
        Grid ``[T]`` and window start: only ``t >= after`` counts (both or neither).

    Returns
    -------
    float or numpy.ndarray
        Probabilities over the remaining leading axes. NaN values are ignored in the
        minimum.

    Raises
    ------
    PkpdError
        For a grade that is not assigned from a value (e.g. anaemia grade 4).
    """
    y = np.asarray(draws, dtype=float)
    if y.ndim < 2:
        raise PkpdError("draws must have shape [..., T] with the draws on a leading axis")
    ax = axis % y.ndim
    if ax == y.ndim - 1:
        raise PkpdError("the draws axis must not be the time (last) axis")
    bounds = grade_thresholds(lineage, lln, thresholds)
    if grade not in bounds and grade != 0:
        raise PkpdError(f"grade {grade} of {lineage} is not assigned from a value (bounds: {bounds})")
    if after is not None:
        if t is None:
            raise PkpdError("'after' needs the time grid 't'")
        t, y = _grid(t, y)
        y = np.where(t >= _window_start(t, after), y, np.nan)
    ymin = np.min(np.where(np.isnan(y), np.inf, y), axis=-1)
    reached = ctcae_grade(ymin, lineage, lln, thresholds) >= grade
    return probability(reached, axis=ax)


# ----------------------------------------------------------------------------- patient summary
#: Keys of a :func:`patient_summary` entry common to every lineage (the ``"patients"`` entries
#: of the forecast JSON); lineage-specific endpoints (``p_transfusion``) come on top.
PATIENT_SUMMARY_KEYS = ("id", "regimen", "lineage", "nadir", "p_grade", "grade4_duration_h", "recovery_h", "p_ready",
                        "trajectory")


def _recovery_key(thr) -> str:
    return repr(float(thr))


def patient_summary(
    t,
    draws,
    *,
    patient_id,
    regimen,
    lineage="ANC",
    baseline=None,
    interval=0.9,
    ready=(),
    recovery_thresholds=None,
    transfusion_thresholds=None,
    after=0.0,
    lln=None,
    thresholds=None,
) -> dict:
    """Endpoint summary of one patient × regimen × lineage from trajectory draws.

    Parameters
    ----------
    t : array_like, shape [T]
        Time grid (h).
    draws : array_like, shape [n_draws, T]
        Posterior-predictive trajectories.
    patient_id, regimen : str
    lineage : str
        Lineage name: grade bounds (CTCAE v5) and default thresholds come from the
        lineage table (:data:`pkpd.forecasting.lineage.LINEAGES`).
    baseline : float or array_like [n_draws], optional
        Baseline per draw (or one value) for "recovery to baseline"; default: each
        draw's value at the first grid time.
    interval : float
        Central interval mass of ``lo``/``hi`` (0.9: 5% and 95% quantiles).
    ready : sequence of (time_h, threshold)
        Readiness checks: ``p = P(y(time_h) >= threshold)``, ``y`` linearly
        interpolated at ``time_h``.
    recovery_thresholds : sequence of float, optional
        Recovery levels, keyed ``"1.0"``, ``"1.5"``, … in ``recovery_h``. Default: the
        lineage's (ANC 1.0 and 1.5; PLT 100 and 75; HGB 10; WBC 3.0).
    transfusion_thresholds : sequence of float, optional
        Levels ``r`` of ``p_transfusion`` = ``P(nadir < r)``. Default: the lineage's
        (PLT 10 and 20; HGB 7 and 8); the key is left out when there are none (ANC, WBC).
    after : float
        Window start (h): the nadir, grades, grade-4 duration and transfusion risks use
        ``t >= after``.
    lln, thresholds
        Grade bounds, see :func:`grade_thresholds`.

    Returns
    -------
    dict
        One entry of ``"patients"`` (see :data:`pkpd.reporting.forecast.FORECAST_SCHEMA`):

        * ``nadir``: median/lo/hi of the nadir value and of its time (parabola-refined);
        * ``p_grade``: ``"3"`` = P(nadir grade >= 3), ``"4"`` = P(nadir grade == 4) (0 for
          HGB, whose grade 4 is not assigned from a value);
        * ``grade4_duration_h``: mean and median over draws of the time below the
          grade-4 bound (0.5 for ANC) in the window (0 without a grade-4 bound);
        * ``recovery_h``: per level, :func:`recovery_time` after the nadir summarised
          with not-reached draws as +inf (``None`` quantiles) and ``p_not_recovered``;
        * ``p_ready``, then ``p_transfusion`` (if any level), and ``trajectory``
          (median/lo/hi per grid time).
    """
    t, y = _grid(t, draws)
    if y.ndim != 2:
        raise PkpdError(f"draws must have shape [n_draws, T], got {y.shape}")
    key = str(lineage).upper()
    spec = LINEAGES.get(key)
    if recovery_thresholds is None:
        recovery_thresholds = spec.recovery if spec is not None else ()
    if transfusion_thresholds is None:
        transfusion_thresholds = spec.transfusion if spec is not None else ()
    bounds = grade_thresholds(lineage, lln, thresholds)
    vmin, tmin = nadir(t, y, after=after)
    sv = summarise(vmin, interval=interval, nan="omit")
    st = summarise(tmin, interval=interval, nan="omit")
    grade = ctcae_grade(vmin, lineage, lln, thresholds)
    p_grade = {"3": probability(grade >= 3), "4": probability(grade == 4)}
    if 4 in bounds:
        dur = time_below(t, y, bounds[4], start=max(float(after), t[0]))
    else:
        dur = np.zeros(y.shape[0])
    if baseline is None:
        base = y[:, 0]
    else:
        base = np.broadcast_to(np.asarray(baseline, dtype=float), (y.shape[0],))
    recovery = {}
    levels = [(_recovery_key(thr), float(thr)) for thr in recovery_thresholds] + [("baseline", base)]
    for name, thr in levels:
        s = summarise(recovery_time(t, y, thr, after_nadir=True, after=after), interval=interval)
        recovery[name] = {"median": s["median"], "lo": s["lo"], "hi": s["hi"], "p_not_recovered": s["p_not_reached"]}
    p_ready = []
    for time_h, thr in ready:
        at = interpolate_at(t, y, float(time_h))
        p_ready.append({"time_h": float(time_h), "threshold": float(thr), "p": probability(at >= thr)})
    traj = summarise(y, axis=0, interval=interval, nan="omit")
    entry = {
        "id": str(patient_id),
        "regimen": str(regimen),
        "lineage": str(lineage),
        "nadir": {
            "median": sv["median"],
            "lo": sv["lo"],
            "hi": sv["hi"],
            "time_h": {"median": st["median"], "lo": st["lo"], "hi": st["hi"]},
        },
        "p_grade": p_grade,
        "grade4_duration_h": {"mean": float(np.mean(dur)), "median": float(np.median(dur))},
        "recovery_h": recovery,
        "p_ready": p_ready,
    }
    if len(transfusion_thresholds):
        entry["p_transfusion"] = {_recovery_key(r): probability(vmin < float(r)) for r in transfusion_thresholds}
    entry["trajectory"] = {
        "time_h": [float(v) for v in t],
        "median": [float(v) for v in traj["median"]],
        "lo": [float(v) for v in traj["lo"]],
        "hi": [float(v) for v in traj["hi"]],
    }
    return entry
