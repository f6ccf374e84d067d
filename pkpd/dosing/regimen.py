"""Compact dosing regimens, for one drug or several, and their NONMEM dose records.

A regimen is one or more doses joined by ``;``; each dose may start with a drug name::

    [<drug>] <amount> <unit> [<duration>] [infusion|iv|bolus|oral|po|sc|im]
             [q<interval>|daily|weekly] [x<count>] [@<start>] [cmt<n>]

for example ``"100 mg/m2 1h q21d x4"``, ``"5 ug/kg sc q24h x7 @24h cmt1"``,
``"docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4"``,
``"filgrastim 5 ug/kg sc daily x10 @24h"``, ``"platelets 1 unit @240h"``,
``"darbepoetin 500 ug sc q3w"`` or ``"epoetin 40000 IU sc weekly x4"``. Matching is
case-insensitive (except ``MIU``, see below) and tolerant of extra whitespace
(``"100mg/m2"`` and ``"@ 24h"`` work too).

- Drug: an optional first word, a letter then letters, digits, ``_ - + .``
  (``docetaxel``, ``G-CSF``); stored lower-case. A dose without one has drug ``None``
  (a single-drug model card).
- Amount: a finite number > 0 and at most 1e15.
- Units: any amount unit of :mod:`pkpd.units` (``mg``, ``g``, ``ug``/``mcg``, ``ng``,
  ``mol``/``mmol``/``umol``/``nmol``/``pmol``, ``IU``/``kIU``/``MIU``, ``unit``/``units``
  for blood and cell products, ``cells``), optionally per body-surface area or weight
  (``mg/m2``, ``ug/kg``, ``IU/kg``). ``MIU`` (10^6 IU) must be written in capitals.
- Times (duration, interval, start): a number with unit ``min``, ``h``, ``d`` or ``w``
  (default ``h``), finite and at most 1e6 h. ``daily`` is ``q24h`` and ``weekly`` is
  ``q1w``. ``bid``/``tid``/``qid``/``qd``/``qod`` are refused: with ``x<count>`` they
  leave open whether the count is doses or days (write ``q12h x<doses>``).
- A duration alone (``1h``) or with ``infusion``/``iv`` is a zero-order infusion; without a
  duration the dose is a bolus (``bolus``/``iv``) or an extravascular dose
  (``oral``/``sc``/``im``).
- Count: ``x<count>`` administrations, 1 to 10000, ``q<interval>`` apart.
- Defaults: one dose at time 0; compartment: ``cmt<n>`` when given, otherwise see
  :meth:`Regimen.to_records` (1 for a single-drug regimen).

Examples
--------
>>> reg = parse_regimen("100 mg/m2 1h q21d x4")
>>> rec = reg.to_records({"BSA": 1.8})
>>> rec[["TIME", "AMT", "RATE", "II", "ADDL"]].iloc[0].tolist()
[0.0, 180.0, 180.0, 504.0, 3.0]
>>> str(reg)
'100 mg/m2 1h infusion q3w x4'
>>> two = parse_regimen("docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4")
>>> rec = two.to_records({"BSA": 2.0}, drugs={"docetaxel": DrugInput(cmt=1),
...                                            "pegfilgrastim": DrugInput(cmt=4, sc_cmt=3, dose_unit="ug")})
>>> rec[["DRUG", "TIME", "CMT", "AMT"]].values.tolist()
[['docetaxel', 0.0, 1, 150.0], ['pegfilgrastim', 24.0, 3, 6000.0]]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import ModelError
from ..units import (
    PER_BODY_SIZE,
    UnitError,
    amount_factor,
    hours_per,
    is_drug_name,
    normalise_amount_unit,
    parse_dose_unit,
    parse_quantity,
)

__all__ = ["DoseSpec", "DrugInput", "Regimen", "parse_regimen", "SYNTAX", "COLUMNS", "MAX_AMOUNT", "MAX_HOURS",
           "MAX_COUNT", "MAX_CMT"]

#: Grammar shown in error messages.
SYNTAX = ("[<drug>] <amount> <unit> [<duration> infusion|iv|bolus|oral|sc|im] [q<interval>|daily|weekly] [x<count>] "
          "[@<start>] [cmt<n>], doses joined by ';' - e.g. '100 mg/m2 1h q21d x4' or "
          "'docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4'")

#: Columns of :meth:`Regimen.to_records` (plus ``DRUG`` when a dose names a drug).
COLUMNS = ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "DVID"]

_ROUTES = ("infusion", "iv", "bolus", "oral", "po", "sc", "im")
_EXTRAVASCULAR = ("oral", "sc", "im")
_NAMED_INTERVALS = {"daily": 24.0, "weekly": 168.0}
_REFUSED_FREQUENCIES = {"bid": "q12h", "tid": "q8h", "qid": "q6h", "qd": "daily (q24h)", "od": "daily (q24h)",
                        "qod": "q48h"}
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_TIME_RE = re.compile(rf"^({_NUM})(min|h|d|w)?$")
_AMOUNT_RE = re.compile(rf"^({_NUM})(.*)$")
_SCHEDULE_RE = re.compile(r"^(q|x|cmt|@)\d")

#: Largest amount (in its unit), time (h), count and compartment number accepted.
MAX_AMOUNT = 1e15
MAX_HOURS = 1e6
MAX_COUNT = 10_000
MAX_CMT = 10_000

_UNITS_HELP = ("mg, g, ug/mcg, ng, mol, mmol, umol, nmol, pmol, IU, kIU, MIU, unit(s), cells, 10^9cells, "
               "optionally /m2 or /kg (e.g. mg/m2, ug/kg, IU/kg)")


@dataclass(frozen=True)
class DoseSpec:
    """One dose line of a regimen (times in hours).

    Attributes
    ----------
    amount : float
        Amount per administration, in ``unit``.
    unit : str
        An amount unit of :mod:`pkpd.units` (``"mg"``, ``"ug"``, ``"umol"``, ``"IU"``,
        ``"unit"``, ...), optionally ``"/m2"`` or ``"/kg"``.
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
    cmt : int or None
        Dosing compartment written in the regimen (``cmt<n>``); ``None``: chosen by
        :meth:`Regimen.to_records` (1, or the drug's :class:`DrugInput`).
    drug : str or None
        Drug name (lower-case), ``None`` for an unnamed dose.
    """

    amount: float
    unit: str
    duration: float = 0.0
    route: str = "bolus"
    interval: float | None = None
    count: int = 1
    start: float = 0.0
    cmt: int | None = None
    drug: str | None = None

    def _parts(self) -> list[tuple[str, str]]:
        """``(role, token)`` pairs of the canonical text."""
        parts = []
        if self.drug:
            parts.append(("drug", self.drug))
        unit = self.unit
        if unit == "unit" and self.amount != 1:
            unit = "units"
        parts += [("amount", _fmt(self.amount)), ("unit", unit)]
        if self.route == "infusion":
            parts += [("duration", _fmt_time(self.duration)), ("route", "infusion")]
        elif self.route != "bolus":
            parts.append(("route", self.route))
        if self.interval is not None:
            parts.append(("interval", f"q{_fmt_time(self.interval)}"))
        if self.count != 1:
            parts.append(("count", f"x{self.count}"))
        if self.start:
            parts.append(("start", f"@{_fmt_time(self.start)}"))
        if self.cmt is not None:
            parts.append(("cmt", f"cmt{self.cmt}"))
        return parts

    def __str__(self) -> str:
        return " ".join(tok for _, tok in self._parts())

    @property
    def last_time(self) -> float:
        """Time of the last administration, ``start + (count - 1) * interval`` (h)."""
        return self.start + (self.count - 1) * (self.interval or 0.0)

    def amount_in(self, covariates: dict | None, dose_unit: str = "mg", molar_mass: float | None = None, *,
                  unit_amount=None) -> float:
        """Amount per administration in ``dose_unit`` for a subject with ``covariates``.

        ``amount x size x f``, where ``size`` is ``covariates["BSA"]`` (m2) for a per-m2
        dose, ``covariates["WT"]`` (kg) for a per-kg dose and 1 otherwise, and ``f`` is
        :func:`pkpd.units.amount_factor` (mass <-> molar needs ``molar_mass`` in g/mol;
        a product ``unit`` needs ``unit_amount``, e.g. ``"3e11 cells"``).

        Raises
        ------
        ModelError
            A missing or invalid covariate, an impossible conversion, or a non-finite result.
        """
        base, per = parse_dose_unit(self.unit)
        amount = self.amount
        if per:
            amount *= _covariate(covariates, PER_BODY_SIZE[per], self.unit)
        amount *= amount_factor(base, dose_unit, molar_mass, unit_amount=unit_amount)
        if not (math.isfinite(amount) and amount > 0):
            raise ModelError(f"the dose {str(self)!r} is {amount!r} {dose_unit}: not a finite positive amount")
        return amount


@dataclass(frozen=True)
class DrugInput:
    """Where and how one named drug of a regimen enters a model (for :meth:`Regimen.to_records`).

    Attributes
    ----------
    cmt : int
        Compartment that receives the drug's intravascular doses (``infusion``, ``iv``,
        ``bolus``): the central compartment of its PK model, or the model state a
        product is added to (e.g. circulating platelets for a platelet transfusion).
    dose_unit : str
        Amount unit of ``AMT`` the model expects for this drug (any amount unit of
        :mod:`pkpd.units`: ``"mg"``, ``"ug"``, ``"umol"``, ``"IU"``, ``"10^9cells"``, ...).
    molar_mass : float, optional
        g/mol, needed when the regimen's unit and ``dose_unit`` are mass and molar.
    sc_cmt : int, optional
        Compartment that receives extravascular doses (``sc``, ``im``, ``oral``): the
        absorption depot. ``None``: the drug takes no extravascular dose (such a dose is
        an error, unless the dose line gives ``cmt<n>``).
    unit_amount : float, str or tuple, optional
        What one product ``unit`` holds (``"3e11 cells"``, or a number in ``dose_unit``),
        needed for doses written in ``unit``/``units``.

    A ``cmt<n>`` written on a dose line overrides ``cmt`` and ``sc_cmt``.
    """

    cmt: int
    dose_unit: str = "mg"
    molar_mass: float | None = None
    sc_cmt: int | None = None
    unit_amount: float | str | tuple | None = None

    def __post_init__(self):
        for name in ("cmt", "sc_cmt"):
            value = getattr(self, name)
            if name == "sc_cmt" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_CMT:
                raise ModelError(f"DrugInput.{name} must be an integer compartment 1..{MAX_CMT}, got {value!r}")
        object.__setattr__(self, "dose_unit", normalise_amount_unit(self.dose_unit, "DrugInput.dose_unit"))
        if self.molar_mass is not None and not _positive(self.molar_mass):
            raise ModelError(f"DrugInput.molar_mass must be a positive number of g/mol, got {self.molar_mass!r}")
        if isinstance(self.unit_amount, str):
            parse_quantity(self.unit_amount, "DrugInput.unit_amount")
        elif self.unit_amount is not None and not isinstance(self.unit_amount, tuple) \
                and not _positive(self.unit_amount):
            raise ModelError(f"DrugInput.unit_amount must be a positive number of {self.dose_unit} or a "
                             f"string like '3e11 cells', got {self.unit_amount!r}")

    def compartment(self, route: str) -> int | None:
        """Compartment of a dose given by ``route`` (``None``: the drug has no extravascular input)."""
        return self.sc_cmt if route in _EXTRAVASCULAR else self.cmt


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen: one or more :class:`DoseSpec` lines.

    ``text`` (the parsed string) and ``spans`` (token positions) are kept for error
    messages only: they take no part in equality.
    """

    items: tuple
    text: str | None = field(default=None, compare=False, repr=False)
    spans: tuple | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return "; ".join(str(d) for d in self.items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def drugs(self) -> tuple[str, ...]:
        """Distinct drug names, in order of appearance (unnamed doses are left out)."""
        return tuple(dict.fromkeys(d.drug for d in self.items if d.drug))

    @property
    def last_time(self) -> float:
        """Time of the last administration of any dose line (h)."""
        return max(d.last_time for d in self.items)

    def for_drug(self, drug: str) -> Regimen:
        """The dose lines of one drug (case-insensitive)."""
        key = self._drug_key(drug)
        return Regimen(tuple(d for d in self.items if d.drug == key))

    def _drug_key(self, drug) -> str:
        key = str(drug).strip().lower()
        if key not in self.drugs:
            raise ModelError(f"drug {drug!r} is not in regimen {str(self)!r} "
                             f"(drugs: {', '.join(self.drugs) or 'none'})")
        return key

    def _targets(self, drug) -> list[bool]:
        if drug is None:
            return [True] * len(self.items)
        key = self._drug_key(drug)
        return [d.drug == key for d in self.items]

    def scaled(self, factor: float, drug: str | None = None) -> Regimen:
        """The regimen with amounts multiplied by ``factor`` (e.g. 0.8 for a 20% reduction).

        ``drug`` limits the change to that drug's doses (``scaled(0.8, drug="docetaxel")``).
        """
        if not _positive(factor):
            raise ModelError(f"dose scale factor must be a positive number, got {factor!r}")
        out = []
        for d, hit in zip(self.items, self._targets(drug)):
            if hit:
                amount = d.amount * float(factor)
                if not (amount <= MAX_AMOUNT and amount > 0):
                    raise ModelError(f"scaling {str(d)!r} by {factor!r} gives an amount of {amount!r}, outside "
                                     f"(0, {MAX_AMOUNT:g}]")
                d = replace(d, amount=amount)
            out.append(d)
        return Regimen(tuple(out))

    def delayed(self, hours: float, drug: str | None = None) -> Regimen:
        """The regimen shifted later by ``hours`` (negative values move it earlier, not before 0).

        ``drug`` limits the shift to that drug's doses (e.g. delay only the G-CSF).
        """
        try:
            shift = float(hours)
        except (TypeError, ValueError):
            shift = float("nan")
        if not math.isfinite(shift):
            raise ModelError(f"delay must be a number of hours, got {hours!r}")
        out = tuple(replace(d, start=d.start + shift) if hit else d for d, hit in zip(self.items, self._targets(drug)))
        if any(d.start < 0 for d in out):
            raise ModelError(f"a delay of {hours:g} h would move a dose before time 0 in {str(self)!r}")
        if any(d.last_time > MAX_HOURS for d in out):
            raise ModelError(f"a delay of {hours:g} h would move a dose past {MAX_HOURS:g} h in {str(self)!r}")
        return Regimen(out)

    # ------------------------------------------------------------------ dose records

    def _source(self) -> tuple[str, list[dict]]:
        """The text to quote in errors and each dose line's token spans in it."""
        if self.text is not None and self.spans is not None and len(self.spans) == len(self.items):
            return self.text, [dict(s) for s in self.spans]
        text, spans = "", []
        for d in self.items:
            if text:
                text += "; "
            roles = {}
            for k, (role, tok) in enumerate(d._parts()):
                if k:
                    text += " "
                roles[role] = (len(text), len(tok))
                text += tok
            start = roles["amount"][0] if "drug" not in roles else roles["drug"][0]
            roles["dose"] = (start, len(text) - start)
            spans.append(roles)
        return text, spans

    def _error(self, i: int, roles: tuple, problem: str) -> ModelError:
        text, spans = self._source()
        pos, length = next((spans[i][r] for r in roles if r in spans[i]), spans[i]["dose"])
        pointer = " " * pos + "^" * max(1, length)
        return ModelError(f"cannot dose regimen {text!r}: {problem}\n  {text}\n  {pointer}")

    def _resolve(self, covariates, dose_unit, molar_mass, cmt, unit_amount, drugs) -> list[tuple]:
        """``(dose line, drug label, amount, compartment)`` per dose line."""
        if drugs is None:
            if len(self.drugs) > 1:
                second = next(i for i, d in enumerate(self.items) if d.drug == self.drugs[1])
                raise self._error(second, ("drug",), f"this regimen names several drugs ({', '.join(self.drugs)}): "
                                  "give drugs={name: DrugInput(...)} to say where each one goes")
            default = _compartment(cmt if cmt is not None else 1, "cmt")
            unit = normalise_amount_unit("mg" if dose_unit is None else dose_unit, "dose_unit")
            inputs = None
        else:
            given = [name for name, value in (("dose_unit", dose_unit), ("molar_mass", molar_mass), ("cmt", cmt),
                                              ("unit_amount", unit_amount)) if value is not None]
            if given:
                raise ModelError(f"with drugs=..., give {', '.join(given)} per drug in its DrugInput, not as "
                                 "arguments of to_records")
            inputs = _drug_inputs(drugs)
        out = []
        for i, d in enumerate(self.items):
            if inputs is None:
                label, target = d.drug, d.cmt if d.cmt is not None else default
                args = (unit, molar_mass, unit_amount)
            else:
                if d.drug is None:
                    if len(inputs) != 1:
                        raise self._error(i, ("amount",), "this dose names no drug: start it with one of "
                                          f"{', '.join(n for n, _ in inputs.values())}")
                    label, inp = next(iter(inputs.values()))
                elif d.drug not in inputs:
                    raise self._error(i, ("drug",), f"unknown drug {d.drug!r} (drugs given: "
                                      f"{', '.join(n for n, _ in inputs.values())})")
                else:
                    label, inp = inputs[d.drug]
                target = d.cmt if d.cmt is not None else inp.compartment(d.route)
                if target is None:
                    raise self._error(i, ("route",), f"drug {label!r} takes no {d.route} dose: give "
                                      f"DrugInput(sc_cmt=...) (its depot compartment) or write cmt<n> on the dose")
                args = (inp.dose_unit, inp.molar_mass, inp.unit_amount)
            try:
                amount = d.amount_in(covariates, args[0], args[1], unit_amount=args[2])
            except ModelError as err:
                raise self._error(i, ("unit",), str(err)) from None
            out.append((d, label, amount, target))
        return out

    def doses(self, covariates: dict | None = None, dose_unit: str | None = None, molar_mass: float | None = None,
              *, cmt: int | None = None, unit_amount=None, drugs: Mapping | None = None) -> list[tuple]:
        """Every administration, sorted by time: ``(time, amount, rate, duration, cmt)``.

        ``amount`` is in the dose unit (``dose_unit``, default mg, or each drug's);
        ``rate`` is amount per hour for infusions, else 0. The keywords are those of
        :meth:`to_records`.
        """
        out = []
        for d, _, amount, target in self._resolve(covariates, dose_unit, molar_mass, cmt, unit_amount, drugs):
            rate = amount / d.duration if d.duration > 0 else 0.0
            for k in range(d.count):
                out.append((d.start + k * (d.interval or 0.0), amount, rate, d.duration, target))
        return sorted(out, key=lambda x: (x[0], x[4]))

    def to_records(self, covariates: dict | None = None, dose_unit: str | None = None,
                   molar_mass: float | None = None, id=1, *, cmt: int | None = None, unit_amount=None,
                   drugs: Mapping | None = None) -> pd.DataFrame:
        """NONMEM dose records, one per dose line (repeats as ``ADDL``/``II``).

        Two ways to say where the doses go:

        - single drug (``drugs=None``): every dose goes to its ``cmt<n>``, else to ``cmt``
          (default 1), in ``dose_unit`` (default ``"mg"``) with ``molar_mass`` and
          ``unit_amount``. The doses may name at most one drug.
        - several drugs: ``drugs`` maps each drug name of the regimen (case-insensitive)
          to a :class:`DrugInput` (or a dict of its fields). An infusion or IV/bolus dose
          goes to the drug's ``cmt``, an ``sc``/``im``/``oral`` dose to its ``sc_cmt``
          (``cmt<n>`` on the dose line wins), in the drug's ``dose_unit``. An unnamed
          dose is allowed only when ``drugs`` has one entry. ``dose_unit``,
          ``molar_mass``, ``cmt`` and ``unit_amount`` must then not be given.

        Parameters
        ----------
        covariates : dict, optional
            Subject covariates; ``BSA`` (m2) for per-m2 doses, ``WT`` (kg) for per-kg doses.
        dose_unit : str, optional
            Unit of ``AMT`` (single-drug use): any amount unit of :mod:`pkpd.units`; default mg.
        molar_mass : float, optional
            g/mol, needed to convert between mass and molar amounts.
        id : int or str
            Value of the ``ID`` column.
        cmt : int, optional
            Compartment of doses without ``cmt<n>`` (single-drug use; default 1).
        unit_amount : float, str or tuple, optional
            What one product ``unit`` holds, e.g. ``"3e11 cells"`` (single-drug use).
        drugs : mapping, optional
            Drug name -> :class:`DrugInput` (multi-drug use).

        Returns
        -------
        pandas.DataFrame
            Columns ``ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, DVID``, and
            ``DRUG`` (the drug's name; ``None`` for an unnamed dose) when a dose names a
            drug or ``drugs`` is given. Sorted by ``TIME`` then ``CMT``.

        Raises
        ------
        ModelError
            A covariate needed for a per-BSA/per-weight dose is missing or invalid, a
            conversion lacks ``molar_mass``/``unit_amount`` or cannot be made, a drug is
            not in ``drugs``, or several drugs are named without ``drugs``; the message
            quotes the regimen with a caret under the token at fault.
        """
        rows = []
        resolved = self._resolve(covariates, dose_unit, molar_mass, cmt, unit_amount, drugs)
        for d, label, amount, target in resolved:
            repeated = d.count > 1
            rows.append({
                "ID": id, "TIME": float(d.start), "DV": np.nan, "AMT": amount, "EVID": 1, "MDV": 1, "CMT": target,
                "RATE": amount / d.duration if d.duration > 0 else 0.0,
                "II": float(d.interval) if repeated else 0.0, "ADDL": d.count - 1, "SS": 0, "DVID": 0,
                "DRUG": label,
            })
        columns = COLUMNS + (["DRUG"] if drugs is not None or self.drugs else [])
        frame = pd.DataFrame(rows, columns=columns)
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
    doses, spans = [], []
    offset = 0
    segments = text.split(";")
    if len(segments) > 1 and not segments[-1].strip():
        segments = segments[:-1]  # tolerate a trailing ';'
    for segment in segments:
        if not segment.strip():
            _bad(text, offset + len(segment), 1, "empty dose before this ';'")
        dose, roles = _parse_dose(text, segment, offset)
        doses.append(dose)
        spans.append(tuple(roles.items()))
        offset += len(segment) + 1
    return Regimen(tuple(doses), text=text, spans=tuple(spans))


def _tokens(segment: str, offset: int) -> list[tuple[int, str, str]]:
    """``(position, lower-case token, token as written)``; ``"@ 24h"`` -> ``"@24h"``."""
    raw = [(m.start() + offset, m.group()) for m in re.finditer(r"\S+", segment)]
    merged = []
    i = 0
    while i < len(raw):
        pos, tok = raw[i]
        if tok.lower() in ("@", "q", "x", "cmt") and i + 1 < len(raw):
            tok = tok + raw[i + 1][1]
            i += 1
        merged.append((pos, tok.lower(), tok))
        i += 1
    return merged


def _parse_dose(text: str, segment: str, offset: int) -> tuple[DoseSpec, dict]:
    toks = _tokens(segment.replace("µ", "u").replace("μ", "u"), offset)
    roles: dict = {}
    start = toks[0][0]
    roles["dose"] = (start, offset + len(segment.rstrip()) - start)
    drug = None
    pos, first, orig = toks[0]
    if not _AMOUNT_RE.match(first):
        if not is_drug_name(orig) or first in _ROUTES or first in _NAMED_INTERVALS or _SCHEDULE_RE.match(first):
            _bad(text, pos, len(first), f"expected an amount (a number) or a drug name, got {orig!r}")
        drug = first
        roles["drug"] = (pos, len(first))
        if len(toks) == 1:
            _bad(text, pos, len(first), f"expected an amount (a number) after the drug name {orig!r}")
        toks = toks[1:]
        pos, first, orig = toks[0]
        if not _AMOUNT_RE.match(first):
            _bad(text, pos, len(first), f"expected an amount (a number) after the drug name {drug!r}, got {orig!r}")
    m = _AMOUNT_RE.match(first)
    number = m.group(1)
    amount = float(number)
    roles["amount"] = (pos, len(number))
    unit_text, unit_pos = orig[len(number):], pos + len(number)
    rest = toks[1:]
    if not unit_text:
        if not rest:
            _bad(text, pos, len(first), "missing dose unit after the amount")
        unit_pos, _, unit_text = rest[0]
        rest = rest[1:]
    unit = _parse_unit(text, unit_text, unit_pos)
    roles["unit"] = (unit_pos, len(unit_text))
    if not amount > 0:
        _bad(text, pos, len(number), "the amount must be positive")
    if not (math.isfinite(amount) and amount <= MAX_AMOUNT):
        _bad(text, pos, len(number), f"the amount {number} is not a finite number of at most {MAX_AMOUNT:g}")

    fields: dict = {}
    route = None
    for pos, tok, orig in rest:
        def once(key, value, pos=pos, tok=tok):
            if key in fields:
                _bad(text, pos, len(tok), f"{key} given twice")
            fields[key] = value
            roles[key] = (pos, len(tok))

        if tok in _ROUTES:
            if route is not None:
                _bad(text, pos, len(tok), f"route given twice ({route[1]!r} and {tok!r})")
            route = (pos, tok)
            roles["route"] = (pos, len(tok))
        elif tok in _NAMED_INTERVALS:
            once("interval", _NAMED_INTERVALS[tok])
        elif tok in _REFUSED_FREQUENCIES:
            _bad(text, pos, len(tok), f"{tok!r} is not accepted: with x<count> it leaves open whether the count "
                 f"is doses or days; write {_REFUSED_FREQUENCIES[tok]} and x<number of doses>")
        elif tok.startswith("cmt"):
            n = tok[3:]
            if not n.isdigit() or not 1 <= int(n) <= MAX_CMT:
                _bad(text, pos, len(tok), f"expected cmt<n> with an integer n from 1 to {MAX_CMT}, e.g. cmt2")
            once("cmt", int(n))
        elif tok.startswith("q"):
            once("interval", _parse_time(text, tok[1:], pos + 1, "interval", positive=True))
        elif tok.startswith("x"):
            n = tok[1:]
            if not n.isdigit() or not 1 <= int(n) <= MAX_COUNT:
                _bad(text, pos, len(tok), f"expected x<count> with an integer count from 1 to {MAX_COUNT}, e.g. x4")
            once("count", int(n))
        elif tok.startswith("@"):
            once("start", _parse_time(text, tok[1:], pos + 1, "start time", positive=False))
        elif _TIME_RE.match(tok):
            once("duration", _parse_time(text, tok, pos, "duration", positive=True))
        else:
            _bad(text, pos, len(tok), f"unknown token {orig!r}")

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
            dpos, dlen = roles["duration"]
            _bad(text, dpos, dlen, f"a duration needs an infusion, not {rtok!r} (e.g. '1h infusion')")
        else:
            kind = rtok
    count = fields.get("count", 1)
    interval = fields.get("interval")
    whole = roles["dose"]
    if count > 1 and interval is None:
        _bad(text, *whole, f"{count} doses need an interval, e.g. 'q21d x{count}'")
    if interval is not None and count > 1 and duration > interval:
        _bad(text, *whole, "the infusion duration is longer than the dosing interval")
    dose = DoseSpec(amount=amount, unit=unit, duration=duration, route=kind, interval=interval, count=count,
                    start=fields.get("start", 0.0), cmt=fields.get("cmt"), drug=drug)
    if dose.last_time > MAX_HOURS:
        _bad(text, *whole, f"the last administration would be at {dose.last_time:g} h, after {MAX_HOURS:g} h")
    return dose, roles


def _parse_unit(text: str, unit: str, pos: int) -> str:
    try:
        base, per = parse_dose_unit(unit)
    except UnitError as err:
        if "ambiguous" in str(err):
            _bad(text, pos, len(unit), f"ambiguous dose unit {unit!r}: write MIU for 10^6 IU")
        _bad(text, pos, len(unit), f"unknown dose unit {unit!r} (accepted: {_UNITS_HELP})")
    return f"{base}/{per}" if per else base


def _parse_time(text: str, tok: str, pos: int, what: str, positive: bool) -> float:
    m = _TIME_RE.match(tok)
    if not m:
        _bad(text, pos, max(1, len(tok)), f"expected the {what} as a number with unit min, h, d or w "
             f"(e.g. 24h, 21d, 3w, 30min), got {tok!r}")
    hours = float(m.group(1)) * hours_per(m.group(2) or "h")
    if positive and not hours > 0:
        _bad(text, pos, max(1, len(tok)), f"the {what} must be positive")
    if not (math.isfinite(hours) and hours <= MAX_HOURS):
        _bad(text, pos, max(1, len(tok)), f"the {what} {tok!r} is not a finite time of at most {MAX_HOURS:g} h")
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


def _compartment(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_CMT:
        raise ModelError(f"{what} must be an integer compartment 1..{MAX_CMT}, got {value!r}")
    return int(value)


def _drug_inputs(drugs) -> dict:
    """lower-case name -> (name as given, DrugInput)."""
    if not isinstance(drugs, Mapping) or not drugs:
        raise ModelError(f"drugs must map drug names to DrugInput(cmt=..., ...), got {drugs!r}")
    out = {}
    for name, value in drugs.items():
        if not is_drug_name(name):
            raise ModelError(f"drugs: {name!r} is not a drug name (a letter, then letters, digits, '_', '-', '+', '.')")
        if isinstance(value, Mapping):
            try:
                value = DrugInput(**value)
            except TypeError as err:
                raise ModelError(f"drugs[{name!r}]: {err} (fields: cmt, dose_unit, molar_mass, sc_cmt, "
                                 "unit_amount)") from None
        if not isinstance(value, DrugInput):
            raise ModelError(f"drugs[{name!r}] must be a DrugInput or a dict of its fields, got {value!r}")
        key = name.lower()
        if key in out:
            raise ModelError(f"drugs: {name!r} given twice (names are case-insensitive)")
        out[key] = (name, value)
    return out


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
