r"""The supportive-care planner: one patient's next cycle under several plans, every lineage.

A *plan* changes the next chemotherapy cycle and adds supportive care. Each is written as
parts joined by ``+``:

* ``none`` (or an empty string): the cycle as planned;
* ``delay <time>`` (``delay 7d``): the cycle, and everything in the plan, starts later;
* ``dose <p>%`` (``dose 80%``): the cycle's amounts times ``p / 100``;
* any regimen (:mod:`pkpd.dosing.regimen`) with times counted **from the cycle start**:
  ``pegfilgrastim 6 mg sc @24h``, ``romiplostim 3 ug/kg sc weekly``,
  ``darbepoetin 500 ug sc q3w``, ``platelets 1 unit @240h``. A repeated dose without a
  count (``weekly``) is repeated through the cycle (``floor(cycle_length / interval)``
  doses, at least one).

The cycle is ``cycle`` when given (a regimen with absolute times, e.g.
``"docetaxel 100 mg/m2 1h @504h"``), else the patient's last chemotherapy administration
in the data (the dose records of the card's first drug at its last dose time) repeated
``cycle_length`` later.

Every plan is projected from the **same posterior draws** (one :func:`forecast` with the
plans as its regimens), so per draw :math:`d` the difference of an endpoint between a plan
and the first plan is paired. Transfusion rules (``"PLT<10:1 unit"``, ``"HGB<7:2 units"``)
are simulated on every draw under every plan (:mod:`pkpd.forecasting.policy`). Per patient
and plan the planner reports, for the lineages the model forecasts (from the cycle start
``a`` of the plan):

================================  ==========================================================
``P(grade 4 neutropenia)``        :math:`P(\min_{t \ge a} ANC < 0.5)`
``days of grade 4 neutropenia``   expected time with ANC < 0.5 (days)
``P(PLT < 10)``                   :math:`P(\min_{t \ge a} PLT < 10)` (without transfusions)
``platelet transfusions``         expected number under the PLT rule
``P(Hb < 8)``                     :math:`P(\min_{t \ge a} Hb < 8)` (without transfusions)
``red-cell transfusions``         expected number under the HGB rule
``P(ready)``                      :math:`P(ANC \ge 1.5 \wedge PLT \ge 100)` at
                                  :math:`a + ` ``cycle_length`` (the lineages forecast; on
                                  the course without transfusions)
================================  ==========================================================

each as its mean over the draws (a probability or an expectation) with, against the first
plan, the mean paired difference, the central ``interval`` of the per-draw difference
(continuous endpoints and counts; for a probability only its Monte Carlo standard error,
as in :mod:`pkpd.forecasting.compare`) and P(better). :class:`Plan` gives the table, a
text report, the JSON (:data:`pkpd.reporting.plan.PLAN_SCHEMA`) and one figure with a
fan-chart row per lineage and a column per plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..dosing.regimen import DoseSpec, Regimen, parse_regimen
from ..errors import ModelError, PkpdError
from ..units import hours_per
from . import endpoints as ep
from .forecast import forecast, parse_horizon
from .lineage import get_lineage

__all__ = ["Plan", "plan", "parse_plan", "parse_transfusion_rule", "PLAN_COLUMNS"]

#: Columns of :attr:`Plan.table` (and keys of the JSON ``endpoints`` records).
PLAN_COLUMNS = ("id", "plan", "lineage", "endpoint", "unit", "better", "value", "lo", "hi", "difference",
                "difference_lo", "difference_hi", "p_better", "mcse")

_RULE_RE = re.compile(r"^\s*([A-Za-z]+)\s*<\s*([0-9.eE+-]+)\s*:\s*([0-9.eE+-]+)\s*(units?)?\s*$")
_DELAY_RE = re.compile(r"^delay\s+(.+)$", re.IGNORECASE)
_DOSE_RE = re.compile(r"^dose\s+([0-9.eE+-]+)\s*%$", re.IGNORECASE)


def parse_transfusion_rule(text: str) -> tuple[str, float, float]:
    """``"PLT<10:1 unit"`` -> ``("PLT", 10.0, 1.0)``: the lineage, its threshold and the units given.

    Raises
    ------
    PkpdError
        Not of the form ``<lineage><<threshold>:<units> [unit|units]`` with a known lineage
        and positive numbers.
    """
    m = _RULE_RE.match(str(text))
    if not m:
        raise PkpdError(f"transfusion rule {text!r}: expected '<lineage><<threshold>:<units> unit(s)', "
                        "e.g. 'PLT<10:1 unit' or 'HGB<7:2 units'")
    lineage = m.group(1).upper()
    get_lineage(lineage)
    try:
        threshold, units = float(m.group(2)), float(m.group(3))
    except ValueError:
        threshold = units = float("nan")
    if not (threshold > 0 and units > 0 and math.isfinite(threshold) and math.isfinite(units)):
        raise PkpdError(f"transfusion rule {text!r}: the threshold and the units must be positive numbers")
    return lineage, threshold, units


def _time_hours(text: str, what: str) -> float:
    m = re.match(r"^\s*([0-9.]+(?:e[+-]?\d+)?)\s*(min|h|d|w)?\s*$", str(text), re.IGNORECASE)
    if not m:
        raise PkpdError(f"{what} {text!r}: expected a time such as '7d', '72h' or '1w'")
    return float(m.group(1)) * hours_per(m.group(2) or "h")


def _repeat_through(reg: Regimen, cycle_h: float) -> Regimen:
    """Dose lines with an interval and no written count repeat through the cycle."""
    items = []
    for dose, spans in zip(reg.items, reg.spans or [()] * len(reg.items)):
        roles = dict(spans)
        if dose.interval and "count" not in roles:
            dose = replace(dose, count=max(1, int(math.floor(cycle_h / dose.interval + 1e-9))))
        items.append(dose)
    return Regimen(tuple(items))


def parse_plan(text: str, cycle: Regimen, cycle_start: float, cycle_h: float) -> Regimen:
    """The regimen of one plan (module docstring): the cycle, changed and completed by ``text``.

    Raises
    ------
    PkpdError
        An unknown part (with the regimen parser's message), two delays or two dose changes,
        a dose change outside (0, 200] %.
    """
    delay, scale, extra = 0.0, 1.0, []
    seen = set()
    for part in (p.strip() for p in str(text).split("+")):
        if not part or part.lower() == "none":
            continue
        if (m := _DELAY_RE.match(part)) is not None:
            if "delay" in seen:
                raise PkpdError(f"plan {text!r}: more than one delay")
            seen.add("delay")
            delay = _time_hours(m.group(1), f"plan {text!r}: delay")
            continue
        if (m := _DOSE_RE.match(part)) is not None:
            if "dose" in seen:
                raise PkpdError(f"plan {text!r}: more than one dose change")
            seen.add("dose")
            pct = float(m.group(1))
            if not 0 < pct <= 200:
                raise PkpdError(f"plan {text!r}: the dose must be in (0, 200] %, got {pct:g}%")
            scale = pct / 100.0
            continue
        try:
            extra.append(_repeat_through(parse_regimen(part), cycle_h))
        except ModelError as err:
            raise PkpdError(f"plan {text!r}: {part!r} is not 'none', 'delay <time>', 'dose <p>%' or a regimen "
                            f"timed from the cycle start:\n{err}") from None
    items = list((cycle.scaled(scale) if scale != 1.0 else cycle).delayed(delay).items)
    for reg in extra:
        items += list(reg.delayed(cycle_start + delay).items)
    return Regimen(tuple(items))


def _default_cycle(model, ds, cycle_h: float) -> tuple[Regimen, float]:
    """The patient's last administration of the card's first drug, repeated ``cycle_h`` later."""
    df = ds.df
    if model.card.schema == 2 and model.card.pks:
        spec = model.card.pks[0]
        cmts, drug = {int(c) for c in dict(spec.cmt).values()}, spec.drug
    else:
        cmts, drug = {1}, None
    doses = df[df["EVID"].isin([1, 4]) & df["CMT"].isin(cmts) & (df["AMT"] > 0)]
    if doses.empty:
        raise PkpdError(f"no {drug or 'chemotherapy'} dose (CMT {sorted(cmts)}) in the patient data to repeat as the "
                        "next cycle: give the cycle (e.g. cycle='docetaxel 100 mg/m2 1h @504h')")
    last = doses[doses["TIME"] == doses["TIME"].max()]
    stored = getattr(ds, "stored_dose_units", {}) or {}
    items = []
    for _, d in last.iterrows():
        rate = float(d["RATE"]) if "RATE" in d and pd.notna(d["RATE"]) else 0.0
        amount = float(d["AMT"])
        addl = int(d["ADDL"]) if "ADDL" in d and pd.notna(d["ADDL"]) else 0
        items.append(DoseSpec(amount=amount, unit=stored.get(int(d["CMT"]), "mg"),
                              duration=amount / rate if rate > 0 else 0.0,
                              route="infusion" if rate > 0 else "bolus",
                              interval=float(d["II"]) if addl > 0 else None, count=addl + 1,
                              start=float(d["TIME"]) + cycle_h,
                              cmt=None if drug is not None or int(d["CMT"]) == 1 else int(d["CMT"]), drug=drug))
    return Regimen(tuple(items)), float(last["TIME"].iloc[0]) + cycle_h


@dataclass(frozen=True)
class Plan:
    """Supportive-care plans for one or several patients, compared on the same posterior draws.

    Attributes
    ----------
    forecast : Forecast
        The forecast with one regimen per plan (every lineage the model outputs).
    plans : tuple of str
        The plans as written (the first is the reference).
    regimens : tuple of str
        Each plan's regimen.
    rules : tuple of (str, float, float)
        Transfusion rules ``(lineage, threshold, units)``.
    cycle_length_h : float
    records : tuple of dict
        One per patient x plan x endpoint (:data:`PLAN_COLUMNS`).
    policies : dict
        ``{lineage: PolicyResult}`` of the transfusion rules.
    """

    forecast: object
    plans: tuple
    regimens: tuple
    rules: tuple
    cycle_length_h: float
    records: tuple
    policies: dict

    @property
    def table(self) -> pd.DataFrame:
        """The records as a table (:data:`PLAN_COLUMNS`)."""
        return pd.DataFrame(list(self.records), columns=list(PLAN_COLUMNS))

    def text(self) -> str:
        """A table a clinician can read: per patient, one row per endpoint, one column per plan
        (the value, then the difference from the first plan with its interval)."""
        pct = f"{self.forecast.interval:.0%}"
        lines = []
        for pid, rows in self.table.groupby("id", sort=False):
            n_draws = next(iter(self.forecast.lineage_trajectories.values())).shape[0]
            lines.append(f"patient {pid}: {len(self.plans)} plans, compared with '{self.plans[0]}' on the same "
                         f"{n_draws} posterior draws")
            for k, (p, reg) in enumerate(zip(self.plans, self.regimens)):
                lines.append(f"  [{k + 1}] {p or 'none'}: {reg}")
            width = max(26, max(len(e) for e in rows["endpoint"]) + 2)
            head = f"  {'endpoint':<{width}}" + "".join(f"{'[' + str(k + 1) + ']':>22}" for k in range(len(self.plans)))
            lines.append(head)
            for (lin, endpoint), sub in rows.groupby(["lineage", "endpoint"], sort=False):
                cells = []
                for k, p in enumerate(self.plans):
                    hit = sub[sub["plan"] == p]
                    if hit.empty:  # e.g. the readiness day of this plan lies beyond the horizon
                        cells.append(f"{'n/a':>22}")
                        continue
                    r = hit.iloc[0]
                    cell = _fmt(r["value"], r["unit"])
                    if k > 0 and r["difference"] is not None and not pd.isna(r["difference"]):
                        cell += f" ({_signed(r['difference'], r['unit'])})"
                    cells.append(f"{cell:>22}")
                lines.append(f"  {endpoint:<{width}}" + "".join(cells))
            lines.append(f"  (differences against [1], paired over the draws; {pct} intervals of the differences in "
                         "the JSON and the table)")
        return "\n".join(lines)

    def to_json(self, path=None) -> dict:
        """The plan JSON (:data:`pkpd.reporting.plan.PLAN_SCHEMA`, validated); written atomically
        to ``path`` when given."""
        from ..reporting.plan import plan_json  # presentation layer, imported on use

        obj = plan_json(self)
        if path is not None:
            from ..reporting.forecast import write_json

            write_json(path, obj)
        return obj

    def plot(self, path, patient=None) -> None:
        """One figure: a fan-chart row per lineage, a column per plan (:func:`pkpd.reporting.plan.plan_chart`)."""
        from ..reporting.plan import plan_chart

        plan_chart(path, self, patient)


def _fmt(x, unit) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if unit == "probability":
        return f"{100 * x:.0f}%"
    return f"{x:.3g}"


def _signed(x, unit) -> str:
    if unit == "probability":
        return f"{100 * x:+.0f}%"
    return f"{x:+.3g}"


def _endpoints(t, traj: dict, a: float, cycle_h: float, counts: dict) -> list[tuple]:
    """``(lineage, endpoint, unit, better, kind, values [draws])`` of one patient x plan."""
    out = []
    if "ANC" in traj:
        y = traj["ANC"]
        bound = get_lineage("ANC").grades[4]
        value, _ = ep.nadir(t, y, after=a)
        out.append(("ANC", "P(grade 4 neutropenia)", "probability", "lower", "event", (value < bound).astype(float)))
        out.append(("ANC", "days of grade 4 neutropenia", "d", "lower", "continuous",
                    ep.time_below(t, y, bound, start=a) / 24.0))
    for lin, level, label in (("PLT", 10.0, "P(PLT < 10)"), ("HGB", 8.0, "P(Hb < 8)")):
        if lin in traj:
            value, _ = ep.nadir(t, traj[lin], after=a)
            out.append((lin, label, "probability", "lower", "event", (value < level).astype(float)))
        if lin in counts:
            name = "platelet transfusions" if lin == "PLT" else "red-cell transfusions"
            out.append((lin, name, "count", "lower", "continuous", counts[lin].astype(float)))
    ready_at = a + cycle_h
    checks = [(lin, get_lineage(lin).readiness) for lin in ("ANC", "PLT") if lin in traj]
    if checks and ready_at <= t[-1]:
        ok = np.ones(next(iter(traj.values())).shape[0], dtype=bool)
        for lin, level in checks:
            ok &= ep._sample(t, traj[lin], np.array([ready_at]))[:, 0] >= level
        label = "P(ready: " + " and ".join(f"{lin} >= {level:g}" for lin, level in checks) + ")"
        out.append(("+".join(lin for lin, _ in checks), label, "probability", "higher", "event", ok.astype(float)))
    return out


def _summary(values: np.ndarray, ref: np.ndarray | None, better: str, kind: str, interval: float) -> dict:
    good = np.isfinite(values) if ref is None else np.isfinite(values) & np.isfinite(ref)
    v = values[good]
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    out = {"value": float(v.mean()), "lo": None, "hi": None, "difference": None, "difference_lo": None,
           "difference_hi": None, "p_better": None, "mcse": None}
    if kind == "continuous":
        out["lo"], out["hi"] = (float(x) for x in np.quantile(v, [lo_q, hi_q]))
    if ref is None:
        return out
    diff = v - ref[good]
    sign = 1.0 if better == "higher" else -1.0
    out["difference"] = float(diff.mean())
    out["p_better"] = float(np.mean(sign * diff > 0) + 0.5 * np.mean(diff == 0))
    out["mcse"] = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else None
    if kind == "continuous":
        out["difference_lo"], out["difference_hi"] = (float(x) for x in np.quantile(diff, [lo_q, hi_q]))
    return out


def plan(prior, patient, options, *, cycle=None, transfuse=(), cycle_length="21d", horizon=None, method="nuts",
         interval=0.9, **forecast_options) -> Plan:
    """Forecast a patient's next cycle under several supportive-care plans (module docstring).

    Parameters
    ----------
    prior, patient
        As for :func:`pkpd.forecasting.forecast.forecast` (a card or a fit; the patient's
        doses and counts so far).
    options : list of str
        The plans, at least one; the first is the reference (``"none"`` is the usual first).
    cycle : str or Regimen, optional
        The next cycle with absolute times; default: the last administration of the card's
        first drug repeated ``cycle_length`` later.
    transfuse : list of str
        Transfusion rules, e.g. ``["PLT<10:1 unit", "HGB<7:2 units"]`` (one per lineage).
    cycle_length : str or float
        Cycle length (``"21d"``): the default cycle's repeat and the readiness day.
    horizon : str or float, optional
        Forecast horizon after the last planned dose (default: ``cycle_length``).
    method, interval, **forecast_options
        Passed to :func:`forecast` (``draws``, ``seed``, ``covariates``, ``ids``...).

    Returns
    -------
    Plan

    Raises
    ------
    PkpdError
        No plan, two plans that are the same text, a bad plan or rule, a rule for a lineage
        the model does not forecast or without a blood product, two rules for one lineage.
    """
    options = [str(o).strip() for o in (options or [])]
    if not options:
        raise PkpdError("plan needs at least one option (e.g. 'none')")
    if len(set(options)) != len(options):
        raise PkpdError(f"the plans must differ: {options}")
    cycle_h = parse_horizon(cycle_length)
    rules = [parse_transfusion_rule(r) for r in (transfuse or ())]
    lineages = [r[0] for r in rules]
    if len(set(lineages)) != len(lineages):
        raise PkpdError(f"one transfusion rule per lineage, got {list(transfuse)}")
    from .forecast import _as_dataset
    from .prior import resolve_prior

    pr = resolve_prior(prior)
    ds = _as_dataset(patient, forecast_options.get("covariates"))
    if forecast_options.get("ids") is not None:
        ids = forecast_options["ids"]
        ds = ds.subset(list(ids) if isinstance(ids, (list, tuple)) else [ids])
    if cycle is None:
        if ds.n_subjects != 1:
            raise PkpdError("the default cycle (the last one repeated) needs one patient: give ids=[...] or cycle=...")
        cycle_reg, start = _default_cycle(pr.model, ds, cycle_h)
    else:
        try:
            cycle_reg = parse_regimen(cycle)
        except ModelError as err:
            raise PkpdError(f"cycle: {err}") from None
        start = min(d.start for d in cycle_reg.items)
    regimens = {}
    for o in options:
        regimens[o or "none"] = parse_plan(o, cycle_reg, start, cycle_h)
    fc = forecast(prior, ds, regimens, horizon=horizon or cycle_h,
                  method=method, interval=interval, **{k: v for k, v in forecast_options.items() if k != "ids"})
    for lin, _, _ in rules:
        if lin not in fc.lineages:
            raise PkpdError(f"transfusion rule for {lin}: the model does not forecast it (lineages {fc.lineages})")
    policies = {lin: fc.transfusion_policy(lin, thr, units) for lin, thr, units in rules}
    t = fc.time_h
    records = []
    names = list(regimens)
    for i, pid in enumerate(fc.ids):
        per_plan = []
        for r in range(len(names)):
            traj = {lin: fc.lineage_trajectories[lin][:, i, r, :] for lin in fc.lineages}
            counts = {lin: p.counts[:, i, r] for lin, p in policies.items()}
            per_plan.append(_endpoints(t, traj, float(fc.after[i, r]), cycle_h, counts))
        for r, name in enumerate(names):
            for k, (lin, endpoint, unit, better, kind, values) in enumerate(per_plan[r]):
                ref = None if r == 0 else per_plan[0][k][5]
                records.append({"id": str(pid), "plan": options[r] or "none", "lineage": lin, "endpoint": endpoint,
                                "unit": unit, "better": better, **_summary(values, ref, better, kind, interval)})
    return Plan(forecast=fc, plans=tuple(o or "none" for o in options), regimens=tuple(str(regimens[n]) for n in names),
                rules=tuple(rules), cycle_length_h=float(cycle_h), records=tuple(records), policies=policies)
