r"""What-if comparison of regimens on the same posterior draws (paired differences).

A forecast projects each posterior draw of a patient's parameters under every regimen
(:meth:`pkpd.forecasting.forecast.Forecast.project`), so for draw :math:`d` the endpoint
:math:`E_d(A)` under the alternative :math:`A` and :math:`E_d(R)` under the reference
:math:`R` share everything but the regimen. The comparison summarises the *paired*
differences :math:`\Delta_d = E_d(A) - E_d(R)`:

* continuous endpoints (nadir, days below the grade-4 bound, days from the cycle start to
  recovery): the median and central ``interval`` of :math:`\Delta_d`, and
  :math:`P(\text{better}) = P(\Delta \text{ in the better direction}) + \tfrac12 P(\Delta = 0)`
  (ties, e.g. both draws never below the bound, count half);
* event endpoints (grade 4 at the nadir; the count below a transfusion threshold): the
  difference of the two probabilities, :math:`P_A - P_R = \operatorname{mean}_d(\Delta_d)`,
  its Monte-Carlo standard error ``mcse`` (``sd(Delta)/sqrt(n)``, treating the draws as
  independent), and :math:`P(\text{better})` as above on the paired indicators. A
  predictive probability has no posterior interval of its own: ``lo``/``hi`` are empty.

Recovery not reached within the forecast grid is :math:`+\infty` days: a difference with
one side not recovered is :math:`\pm\infty` and counts in :math:`P(\text{better})`; its
quantiles may be infinite (reported as null).

The endpoints follow the lineage table (:data:`pkpd.forecasting.lineage.LINEAGES`): grade
bounds (CTCAE v5), the first recovery level, the transfusion thresholds; for haemoglobin
also what an ESA is judged by (:mod:`pkpd.forecasting.lineage_endpoints`): Hb at the end
of the forecast, days from the cycle start to Hb >= 10 and >= 11, and the label's rules
P(rise > 1 g/dL in 2 weeks) and P(Hb > 12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import PkpdError
from . import endpoints as ep
from .lineage import get_lineage
from .lineage_endpoints import ESA_RISE_G_DL, ESA_TARGETS_G_DL, ESA_UPPER_G_DL, ESA_WINDOW_H, rise_within

__all__ = ["Comparison", "compare", "compare_regimens", "COMPARISON_COLUMNS"]

#: Columns of :attr:`Comparison.table` (and keys of the JSON ``comparison`` records).
COMPARISON_COLUMNS = ("id", "lineage", "endpoint", "unit", "better", "reference", "alternative", "reference_value",
                      "alternative_value", "difference", "lo", "hi", "p_better", "mcse")


def _endpoint_draws(t, y, after, lineage) -> list[tuple[str, str, str, str, np.ndarray]]:
    """``(endpoint, unit, better, kind, values [draws])`` of one trajectory set ``y [draws, T]``."""
    spec = get_lineage(lineage)
    top = spec.max_grade
    bound = spec.grades[top]
    value, _ = ep.nadir(t, y, after=after)
    out = [("nadir", spec.unit, "higher", "continuous", value),
           (f"P(grade {top})", "probability", "lower", "event", (value < bound).astype(float))]
    below = ep.time_below(t, y, bound, start=max(float(after), float(t[0]))) / 24.0
    out.append((f"days below {bound:g}", "d", "lower", "continuous", below))
    if spec.recovery:
        level = spec.readiness if spec.readiness is not None else spec.recovery[0]
        rec = ep.recovery_time(t, y, level, after_nadir=True, after=after)
        days = np.where(np.isnan(rec), np.inf, (rec - float(after)) / 24.0)
        out.append((f"days to recovery >= {level:g}", "d", "lower", "continuous", days))
    for r in spec.transfusion:
        out.append((f"P(nadir < {r:g})", "probability", "lower", "event", (value < r).astype(float)))
    if spec.name == "HGB":  # what an ESA is given for, and the label's safety rules
        start = max(float(after), float(t[0]))
        out.append(("Hb at the end", spec.unit, "higher", "continuous", y[:, -1]))
        for level in ESA_TARGETS_G_DL:
            reach = ep.recovery_time(t, y, level, after_nadir=False, after=start)
            out.append((f"days to Hb >= {level:g}", "d", "lower", "continuous",
                        np.where(np.isnan(reach), np.inf, (reach - start) / 24.0)))
        rise = rise_within(t, y, ESA_WINDOW_H, start=start) > ESA_RISE_G_DL
        out.append((f"P(rise > {ESA_RISE_G_DL:g} in 2 weeks)", "probability", "lower", "event", rise.astype(float)))
        above = np.any(y[:, t >= start] > ESA_UPPER_G_DL, axis=-1)
        out.append((f"P(Hb > {ESA_UPPER_G_DL:g})", "probability", "lower", "event", above.astype(float)))
    return out


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _paired(ref: np.ndarray, alt: np.ndarray, better: str, kind: str, interval: float) -> dict:
    ok = ~(np.isnan(ref) | np.isnan(alt))
    ref, alt = ref[ok], alt[ok]
    if ref.size == 0:
        raise PkpdError("no posterior draw has a finite endpoint under both regimens (failed solves)")
    with np.errstate(invalid="ignore"):
        diff = np.where(alt == ref, 0.0, alt - ref)  # inf - inf (both not recovered) is a tie, not NaN
    sign = 1.0 if better == "higher" else -1.0
    p_better = float(np.mean(sign * diff > 0) + 0.5 * np.mean(diff == 0))
    if kind == "event":
        return {"reference_value": float(ref.mean()), "alternative_value": float(alt.mean()),
                "difference": float(diff.mean()), "lo": None, "hi": None, "p_better": p_better,
                "mcse": float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else None}
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    with np.errstate(invalid="ignore"):  # quantiles between infinite differences (not recovered) are NaN -> null
        q = np.quantile(diff, [0.5, lo, hi], method="linear")
    finite = diff[np.isfinite(diff)]
    mcse = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else None
    return {"reference_value": _finite_or_none(np.median(ref)), "alternative_value": _finite_or_none(np.median(alt)),
            "difference": _finite_or_none(q[0]), "lo": _finite_or_none(q[1]), "hi": _finite_or_none(q[2]),
            "p_better": p_better, "mcse": mcse}


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of the regimens of a forecast against a reference regimen.

    Attributes
    ----------
    forecast : Forecast
        The forecast (one posterior, every regimen projected from the same draws).
    reference : str
        Name of the reference regimen (the first by default).
    records : tuple of dict
        One per patient x lineage x alternative x endpoint (:data:`COMPARISON_COLUMNS`).
    """

    forecast: object
    reference: str
    records: tuple

    @property
    def table(self) -> pd.DataFrame:
        """The records as a table (:data:`COMPARISON_COLUMNS`)."""
        return pd.DataFrame(list(self.records), columns=list(COMPARISON_COLUMNS))

    def text(self) -> str:
        """A plain-text table for a terminal: per patient and lineage, each endpoint under the
        reference and the alternative, the paired difference with its interval and P(better)."""
        pct = f"{self.forecast.interval:.0%}"
        lines = []
        for (pid, lin, alt), rows in self.table.groupby(["id", "lineage", "alternative"], sort=False):
            lines.append(f"patient {pid} | {lin} | {alt!s}  vs  {self.reference!s}")
            lines.append(f"  {'endpoint':<26}{'reference':>11}{'alternative':>13}{'difference':>12}"
                         f"{pct + ' interval':>22}{'P(better)':>11}")
            for _, r in rows.iterrows():
                interval = "-" if r["lo"] is None or r["hi"] is None or pd.isna(r["lo"]) or pd.isna(r["hi"]) else \
                    f"{r['lo']:.3g} to {r['hi']:.3g}"
                lines.append(f"  {r['endpoint']:<26}{_fmt(r['reference_value']):>11}{_fmt(r['alternative_value']):>13}"
                             f"{_fmt(r['difference'], signed=True):>12}{interval:>22}{r['p_better']:>11.2f}")
        return "\n".join(lines)

    def plot(self, path, patient=None, *, lineage=None, log=False) -> None:
        """Fan chart with one panel per regimen (:meth:`Forecast.plot`)."""
        self.forecast.plot(path, patient, lineage=lineage, log=log)

    def to_json(self, path=None) -> dict:
        """The forecast JSON with a ``comparison`` list (validated); written atomically to
        ``path`` when given."""
        from ..reporting.forecast import forecast_json, write_json  # presentation layer, imported on use

        fc = self.forecast
        obj = forecast_json(fc.model_name, fc.prior_name, fc.interval, fc.horizon_h, fc.entries,
                            lineages=fc.lineage_json(), comparison=[dict(r) for r in self.records])
        if path is not None:
            write_json(path, obj)
        return obj


