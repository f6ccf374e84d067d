"""The unit registry: every unit pkpd reads, converts or writes.

One table per kind of quantity, each unit mapped to ``(dimension, factor)`` where
``factor`` takes a value in the unit to the dimension's base unit. The tables are
built once at import and never changed at run time; other modules (datasets, model
cards, regimens) convert through the functions below.

Unit strings are matched case-insensitively, ignoring spaces, with ``µ``/``μ`` read as
``u``, ``mcg`` as ``ug`` and ``²`` as ``2``. One exception: the amount ``MIU``
(10^6 IU, e.g. interferon) and a milli-IU differ only in case, so an amount written
``miu`` is refused as ambiguous (concentrations have no such clash: ``mIU/mL``).

Kinds, base units and canonical units
-------------------------------------
- **time** (:data:`ALL_TIME_UNITS`, :func:`hours_per`): ``min``, ``h``, ``d``, ``w``;
  canonical h. A dataset's TIME column may be in h or d only (:data:`TIME_UNITS`,
  :func:`time_factor`).
- **dose amounts** (:data:`AMOUNT_UNITS`), by dimension:

  - mass, base mg: ``g`` = 10^3 mg, ``mg``, ``ug`` (``mcg``) = 10^-3 mg, ``ng`` = 10^-6 mg;
  - molar, base umol: ``mol``, ``mmol``, ``umol``, ``nmol``, ``pmol`` (powers of 10^3);
    mass <-> molar needs the molar mass ``M`` in g/mol:
    ``n[umol] = m[mg] x 1000 / M`` (1 mg = 10^-3 g; 10^-3 g / M mol = 10^3/M umol);
  - activity, base IU (WHO International Units, e.g. epoetin): ``IU``, ``kIU`` = 10^3 IU,
    ``MIU`` = 10^6 IU. An activity converts only to an activity: its mass depends on
    the product's specific activity, which is not a unit property;
  - product units, base ``unit`` (``units``): a blood or cell product (a platelet or red
    cell unit). One unit stands for a quantity the *caller* supplies
    (``unit_amount``, e.g. ``"3e11 cells"`` for an apheresis platelet unit, AABB
    standard >= 3.0 x 10^11 platelets); without it a unit converts only to units;
  - cells, base cells: ``cells``, ``10^6cells``, ``10^9cells``, ``10^11cells``.

- **per-body-size doses** (:func:`parse_dose_unit`): ``<amount unit>/m2`` (per m^2 of
  body-surface area, covariate ``BSA``) and ``<amount unit>/kg`` (per kg of body
  weight, covariate ``WT``), see :data:`PER_BODY_SIZE`.
- **concentrations** (:data:`CONCENTRATION_UNITS`), by dimension:

  - mass, base mg/L: ``g/L``, ``mg/mL`` = 10^3; ``mg/dL`` = 10; ``mg/L`` = ``ug/mL`` = 1;
    ``ug/L`` = ``ng/mL`` = 10^-3; ``ng/L`` = ``pg/mL`` = 10^-6;
  - molar, base umol/L: ``mmol/L`` = ``mM`` = 10^3; ``umol/L`` = ``uM`` = 1;
    ``nmol/L`` = ``nM`` = 10^-3; ``pmol/L`` = ``pM`` = 10^-6; mass <-> molar:
    ``c[mg/L] = c[umol/L] x M / 1000``;
  - activity, base IU/L: ``IU/mL`` = 10^3; ``IU/L`` = ``mIU/mL`` = 1.

- **observation types** (:data:`OBSERVATION_UNITS`; value in the canonical unit = value
  in the declared unit x factor):

  - ``CONC`` and ``CONC:<drug>`` (per-drug concentration outputs of a multi-drug model,
    e.g. ``CONC:docetaxel``; same units as CONC): canonical **mg/L**; mass and molar
    concentration units;
  - ``GCSF`` (granulocyte colony-stimulating factor, endogenous or filgrastim /
    pegfilgrastim): canonical **ng/mL**. Assays often report pg/mL (endogenous
    baseline ~20-60 pg/mL), but ng/mL is the unit of the published G-CSF PK/PD
    parameters this package encodes (Krzyzanski 2010: KD 1.27 ng/mL, SC1 3.21 ng/mL,
    baseline 0.0246 ng/mL; Wang 2001: EC50 4.72 ng/mL; Craig 2016: G1ss 0.025 ng/mL)
    and the unit a G-CSF dose in ug over a volume in L gives without a factor
    (1 ug/L = 1 ng/mL). Factors: 1 pg/mL = 1 ng/L = 10^-3 ng/mL; 1 ug/L = 1 ng/mL;
    1 ug/mL = 1 mg/L = 10^3 ng/mL; molar units need the molar mass (filgrastim
    18.8 kDa, :data:`FILGRASTIM_MOLAR_MASS`: 1 nM = 18.8 ng/mL, Melhem 2018 via
    Harrold 2020: 1 ug = 53.2 pmol);
  - ``EPO`` (erythropoietin / ESA activity): canonical **IU/L** (= mIU/mL), the unit of
    Perez-Ruixo 2008 (SC50 7.61 IU/L);
  - blood counts ``ANC``, ``PLT``, ``WBC``: canonical **10^9/L**; 1 cell/uL = 1 cell/mm^3
    = 10^6 cells/L = 10^-3 x 10^9/L; ``10^3/uL`` = ``K/uL`` = ``10^6/mL`` = 10^9/L;
  - ``HGB``: canonical **g/dL**; 1 g/L = 0.1 g/dL; 1 mmol/L = 1.611 g/dL (haemoglobin
    monomer, 16.11 g/mmol, the factor behind the CTCAE v5.0 anaemia table:
    10.0 g/dL <-> 6.2 mmol/L).

  The canonical units of counts and HGB are those of the CTCAE v5.0 grading tables
  (MODELS.md section 6.1).

Errors
------
Every refusal raises :class:`UnitError`, which is both a
:class:`~pkpd.errors.DatasetError` and a :class:`~pkpd.errors.ModelError`, so data
readers and model code can catch the family they already handle. Its message names
the argument, the unit given and what is accepted. No function returns a non-finite
or non-positive factor.

References
----------
National Cancer Institute. Common Terminology Criteria for Adverse Events (CTCAE) v5.0, 2017.
Krzyzanski W et al. J Clin Pharmacol 2010;50(9 Suppl):101S-112S. doi:10.1177/0091270010376966.
Wang B et al. J Pharmacokinet Pharmacodyn 2001;28(4):321-342.
Harrold JM et al. Clin Transl Sci 2020;13(4):807-817. doi:10.1111/cts.12777.
Perez-Ruixo JJ, Krzyzanski W, Hing J. Clin Pharmacokinet 2008;47(6):399-415.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from .errors import DatasetError, ModelError

__all__ = [
    "UnitError", "amount_factor", "concentration_factor", "parse_dose_unit", "parse_quantity", "time_factor",
    "hours_per",
    "dose_factor", "data_dose_units", "stored_amount_unit", "unit_factor", "convert_units", "canonical_unit", "accepted_units", "normalise_unit",
    "normalise_amount_unit", "normalise_concentration_unit", "normalise_time_unit", "amount_dimension",
    "concentration_dimension", "observation_units", "observation_kind", "conc_drug", "is_drug_name",
    "OBSERVATION_UNITS", "DEFAULT_OBSERVATION_TYPES", "COUNT_TYPES", "CONCENTRATION_TYPES", "TIME_UNITS",
    "ALL_TIME_UNITS",
    "DOSE_UNITS", "AMOUNT_UNITS", "CONCENTRATION_UNITS", "PER_BODY_SIZE", "HGB_MMOL_TO_G_DL",
    "FILGRASTIM_MOLAR_MASS",
]


class UnitError(DatasetError, ModelError):
    """An unknown unit or an impossible conversion.

    Derives from both :class:`~pkpd.errors.DatasetError` (data readers) and
    :class:`~pkpd.errors.ModelError` (model cards, regimens).
    """


#: Molar mass of the haemoglobin monomer used for mmol/L -> g/dL, in g/mmol / 10.
HGB_MMOL_TO_G_DL = 1.611

#: Molar mass of filgrastim (r-metHuG-CSF), g/mol: 18.8 kDa (MODELS.md; 1 ug = 53.2 pmol).
FILGRASTIM_MOLAR_MASS = 18_800.0

# ----------------------------------------------------------------------------- tables

#: Time units (with aliases) -> hours: the whole registry (see :func:`hours_per`).
ALL_TIME_UNITS = MappingProxyType({
    "h": 1.0, "hour": 1.0, "hours": 1.0, "hr": 1.0,
    "d": 24.0, "day": 24.0, "days": 24.0,
    "min": 1.0 / 60.0, "minute": 1.0 / 60.0, "minutes": 1.0 / 60.0,
    "w": 168.0, "week": 168.0, "weeks": 168.0,
})
_TIME_CANONICAL = {"h": "h", "hour": "h", "hours": "h", "hr": "h", "d": "d", "day": "d", "days": "d",
                   "min": "min", "minute": "min", "minutes": "min", "w": "w", "week": "w", "weeks": "w"}

#: Units a dataset's TIME and II columns may be declared in -> hours (h or d; see
#: :func:`time_factor`; every time unit is in :data:`ALL_TIME_UNITS`).
TIME_UNITS = {"h": 1.0, "hour": 1.0, "hours": 1.0, "hr": 1.0, "d": 24.0, "day": 24.0, "days": 24.0}

#: Mass units a dataset's AMT column may be declared in -> mg (see :func:`dose_factor`;
#: every amount unit, molar and IU included, is in :data:`AMOUNT_UNITS`).
DOSE_UNITS = {"mg": 1.0, "ug": 1e-3, "mcg": 1e-3, "g": 1e3}

#: Dose amount units -> (dimension, factor to the dimension's base: mg, umol, IU, unit, cells).
AMOUNT_UNITS = MappingProxyType({
    "g": ("mass", 1e3), "mg": ("mass", 1.0), "ug": ("mass", 1e-3), "ng": ("mass", 1e-6),
    "mol": ("molar", 1e6), "mmol": ("molar", 1e3), "umol": ("molar", 1.0), "nmol": ("molar", 1e-3),
    "pmol": ("molar", 1e-6),
    "IU": ("activity", 1.0), "kIU": ("activity", 1e3), "MIU": ("activity", 1e6),
    "unit": ("product", 1.0),
    "cells": ("cells", 1.0), "10^6cells": ("cells", 1e6), "10^9cells": ("cells", 1e9),
    "10^11cells": ("cells", 1e11),
})
_AMOUNT_ALIASES = {"mcg": "ug", "units": "unit", "cell": "cells", "1e6cells": "10^6cells",
                   "1e9cells": "10^9cells", "1e11cells": "10^11cells", "x10^6cells": "10^6cells",
                   "x10^9cells": "10^9cells", "x10^11cells": "10^11cells"}
_AMOUNT_BASE = {"mass": "mg", "molar": "umol", "activity": "IU", "product": "unit", "cells": "cells"}

#: Concentration units -> (dimension, factor to the dimension's base: mg/L, umol/L, IU/L).
CONCENTRATION_UNITS = MappingProxyType({
    "mg/L": ("mass", 1.0), "ug/mL": ("mass", 1.0), "ug/L": ("mass", 1e-3), "ng/mL": ("mass", 1e-3),
    "ng/L": ("mass", 1e-6), "pg/mL": ("mass", 1e-6), "g/L": ("mass", 1e3), "mg/mL": ("mass", 1e3),
    "mg/dL": ("mass", 10.0),
    "umol/L": ("molar", 1.0), "uM": ("molar", 1.0), "mmol/L": ("molar", 1e3), "mM": ("molar", 1e3),
    "nmol/L": ("molar", 1e-3), "nM": ("molar", 1e-3), "pmol/L": ("molar", 1e-6), "pM": ("molar", 1e-6),
    "IU/L": ("activity", 1.0), "mIU/mL": ("activity", 1.0), "IU/mL": ("activity", 1e3),
})
_CONC_BASE = {"mass": "mg/L", "molar": "umol/L", "activity": "IU/L"}

#: Per-body-size dose denominators -> the covariate that scales them.
PER_BODY_SIZE = MappingProxyType({"m2": "BSA", "kg": "WT"})
_PER_ALIASES = {"m2": "m2", "m^2": "m2", "kg": "kg"}

_COUNT_UNITS = {
    "10^9/L": 1.0,
    "x10^9/L": 1.0,
    "1e9/L": 1.0,
    "G/L": 1.0,
    "10^3/uL": 1.0,
    "cells/uL": 1e-3,
    "/uL": 1e-3,
    "cells/mm3": 1e-3,
    "x10^3/uL": 1.0,
    "K/uL": 1.0,
    "10^3/mm3": 1.0,
    "/mm3": 1e-3,
    "10^6/mL": 1.0,
    "cells/L": 1e-9,
}


def _observation_concentrations(canonical: str, dimensions: tuple, first: tuple, only: tuple = ()) -> dict:
    """Observation-type table for concentrations: canonical first, molar units -> None."""
    names = list(dict.fromkeys((canonical, *first, *(only or CONCENTRATION_UNITS))))
    base_dim = CONCENTRATION_UNITS[canonical][0]
    out = {}
    for name in names:
        dim, f = CONCENTRATION_UNITS[name]
        if dim not in dimensions:
            continue
        out[name] = f / CONCENTRATION_UNITS[canonical][1] if dim == base_dim else None
    return out


#: Accepted units per known observation type: unit -> factor to the canonical unit (the
#: first entry). ``None`` marks a factor that needs the molar mass (molar units).
#: ``CONC:<drug>`` types use the ``CONC`` table (see :func:`observation_units`).
OBSERVATION_UNITS: dict[str, dict[str, float | None]] = {
    "CONC": _observation_concentrations("mg/L", ("mass", "molar"), ("ug/mL", "ug/L", "ng/mL", "umol/L")),
    "ANC": dict(_COUNT_UNITS),
    "PLT": dict(_COUNT_UNITS),
    "WBC": dict(_COUNT_UNITS),
    "HGB": {"g/dL": 1.0, "g/L": 0.1, "mmol/L": HGB_MMOL_TO_G_DL},
    "GCSF": _observation_concentrations("ng/mL", ("mass", "molar"), ("pg/mL", "ng/L", "ug/L"),
                                        ("ug/mL", "mg/L", "nmol/L", "nM", "pmol/L", "pM")),
    "EPO": _observation_concentrations("IU/L", ("activity",), ("mIU/mL",)),
}

#: Default DVID -> observation type name, the one table of data and model cards
#: (CONC:<drug> has no default DVID: map it with ``observation_types``, e.g. ``{8: "CONC:filgrastim"}``,
#: and give the card's ``[observe]`` the same ``dvid``).
DEFAULT_OBSERVATION_TYPES: dict[int, str] = {1: "CONC", 2: "ANC", 3: "PLT", 4: "HGB", 5: "WBC", 6: "GCSF", 7: "EPO"}

#: Count-like types (negative values are impossible).
COUNT_TYPES = ("ANC", "PLT", "WBC", "HGB")

#: Concentration types (negative values are impossible); ``CONC:<drug>`` too, see
#: :func:`observation_kind`.
CONCENTRATION_TYPES = ("CONC", "GCSF", "EPO")

# Drug names (regimens, CONC:<drug>): a letter, then letters, digits, '_', '-', '+', '.'.
_DRUG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-.]*$")


# ----------------------------------------------------------------------------- lookup


def _key(unit: str) -> str:
    k = str(unit).strip().replace(" ", "").replace("µ", "u").replace("μ", "u").replace("²", "2").lower()
    return k.replace("mcg", "ug")


def _index(*tables) -> dict:
    out = {}
    for table in tables:
        for name in table:
            out[_key(name)] = name
    return out


_AMOUNT_INDEX = {**_index(AMOUNT_UNITS), **{_key(a): c for a, c in _AMOUNT_ALIASES.items()}}
_CONC_INDEX = _index(CONCENTRATION_UNITS)


def _require_str(unit, what: str) -> str:
    if not isinstance(unit, str) or not unit.strip():
        raise UnitError(f"{what}: a unit must be a non-empty string, got {unit!r}")
    return unit


def _lookup(table: dict, unit: str, what: str):
    _require_str(unit, what)
    wanted = _key(unit)
    for name, factor in table.items():
        if _key(name) == wanted:
            return name, factor
    accepted = ", ".join(table)
    raise UnitError(f"{what}: unknown unit {unit!r} (accepted: {accepted})")


def _finite_factor(factor: float, what: str) -> float:
    f = float(factor)
    if not (math.isfinite(f) and f > 0):
        raise UnitError(f"{what}: the conversion factor {f!r} is not a finite positive number")
    return f


def _positive_molar_mass(molar_mass, what: str) -> float:
    if molar_mass is None:
        raise UnitError(f"{what} needs molar_mass (g/mol)")
    try:
        mm = float(molar_mass)
    except (TypeError, ValueError):
        mm = float("nan")
    if not (math.isfinite(mm) and mm > 0):
        raise UnitError(f"molar_mass must be a positive number of g/mol, got {molar_mass!r}")
    return mm


def normalise_amount_unit(unit: str, what: str = "dose unit") -> str:
    """The registry's spelling of a dose amount unit (``"mcg"`` -> ``"ug"``, ``"units"`` -> ``"unit"``).

    Parameters
    ----------
    unit : str
        Amount unit, without a per-body-size part (see :func:`parse_dose_unit`).
    what : str
        Name of the argument, used in error messages.

    Raises
    ------
    UnitError
        Unknown unit (the message lists :data:`AMOUNT_UNITS`), or ``miu`` in a case
        other than ``MIU`` (ambiguous between 10^6 IU and 10^-3 IU).

    Examples
    --------
    >>> normalise_amount_unit("mcg"), normalise_amount_unit("MIU"), normalise_amount_unit("Units")
    ('ug', 'MIU', 'unit')
    """
    _require_str(unit, what)
    k = _key(unit)
    if k == "miu" and unit.strip() != "MIU":
        raise UnitError(f"{what}: {unit!r} is ambiguous: write MIU for 10^6 IU (mega-IU); "
                        "milli-IU is not a dose unit (use IU)")
    name = _AMOUNT_INDEX.get(k)
    if name is None:
        raise UnitError(f"{what}: unknown amount unit {unit!r} (accepted: {', '.join(AMOUNT_UNITS)}, "
                        "mcg = ug, units = unit)")
    return name


def amount_dimension(unit: str) -> str:
    """Dimension of an amount unit: ``"mass"``, ``"molar"``, ``"activity"``, ``"product"`` or ``"cells"``."""
    return AMOUNT_UNITS[normalise_amount_unit(unit)][0]


def normalise_concentration_unit(unit: str, what: str = "concentration unit") -> str:
    """The registry's spelling of a concentration unit (``"ng/ml"`` -> ``"ng/mL"``, ``"um"`` -> ``"uM"``).

    Raises
    ------
    UnitError
        Unknown unit; the message lists :data:`CONCENTRATION_UNITS`.
    """
    _require_str(unit, what)
    name = _CONC_INDEX.get(_key(unit))
    if name is None:
        raise UnitError(f"{what}: unknown concentration unit {unit!r} (accepted: {', '.join(CONCENTRATION_UNITS)})")
    return name


def concentration_dimension(unit: str) -> str:
    """Dimension of a concentration unit: ``"mass"``, ``"molar"`` or ``"activity"``."""
    return CONCENTRATION_UNITS[normalise_concentration_unit(unit)][0]


def normalise_time_unit(unit: str, what: str = "time unit") -> str:
    """Canonical spelling of a time unit: ``"min"``, ``"h"``, ``"d"`` or ``"w"``.

    Examples
    --------
    >>> normalise_time_unit("Days"), normalise_time_unit("hours"), normalise_time_unit("weeks")
    ('d', 'h', 'w')
    """
    return _TIME_CANONICAL[_lookup(ALL_TIME_UNITS, unit, what)[0]]


# ----------------------------------------------------------------------------- conversions


def hours_per(unit: str, what: str = "time unit") -> float:
    """Hours per time ``unit``: ``min`` 1/60, ``h`` 1, ``d`` 24, ``w`` 168 (aliases in :data:`ALL_TIME_UNITS`).

    Examples
    --------
    >>> hours_per("d"), hours_per("weeks"), hours_per("min") * 60
    (24.0, 168.0, 1.0)
    """
    return float(_lookup(ALL_TIME_UNITS, unit, what)[1])


def time_factor(time_unit: str) -> float:
    """Hours per ``time_unit`` of a dataset's TIME and II columns: ``h`` (1) or ``d`` (24).

    Only hours and days are accepted for data (:data:`TIME_UNITS`); any time unit
    (``min``, ``w`` too) converts with :func:`hours_per`.
    """
    return float(_lookup(TIME_UNITS, time_unit, "time_unit")[1])


def dose_factor(dose_unit: str) -> float:
    """mg per ``dose_unit`` for the mass units of a dataset's AMT column (:data:`DOSE_UNITS`).

    Other amount units (molar, IU, ng, ...) go through :func:`amount_factor`.
    """
    return float(_lookup(DOSE_UNITS, dose_unit, "dose_unit")[1])


def stored_amount_unit(unit: str) -> tuple[str, float]:
    """How a dataset stores AMT declared in ``unit``: ``(stored unit, factor to it)``.

    Mass amounts are stored in mg (the data's canonical dose unit); molar, activity,
    product and cell amounts in their dimension's base unit (umol, IU, unit, cells),
    since converting them to mg needs what only the model knows (a molar mass; an IU
    has no mass at all).

    Examples
    --------
    >>> stored_amount_unit("ug"), stored_amount_unit("pmol"), stored_amount_unit("kIU")
    (('mg', 0.001), ('umol', 1e-06), ('IU', 1000.0))
    """
    name = normalise_amount_unit(unit)
    dim, factor = AMOUNT_UNITS[name]
    return _AMOUNT_BASE[dim], float(factor)


def data_dose_units(dose_unit, what: str = "dose_unit") -> tuple[str, dict]:
    """Normalise a dataset's dose-unit declaration: ``(default unit, {CMT: unit})``.

    ``dose_unit`` is one amount unit for every dose record (``"mg"``, ``"ug"``,
    ``"IU"``, ``"pmol"``...), or a mapping from compartment to unit
    (``{1: "mg", 3: "ug", 5: "IU"}``; compartments not listed take mg), or the same
    mapping written as text (``"1=mg,3=ug,5=IU"``, as the CLI's ``--dose-unit``
    takes it).

    Raises
    ------
    UnitError
        Unknown unit, or a compartment that is not a positive integer.

    Examples
    --------
    >>> data_dose_units("mcg"), data_dose_units("1=mg, 3=IU")
    (('ug', {}), ('mg', {1: 'mg', 3: 'IU'}))
    """
    if isinstance(dose_unit, str) and "=" in dose_unit:
        pairs = {}
        for part in dose_unit.split(","):
            cmt, sep, unit = part.partition("=")
            if not sep or not unit.strip():
                raise UnitError(f"{what}: {part.strip()!r} is not CMT=UNIT (expected e.g. '1=mg,3=IU')")
            pairs[cmt.strip()] = unit.strip()
        dose_unit = pairs
    if isinstance(dose_unit, Mapping):
        out = {}
        for cmt, unit in dose_unit.items():
            try:
                c = int(str(cmt).strip())
            except ValueError:
                c = 0
            if isinstance(cmt, bool) or c < 1 or str(c) != str(cmt).strip():
                raise UnitError(f"{what}: compartment {cmt!r} is not a positive integer CMT")
            out[c] = normalise_amount_unit(unit, f"{what} of CMT {c}")
        return "mg", dict(sorted(out.items()))
    return normalise_amount_unit(dose_unit, what), {}


def parse_quantity(text, what: str = "quantity") -> tuple[float, str]:
    """Split ``"<number> <amount unit>"`` (e.g. ``"3e11 cells"``) into ``(value, unit)``.

    Raises
    ------
    UnitError
        Not a finite positive number followed by a known amount unit.

    Examples
    --------
    >>> parse_quantity("3e11 cells"), parse_quantity("300 10^9 cells")
    ((300000000000.0, 'cells'), (300.0, '10^9cells'))
    """
    s = str(text).strip() if isinstance(text, str) else ""
    number, _, unit = s.partition(" ")
    try:
        value = float(number)
    except ValueError:
        raise UnitError(f"{what}: expected '<number> <unit>', e.g. '3e11 cells', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise UnitError(f"{what}: the number in {text!r} must be finite and positive")
    return value, normalise_amount_unit(unit, what)


def _unit_amount(unit_amount, to_unit: str, molar_mass) -> float:
    """Amount of ``to_unit`` in one product unit."""
    what = "unit_amount"
    if unit_amount is None:
        raise UnitError(f"converting units of a blood/cell product to {to_unit} needs unit_amount: what one "
                        "unit stands for, e.g. unit_amount='3e11 cells' for a platelet unit")
    if isinstance(unit_amount, str):
        value, unit = parse_quantity(unit_amount, what)
    elif isinstance(unit_amount, tuple) and len(unit_amount) == 2:
        value, unit = parse_quantity(f"{unit_amount[0]} {unit_amount[1]}", what)
    else:
        try:
            value = float(unit_amount)
        except (TypeError, ValueError):
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise UnitError(f"{what} must be a positive number of {to_unit} or a string like '3e11 cells', "
                            f"got {unit_amount!r}")
        return value
    if AMOUNT_UNITS[unit][0] == "product":
        raise UnitError(f"{what} {unit_amount!r} must say what a unit holds in another unit (e.g. '3e11 cells')")
    return value * amount_factor(unit, to_unit, molar_mass)


def amount_factor(from_unit: str, to_unit: str, molar_mass: float | None = None, *,
                  unit_amount: float | str | tuple | None = None) -> float:
    """Factor taking a dose amount in ``from_unit`` to ``to_unit``.

    Within a dimension the factor is the ratio of the units' base factors
    (:data:`AMOUNT_UNITS`). Across mass and molar units, with the molar mass ``M``
    (g/mol)::

        n [umol] = m [mg] x 1000 / M        m [mg] = n [umol] x M / 1000

    A product ``unit`` converts to another dimension through ``unit_amount``, the
    quantity one unit stands for (``"3e11 cells"``, ``(3e11, "cells")`` or a number
    already in ``to_unit``). IU converts only to IU, kIU and MIU.

    Parameters
    ----------
    from_unit, to_unit : str
        Amount units (no ``/m2`` or ``/kg``: see :func:`parse_dose_unit`).
    molar_mass : float, optional
        g/mol, required between mass and molar units.
    unit_amount : float, str or tuple, optional
        What one product unit holds, required when ``from_unit`` is ``unit`` and
        ``to_unit`` is not.

    Returns
    -------
    float
        Finite and positive.

    Raises
    ------
    UnitError
        Unknown unit, a missing or invalid ``molar_mass``/``unit_amount``, or a
        conversion across dimensions that cannot be made (e.g. IU to mg).

    Examples
    --------
    >>> amount_factor("mg", "ug"), amount_factor("kIU", "IU")
    (1000.0, 1000.0)
    >>> round(amount_factor("mg", "umol", molar_mass=808.0), 6)
    1.237624
    >>> amount_factor("unit", "10^9cells", unit_amount="3e11 cells")
    300.0
    """
    a = normalise_amount_unit(from_unit, "from_unit")
    b = normalise_amount_unit(to_unit, "to_unit")
    (da, fa), (db, fb) = AMOUNT_UNITS[a], AMOUNT_UNITS[b]
    what = f"converting {a} to {b}"
    if da == db:
        factor = fa / fb
    elif {da, db} == {"mass", "molar"}:
        mm = _positive_molar_mass(molar_mass, what)
        factor = fa * (1000.0 / mm) / fb if da == "mass" else fa * (mm / 1000.0) / fb
    elif da == "product":
        factor = fa * _unit_amount(unit_amount, b, molar_mass)
    elif "activity" in (da, db):
        raise UnitError(f"cannot convert {a} to {b}: an IU amount converts only to IU, kIU or MIU (its mass "
                        "depends on the product's specific activity); give the dose and the model in IU")
    else:
        raise UnitError(f"cannot convert {a} ({da}) to {b} ({db}): the units measure different things "
                        f"(accepted within {da}: "
                        f"{', '.join(u for u, (d, _) in AMOUNT_UNITS.items() if d == da)})")
    return _finite_factor(factor, what)


def concentration_factor(from_unit: str, to_unit: str, molar_mass: float | None = None) -> float:
    """Factor taking a concentration in ``from_unit`` to ``to_unit``.

    Within a dimension the factor is the ratio of the base factors
    (:data:`CONCENTRATION_UNITS`); across mass and molar units, with the molar mass
    ``M`` (g/mol)::

        c [mg/L] = c [umol/L] x M / 1000

    Activity concentrations (IU/L, mIU/mL) convert only among themselves.

    Raises
    ------
    UnitError
        Unknown unit, missing/invalid ``molar_mass``, or an activity <-> mass/molar
        conversion.

    Examples
    --------
    >>> concentration_factor("mg/L", "ng/mL"), concentration_factor("pg/mL", "ng/mL")
    (1000.0, 0.001)
    >>> concentration_factor("mg/L", "umol/L", 808.0) == 1000 / 808
    True
    >>> round(concentration_factor("nM", "ng/mL", FILGRASTIM_MOLAR_MASS), 6)
    18.8
    """
    a = normalise_concentration_unit(from_unit, "from_unit")
    b = normalise_concentration_unit(to_unit, "to_unit")
    (da, fa), (db, fb) = CONCENTRATION_UNITS[a], CONCENTRATION_UNITS[b]
    what = f"converting {a} to {b}"
    if da == db:
        factor = fa / fb
    elif {da, db} == {"mass", "molar"}:
        mm = _positive_molar_mass(molar_mass, what)
        factor = fa * (mm / 1000.0) / fb if da == "molar" else fa * (1000.0 / mm) / fb
    else:
        raise UnitError(f"cannot convert {a} to {b}: an activity concentration (IU/L, mIU/mL, IU/mL) converts "
                        "only to another activity concentration")
    return _finite_factor(factor, what)


def parse_dose_unit(text: str) -> tuple[str, str | None]:
    """Split a dose unit into ``(amount_unit, per)``, ``per`` in ``{None, "m2", "kg"}``.

    ``per`` says which covariate scales the dose: ``"m2"`` -> ``BSA`` (m^2),
    ``"kg"`` -> ``WT`` (kg), see :data:`PER_BODY_SIZE`. ``m^2`` and ``m²`` read as ``m2``.

    Raises
    ------
    UnitError
        Unknown amount unit or denominator.

    Examples
    --------
    >>> parse_dose_unit("mg/m2"), parse_dose_unit("mcg/kg"), parse_dose_unit("IU")
    (('mg', 'm2'), ('ug', 'kg'), ('IU', None))
    """
    _require_str(text, "dose unit")
    base, sep, per = text.strip().partition("/")
    amount = normalise_amount_unit(base, "dose unit")
    if not sep:
        return amount, None
    p = _PER_ALIASES.get(_key(per))
    if p is None:
        raise UnitError(f"dose unit {text!r}: unknown denominator {'/' + per!r} (accepted: /m2 per m^2 of "
                        "body-surface area (covariate BSA), /kg per kg of body weight (covariate WT))")
    return amount, p


# ----------------------------------------------------------------------------- observation types


def is_drug_name(name) -> bool:
    """Whether ``name`` is a valid drug name (a letter, then letters, digits, ``_ - + .``)."""
    return isinstance(name, str) and bool(_DRUG_RE.match(name))


def conc_drug(type_name: str) -> str | None:
    """The drug of a ``CONC:<drug>`` type (as written), ``None`` for any other type.

    Raises
    ------
    UnitError
        ``CONC:`` followed by no valid drug name.

    Examples
    --------
    >>> conc_drug("CONC:docetaxel"), conc_drug("CONC")
    ('docetaxel', None)
    """
    s = str(type_name).strip()
    head, sep, drug = s.partition(":")
    if not sep or head.upper() != "CONC":
        return None
    if not is_drug_name(drug):
        raise UnitError(f"observation type {type_name!r}: expected CONC:<drug> with a drug name (a letter, "
                        "then letters, digits, '_', '-', '+', '.'), e.g. CONC:docetaxel")
    return drug


def _type_name(type_name) -> str:
    return str(type_name).strip().upper()


def observation_units(type_name: str) -> dict | None:
    """Accepted units of an observation type (unit -> factor, ``None`` = needs molar mass).

    ``CONC:<drug>`` types share the ``CONC`` table; ``None`` for a type pkpd does not know.
    The returned dict is a copy.
    """
    name = _type_name(type_name)
    if conc_drug(name) is not None:
        name = "CONC"
    table = OBSERVATION_UNITS.get(name)
    return None if table is None else dict(table)


def observation_kind(type_name: str) -> str | None:
    """``"concentration"``, ``"count"``, ``"haemoglobin"`` or ``None`` (unknown type)."""
    name = _type_name(type_name)
    if name in CONCENTRATION_TYPES or conc_drug(name) is not None:
        return "concentration"
    if name == "HGB":
        return "haemoglobin"
    if name in COUNT_TYPES:
        return "count"
    return None


def canonical_unit(type_name: str) -> str | None:
    """Canonical unit of an observation type, or ``None`` for a type pkpd does not know.

    Examples
    --------
    >>> canonical_unit("ANC"), canonical_unit("conc"), canonical_unit("CRP")
    ('10^9/L', 'mg/L', None)
    >>> canonical_unit("GCSF"), canonical_unit("CONC:docetaxel"), canonical_unit("EPO")
    ('ng/mL', 'mg/L', 'IU/L')
    """
    table = observation_units(type_name)
    return None if table is None else next(iter(table))


def accepted_units(type_name: str) -> tuple[str, ...]:
    """Unit strings accepted for a known observation type (empty for unknown types)."""
    return tuple(observation_units(type_name) or ())


def _molar_mass_for(molar_mass, name: str):
    """``molar_mass`` may be one number or a mapping type name -> g/mol."""
    if isinstance(molar_mass, Mapping):
        by_name = {_type_name(k): v for k, v in molar_mass.items()}
        if name in by_name:
            return by_name[name]
        return by_name.get("CONC") if conc_drug(name) is not None else None
    return molar_mass


def unit_factor(type_name: str, unit: str | None, molar_mass=None) -> float:
    """Factor taking values in ``unit`` to the canonical unit of ``type_name``.

    Parameters
    ----------
    type_name : str
        Observation type (``"CONC"``, ``"CONC:<drug>"``, ``"GCSF"``, ``"ANC"``, ...).
        Unknown types keep their unit: the factor is 1, but ``unit`` must then be given.
    unit : str or None
        Declared unit; ``None`` means the canonical unit.
    molar_mass : float or dict, optional
        Molar mass in g/mol, required for molar units (``umol/L``, ``nM``, ...); a dict
        maps type names to molar masses (``{"CONC": 808.0, "GCSF": 18800.0}``;
        ``CONC:<drug>`` falls back to the ``CONC`` entry).

    Raises
    ------
    UnitError
        (a :class:`~pkpd.errors.DatasetError`) Unknown unit (the message names the type,
        the unit and the accepted list), a missing unit for an unknown type, or a
        missing/invalid ``molar_mass``.

    Examples
    --------
    >>> unit_factor("GCSF", "pg/mL"), unit_factor("ANC", "cells/uL"), unit_factor("HGB", "g/L")
    (0.001, 0.001, 0.1)
    """
    name = _type_name(type_name)
    table = observation_units(name)
    if table is None:
        if unit is None or not str(unit).strip():
            raise UnitError(
                f"observation type {type_name!r} is not one pkpd knows "
                f"({', '.join(OBSERVATION_UNITS)}, CONC:<drug>): give its unit, e.g. units={{{name!r}: ...}}"
            )
        return 1.0
    if unit is None:
        return 1.0
    unit_name, factor = _lookup(table, unit, f"observation type {name}")
    if factor is None:
        canonical = next(iter(table))
        mm = _molar_mass_for(molar_mass, name)
        if mm is None:
            raise UnitError(f"observation type {name} in {unit_name} needs molar_mass (g/mol) "
                            f"to convert to {canonical}")
        factor = concentration_factor(unit_name, canonical, _positive_molar_mass(mm, name))
    return _finite_factor(factor, f"observation type {name} in {unit_name}")


def normalise_unit(type_name: str, unit: str | None) -> str:
    """The table's spelling of ``unit`` for ``type_name`` (canonical unit when ``None``)."""
    name = _type_name(type_name)
    table = observation_units(name)
    if table is None:
        unit_factor(name, unit)
        return str(unit).strip()
    if unit is None:
        return next(iter(table))
    return _lookup(table, unit, f"observation type {name}")[0]


def convert_units(values, type_name: str, unit: str | None, molar_mass=None):
    """Convert ``values`` from ``unit`` to the canonical unit of ``type_name``.

    NaN (a missing value) stays NaN; an infinite value, or a finite one that overflows
    float64 in the conversion, raises :class:`UnitError`.

    Examples
    --------
    >>> convert_units([1500.0], "ANC", "cells/uL").tolist()
    [1.5]
    >>> convert_units([2.0], "CONC", "umol/L", molar_mass=808.0).tolist()
    [1.616]
    >>> convert_units([25.0], "GCSF", "pg/mL").tolist()
    [0.025]
    """
    x = np.asarray(values, dtype=np.float64)
    factor = unit_factor(type_name, unit, molar_mass)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x * factor
    bad = np.isinf(x) | (np.isfinite(x) & ~np.isfinite(out))
    if np.any(bad):
        first = x[bad].flat[0]
        raise UnitError(f"{_type_name(type_name)} value {first!r} in {unit or canonical_unit(type_name)} is not "
                        "finite in canonical units (expected finite numbers; NaN for missing)")
    return out
