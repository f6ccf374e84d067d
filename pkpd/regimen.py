"""Compact dosing regimens and their NONMEM dose records.

A regimen is written as one or more doses joined by ``;``::

    <amount> <unit> [<duration> infusion|iv|bolus|oral|sc|im] [q<interval>] [x<count>] [@<start>] [cmt<n>]

for example ``"100 mg/m2 1h q21d x4"``, ``"75 mg/m2 1h q3w x6 @0"``,
``"5 ug/kg sc q24h x7 @24h cmt1"`` or ``"80 mg oral q24h x7"``. Matching is
case-insensitive and tolerant of extra whitespace (``"100mg/m2"`` and ``"@ 24h"``
work too).

- Units: ``mg``, ``ug``, ``g``, ``umol``, optionally per body-surface area or weight
  (``mg/m2``, ``mg/kg``, ``ug/kg``, ...).
- Times (duration, interval, start): a number with unit ``min``, ``h``, ``d`` or ``w``
  (default ``h``).
- A duration alone (``1h``) or with ``infusion``/``iv`` is a zero-order infusion; without a
  duration the dose is a bolus (``bolus``/``iv``) or an extravascular dose
  (``oral``/``sc``/``im``) into ``cmt`` (default 1, the depot of an absorption model).
- Defaults: one dose at time 0 into compartment 1.

Examples
--------
>>> reg = parse_regimen("100 mg/m2 1h q21d x4")
>>> rec = reg.to_records({"BSA": 1.8})
>>> rec[["TIME", "AMT", "RATE", "II", "ADDL"]].iloc[0].tolist()
[0.0, 180.0, 180.0, 504.0, 3.0]
>>> str(reg)
'100 mg/m2 1h infusion q3w x4'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .errors import ModelError

__all__ = ["DoseSpec", "Regimen", "parse_regimen", "SYNTAX"]

#: Grammar shown in error messages.
SYNTAX = ("<amount> <unit> [<duration> infusion|iv|bolus|oral|sc|im] [q<interval>] [x<count>] [@<start>] [cmt<n>], "
          "doses joined by ';' - e.g. '100 mg/m2 1h q21d x4' or '80 mg oral q24h x7; 40 mg oral @168h'")

# amount units -> (kind, factor to the kind's base: mg for mass, umol for molar)
_BASE_UNITS = {"mg": ("mass", 1.0), "ug": ("mass", 1e-3), "mcg": ("mass", 1e-3), "g": ("mass", 1e3),
               "umol": ("molar", 1.0), "mmol": ("molar", 1e3), "nmol": ("molar", 1e-3)}
_PER = {"m2": "BSA", "kg": "WT"}
_TIME_UNITS = {"min": 1.0 / 60.0, "h": 1.0, "d": 24.0, "w": 168.0}
_ROUTES = ("infusion", "iv", "bolus", "oral", "po", "sc", "im")
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_TIME_RE = re.compile(rf"^({_NUM})(min|h|d|w)?$")
_AMOUNT_RE = re.compile(rf"^({_NUM})(.*)$")


@dataclass(frozen=True)
class DoseSpec:
    """One dose line of a regimen (times in hours).

    Attributes
    ----------
    amount : float
        Amount per administration, in ``unit``.
    unit : str
        ``"mg"``, ``"ug"``, ``"g"``, ``"umol"``, optionally ``"/m2"`` or ``"/kg"``.
    duration : float
        Infusion duration (0 for a bolus or an extravascular dose).
    route : str
        ``"infusion"``, ``"bolus"``, ``"iv"`` (IV bolus), ``"oral"``, ``"sc"`` or ``"im"``.
    interval : float or None
        Time between administrations (``q``).
    count : int
        Number of administrations (``x``).
    start : float
        Time of the first administration (``@``).
    cmt : int
        Dosing compartment.
    """

    amount: float
    unit: str
    duration: float = 0.0
    route: str = "bolus"
    interval: float | None = None
    count: int = 1
    start: float = 0.0
    cmt: int = 1

    def __str__(self) -> str:
        parts = [f"{_fmt(self.amount)} {self.unit}"]
        if self.route == "infusion":
            parts.append(f"{_fmt_time(self.duration)} infusion")
        elif self.route != "bolus":
            parts.append(self.route)
        if self.interval is not None:
            parts.append(f"q{_fmt_time(self.interval)}")
        if self.count != 1:
            parts.append(f"x{self.count}")
        if self.start:
            parts.append(f"@{_fmt_time(self.start)}")
        if self.cmt != 1:
            parts.append(f"cmt{self.cmt}")
        return " ".join(parts)

    def amount_in(self, covariates: dict | None, dose_unit: str = "mg", molar_mass: float | None = None) -> float:
        """Amount per administration in ``dose_unit`` for a subject with ``covariates``.

        Per-BSA doses multiply by ``covariates["BSA"]`` (m2), per-weight doses by
        ``covariates["WT"]`` (kg); mass <-> molar conversion uses ``molar_mass`` (g/mol).
        """
        base, _, per = self.unit.partition("/")
        amount = self.amount
        if per:
            amount *= _covariate(covariates, _PER[per], self.unit)
        return amount * _unit_factor(base, dose_unit, molar_mass)


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen: one or more :class:`DoseSpec` lines."""

    items: tuple

    def __str__(self) -> str:
        return "; ".join(str(d) for d in self.items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def scaled(self, factor: float) -> Regimen:
        """The regimen with every amount multiplied by ``factor`` (e.g. 0.8 for a 20% reduction)."""
        if not _positive(factor):
            raise ModelError(f"dose scale factor must be a positive number, got {factor!r}")
        return Regimen(tuple(replace(d, amount=d.amount * float(factor)) for d in self.items))

    def delayed(self, hours: float) -> Regimen:
        """The regimen shifted later by ``hours`` (negative values move it earlier, not before 0)."""
        try:
            shift = float(hours)
        except (TypeError, ValueError):
            shift = float("nan")
        if not math.isfinite(shift):
            raise ModelError(f"delay must be a number of hours, got {hours!r}")
        out = tuple(replace(d, start=d.start + shift) for d in self.items)
        if any(d.start < 0 for d in out):
            raise ModelError(f"a delay of {hours:g} h would move a dose before time 0 in {str(self)!r}")
        return Regimen(out)

    def doses(self, covariates: dict | None = None, dose_unit: str = "mg",
              molar_mass: float | None = None) -> list[tuple]:
        """Every administration, sorted by time: ``(time, amount, rate, duration, cmt)``.

        ``amount`` is in ``dose_unit``; ``rate`` is amount per hour for infusions, else 0.
        """
        out = []
        for d in self.items:
            amount = d.amount_in(covariates, dose_unit, molar_mass)
            rate = amount / d.duration if d.duration > 0 else 0.0
            for k in range(d.count):
                out.append((d.start + k * (d.interval or 0.0), amount, rate, d.duration, d.cmt))
        return sorted(out, key=lambda x: (x[0], x[4]))

    def to_records(self, covariates: dict | None = None, dose_unit: str = "mg", molar_mass: float | None = None,
                   id=1) -> pd.DataFrame:
        """NONMEM dose records, one per dose line (repeats as ``ADDL``/``II``).

        Parameters
        ----------
        covariates : dict, optional
            Subject covariates; ``BSA`` (m2) for per-m2 doses, ``WT`` (kg) for per-kg doses.
        dose_unit : str
            Unit of ``AMT``: ``"mg"``, ``"ug"``, ``"g"`` or ``"umol"``.
        molar_mass : float, optional
            g/mol, needed to convert between mass and molar amounts.
        id : int or str
            Value of the ``ID`` column.

        Returns
        -------
        pandas.DataFrame
            Columns ``ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, DVID``.

        Raises
        ------
        ModelError
            A covariate needed for a per-BSA/per-weight dose is missing or invalid, or a
            molar conversion lacks ``molar_mass``.
        """
        rows = []
        for d in self.items:
            amount = d.amount_in(covariates, dose_unit, molar_mass)
            repeated = d.count > 1
            rows.append({
                "ID": id, "TIME": float(d.start), "DV": np.nan, "AMT": amount, "EVID": 1, "MDV": 1, "CMT": d.cmt,
                "RATE": amount / d.duration if d.duration > 0 else 0.0,
                "II": float(d.interval) if repeated else 0.0, "ADDL": d.count - 1, "SS": 0, "DVID": 0,
            })
        frame = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL",
                                            "SS", "DVID"])
        return frame.sort_values(["TIME", "CMT"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- parsing


def parse_regimen(text: str) -> Regimen:
    """Parse a compact regimen string (see the module docstring for the grammar).

    Raises
    ------
    ModelError
        The message quotes the text, marks the offending token and shows valid syntax.
    """
    if isinstance(text, Regimen):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ModelError(f"empty regimen {text!r}: expected {SYNTAX}")
    doses = []
    offset = 0
    segments = text.split(";")
    if len(segments) > 1 and not segments[-1].strip():
        segments = segments[:-1]  # tolerate a trailing ';'
    for segment in segments:
        if not segment.strip():
            _bad(text, offset + len(segment), 1, "empty dose before this ';'")
        doses.append(_parse_dose(text, segment, offset))
        offset += len(segment) + 1
    return Regimen(tuple(doses))


def _tokens(segment: str, offset: int) -> list[tuple[int, str]]:
    raw = [(m.start() + offset, m.group().lower()) for m in re.finditer(r"\S+", segment)]
    merged = []
    i = 0
    while i < len(raw):
        pos, tok = raw[i]
        if tok in ("@", "q", "x", "cmt") and i + 1 < len(raw):  # "@ 24h" -> "@24h"
            merged.append((pos, tok + raw[i + 1][1]))
            i += 2
            continue
        merged.append((pos, tok))
        i += 1
    return merged


def _parse_dose(text: str, segment: str, offset: int) -> DoseSpec:
    toks = _tokens(segment.replace("µ", "u").replace("μ", "u"), offset)
    pos, first = toks[0]
    m = _AMOUNT_RE.match(first)
    if not m:
        _bad(text, pos, len(first), f"expected an amount (a number), got {first!r}")
    amount = float(m.group(1))
    unit_text, unit_pos = m.group(2), pos + len(m.group(1))
    rest = toks[1:]
    if not unit_text:
        if not rest:
            _bad(text, pos, len(first), "missing dose unit after the amount")
        unit_pos, unit_text = rest[0]
        rest = rest[1:]
    unit = _parse_unit(text, unit_text, unit_pos)
    if not amount > 0:
        _bad(text, pos, len(m.group(1)), "the amount must be positive")

    fields: dict = {}
    route = None
    for pos, tok in rest:
        def once(key, value, pos=pos, tok=tok):
            if key in fields:
                _bad(text, pos, len(tok), f"{key} given twice")
            fields[key] = value

        if tok in _ROUTES:
            if route is not None:
                _bad(text, pos, len(tok), f"route given twice ({route!r} and {tok!r})")
            route = (pos, tok)
        elif tok.startswith("cmt"):
            n = tok[3:]
            if not n.isdigit() or int(n) < 1:
                _bad(text, pos, len(tok), "expected cmt<n> with an integer n >= 1, e.g. cmt2")
            once("cmt", int(n))
        elif tok.startswith("q"):
            once("interval", _parse_time(text, tok[1:], pos + 1, "interval", positive=True))
        elif tok.startswith("x"):
            n = tok[1:]
            if not n.isdigit() or int(n) < 1:
                _bad(text, pos, len(tok), "expected x<count> with an integer count >= 1, e.g. x4")
            once("count", int(n))
        elif tok.startswith("@"):
            once("start", _parse_time(text, tok[1:], pos + 1, "start time", positive=False))
        elif _TIME_RE.match(tok):
            once("duration", _parse_time(text, tok, pos, "duration", positive=True))
            fields["_duration_pos"] = (pos, tok)
        else:
            _bad(text, pos, len(tok), f"unknown token {tok!r}")

    duration = fields.get("duration", 0.0)
    if route is None:
        kind = "infusion" if duration > 0 else "bolus"
    else:
        rpos, rtok = route
        rtok = "oral" if rtok == "po" else rtok
        if rtok in ("infusion", "iv") and duration > 0:
            kind = "infusion"
        elif rtok == "infusion":
            _bad(text, rpos, len(route[1]), "an infusion needs a duration, e.g. '1h infusion'")
        elif duration > 0:
            dpos, dtok = fields["_duration_pos"]
            _bad(text, dpos, len(dtok), f"a duration needs an infusion, not {rtok!r} (e.g. '1h infusion')")
        else:
            kind = rtok
    count = fields.get("count", 1)
    interval = fields.get("interval")
    if count > 1 and interval is None:
        _bad(text, offset + len(segment) - len(segment.lstrip()), len(segment.strip()),
             f"{count} doses need an interval, e.g. 'q21d x{count}'")
    if interval is not None and count > 1 and duration > interval:
        _bad(text, offset + len(segment) - len(segment.lstrip()), len(segment.strip()),
             "the infusion duration is longer than the dosing interval")
    return DoseSpec(amount=amount, unit=unit, duration=duration, route=kind, interval=interval, count=count,
                    start=fields.get("start", 0.0), cmt=fields.get("cmt", 1))


def _parse_unit(text: str, unit: str, pos: int) -> str:
    base, sep, per = unit.partition("/")
    base = "ug" if base == "mcg" else base
    if base not in _BASE_UNITS or (sep and per not in _PER):
        accepted = "mg, ug, g, umol, optionally /m2 or /kg (e.g. mg/m2, ug/kg)"
        _bad(text, pos, len(unit), f"unknown dose unit {unit!r} (accepted: {accepted})")
    return f"{base}/{per}" if sep else base


def _parse_time(text: str, tok: str, pos: int, what: str, positive: bool) -> float:
    m = _TIME_RE.match(tok)
    if not m:
        _bad(text, pos, max(1, len(tok)), f"expected the {what} as a number with unit min, h, d or w (e.g. 24h, 21d, 3w, 30min), got {tok!r}")
    hours = float(m.group(1)) * _TIME_UNITS[m.group(2) or "h"]
    if positive and not hours > 0:
        _bad(text, pos, max(1, len(tok)), f"the {what} must be positive")
    return hours


def _bad(text: str, pos: int, length: int, problem: str):
    pointer = " " * pos + "^" * max(1, length)
    raise ModelError(f"cannot parse regimen {text!r}: {problem}\n  {text}\n  {pointer}\nexpected {SYNTAX}")


# ----------------------------------------------------------------------------- helpers


def _positive(x) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False


def _covariate(covariates: dict | None, name: str, unit: str) -> float:
    covariates = covariates or {}
    lookup = {str(k).upper(): v for k, v in covariates.items()}
    if name not in lookup:
        what = "body-surface area in m2" if name == "BSA" else "body weight in kg"
        raise ModelError(f"a dose in {unit} needs covariate {name} ({what}); got covariates "
                         f"{sorted(covariates) or 'none'}")
    value = lookup[name]
    if not _positive(value):
        raise ModelError(f"covariate {name} must be a positive number for a dose in {unit}, got {value!r}")
    return float(value)


def _unit_factor(base: str, dose_unit: str, molar_mass: float | None) -> float:
    target = str(dose_unit).strip().lower().replace("µ", "u")
    target = "ug" if target == "mcg" else target
    if target not in _BASE_UNITS:
        raise ModelError(f"unknown dose_unit {dose_unit!r} (accepted: mg, ug, g, umol)")
    kind_a, fa = _BASE_UNITS[base]
    kind_b, fb = _BASE_UNITS[target]
    if kind_a == kind_b:
        return fa / fb
    if not _positive(molar_mass):
        raise ModelError(f"converting a dose in {base} to {target} needs molar_mass (g/mol), got {molar_mass!r}")
    mm = float(molar_mass)
    # mg -> umol: x 1000 / molar_mass ; umol -> mg: x molar_mass / 1000
    return fa * (1000.0 / mm) / fb if kind_a == "mass" else fa * (mm / 1000.0) / fb


def _fmt(x: float) -> str:
    return format(float(x), ".12g")


def _fmt_time(hours: float) -> str:
    if hours > 0 and math.isclose(hours / 168.0, round(hours / 168.0), rel_tol=0, abs_tol=1e-9):
        return f"{_fmt(round(hours / 168.0))}w"
    if hours >= 48 and math.isclose(hours / 24.0, round(hours / 24.0), rel_tol=0, abs_tol=1e-9):
        return f"{_fmt(round(hours / 24.0))}d"
    if 0 < hours < 1 and math.isclose(hours * 60, round(hours * 60), rel_tol=0, abs_tol=1e-9):
        return f"{_fmt(round(hours * 60))}min"
    return f"{_fmt(hours)}h"