def _fmt(x, signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def compare(forecast, reference=0) -> Comparison:
    """Paired comparison of a forecast's regimens against ``reference`` (index or name).

    Raises
    ------
    PkpdError
        Fewer than two regimens, or an unknown reference.
    """
    names = list(forecast.regimens)
    if len(names) < 2:
        raise PkpdError(f"a comparison needs at least two regimens, the forecast has {len(names)}")
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if not 0 <= int(reference) < len(names):
            raise PkpdError(f"reference index {reference} is out of range (0..{len(names) - 1})")
        r0 = int(reference)
    elif reference in names:
        r0 = names.index(reference)
    else:
        raise PkpdError(f"unknown reference regimen {reference!r}: the forecast has {names}")
    t = forecast.time_h
    records = []
    for lin in forecast.lineages:
        y = forecast.lineage_trajectories[lin]  # [draws, patients, regimens, T]
        for i, pid in enumerate(forecast.ids):
            ref = _endpoint_draws(t, y[:, i, r0, :], forecast.after[i, r0], lin)
            for r, name in enumerate(names):
                if r == r0:
                    continue
                alt = _endpoint_draws(t, y[:, i, r, :], forecast.after[i, r], lin)
                for (endpoint, unit, better, kind, a), (_, _, _, _, b) in zip(ref, alt):
                    records.append({"id": str(pid), "lineage": lin, "endpoint": endpoint, "unit": unit,
                                    "better": better, "reference": str(names[r0]), "alternative": str(name),
                                    **_paired(a, b, better, kind, forecast.interval)})
    return Comparison(forecast=forecast, reference=str(names[r0]), records=tuple(records))


def compare_regimens(prior, patient, regimens, *, reference=0, **options) -> Comparison:
    """Forecast a patient under several regimens from one posterior and compare them.

    Parameters
    ----------
    prior, patient
        As for :func:`pkpd.forecasting.forecast.forecast`.
    regimens : list or dict
        At least two regimens (a list of regimen strings/objects, or a dict name ->
        regimen); the first (or ``reference``) is the reference, e.g.
        ``["docetaxel 100 mg/m2 1h @504h",
        "docetaxel 100 mg/m2 1h @504h; pegfilgrastim 6 mg sc @528h"]``.
    reference : int or str
        Index or name of the reference regimen.
    **options
        Passed to :func:`~pkpd.forecasting.forecast.forecast` (``horizon``, ``method``,
        ``lineage``, ``draws``, ``seed``, ``interval``...).

    Returns
    -------
    Comparison
    """
    from .forecast import forecast

    if isinstance(regimens, (str, bytes)) or len(regimens) < 2:
        raise PkpdError("compare_regimens needs at least two regimens (a list or a dict name -> regimen)")
    return compare(forecast(prior, patient, regimens, **options), reference)
