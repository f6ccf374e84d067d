"""Unit tables and conversion to pkpd's canonical units.

Canonical units: time in hours, doses in mg, concentrations (CONC) in mg/L, blood
counts (ANC, PLT, WBC) in 10^9/L and haemoglobin (HGB) in g/dL, as in the CTCAE v5.0
grading tables (MODELS.md section 6.1). Unit strings are matched case-insensitively,
ignoring spaces, with ``µ``/``μ`` read as ``u``.

Conversion factors (value in the canonical unit = value in the declared unit x factor):

- counts: 1 cell/uL = 1 cell/mm^3 = 10^6 cells/L = 1e-3 x 10^9/L;
- HGB: 1 g/L = 0.1 g/dL; 1 mmol/L = 1.611 g/dL (haemoglobin monomer, 16.11 g/mmol,
  the factor behind the CTCAE v5.0 anaemia table: 10.0 g/dL <-> 6.2 mmol/L);
- CONC: 1 ug/L = 1 ng/mL = 1e-3 mg/L; 1 ug/mL = 1 mg/L; 1 umol/L = molar_mass/1000 mg/L
  (``molar_mass`` in g/mol).
"""

from __future__ import annotations

import numpy as np

from .errors import DatasetError

#: Molar mass of the haemoglobin monomer used for mmol/L -> g/dL, in g/mmol / 10.
HGB_MMOL_TO_G_DL = 1.611

_COUNT_UNITS = {
    "10^9/L": 1.0,
    "x10^9/L": 1.0,
    "1e9/L": 1.0,
    "G/L": 1.0,
    "10^3/uL": 1.0,
    "cells/uL": 1e-3,
    "/uL": 1e-3,
    "cells/mm3": 1e-3,
}

#: Accepted units per known observation type: unit -> factor to the canonical unit.
#: ``None`` marks a factor that needs the molar mass (umol/L).
OBSERVATION_UNITS: dict[str, dict[str, float | None]] = {
    "CONC": {"mg/L": 1.0, "ug/mL": 1.0, "ug/L": 1e-3, "ng/mL": 1e-3, "umol/L": None},
    "ANC": dict(_COUNT_UNITS),
    "PLT": dict(_COUNT_UNITS),
    "WBC": dict(_COUNT_UNITS),
    "HGB": {"g/dL": 1.0, "g/L": 0.1, "mmol/L": HGB_MMOL_TO_G_DL},
}

#: Default DVID -> observation type name.
DEFAULT_OBSERVATION_TYPES: dict[int, str] = {1: "CONC", 2: "ANC", 3: "PLT", 4: "HGB", 5: "WBC"}

#: Count-like types (negative values are impossible).
COUNT_TYPES = ("ANC", "PLT", "WBC", "HGB")

#: Time units -> factor to hours.
TIME_UNITS = {"h": 1.0, "hour": 1.0, "hours": 1.0, "hr": 1.0, "d": 24.0, "day": 24.0, "days": 24.0}

#: Dose units -> factor to mg.
DOSE_UNITS = {"mg": 1.0, "ug": 1e-3, "mcg": 1e-3, "g": 1e3}


def _key(unit: str) -> str:
    return str(unit).strip().replace(" ", "").replace("µ", "u").replace("μ", "u").lower()


def _lookup(table: dict, unit: str, what: str):
    if not isinstance(unit, str):
        raise DatasetError(f"{what}: unit must be a string, got {unit!r}")
    wanted = _key(unit)
    for name, factor in table.items():
        if _key(name) == wanted:
            return name, factor
    accepted = ", ".join(table)
    raise DatasetError(f"{what}: unknown unit {unit!r} (accepted: {accepted})")


def canonical_unit(type_name: str) -> str | None:
    """Canonical unit of an observation type, or ``None`` for a type pkpd does not know.

    Examples
    --------
    >>> canonical_unit("ANC"), canonical_unit("conc"), canonical_unit("CRP")
    ('10^9/L', 'mg/L', None)
    """
    table = OBSERVATION_UNITS.get(str(type_name).upper())
    return None if table is None else next(iter(table))


def accepted_units(type_name: str) -> tuple[str, ...]:
    """Unit strings accepted for a known observation type (empty for unknown types)."""
    return tuple(OBSERVATION_UNITS.get(str(type_name).upper(), ()))


def unit_factor(type_name: str, unit: str | None, molar_mass: float | None = None) -> float:
    """Factor taking values in ``unit`` to the canonical unit of ``type_name``.

    Parameters
    ----------
    type_name : str
        Observation type (``"CONC"``, ``"ANC"``, ...). Unknown types keep their unit:
        the factor is 1, but ``unit`` must then be given.
    unit : str or None
        Declared unit; ``None`` means the canonical unit.
    molar_mass : float, optional
        Molar mass in g/mol, required for ``umol/L``.

    Raises
    ------
    DatasetError
        Unknown unit (the message names the type, the unit and the accepted list), a
        missing unit for an unknown type, or a missing/invalid ``molar_mass``.
    """
    name = str(type_name).upper()
    table = OBSERVATION_UNITS.get(name)
    if table is None:
        if unit is None or not str(unit).strip():
            raise DatasetError(
                f"observation type {type_name!r} is not one pkpd knows "
                f"({', '.join(OBSERVATION_UNITS)}): give its unit, e.g. units={{{name!r}: ...}}"
            )
        return 1.0
    if unit is None:
        return 1.0
    unit_name, factor = _lookup(table, unit, f"observation type {name}")
    if factor is None:
        if molar_mass is None:
            raise DatasetError(
                f"observation type {name} in {unit_name} needs molar_mass (g/mol) "
                "to convert to mg/L"
            )
        try:
            mm = float(molar_mass)
        except (TypeError, ValueError):
            mm = float("nan")
        if not np.isfinite(mm) or mm <= 0:
            raise DatasetError(f"molar_mass must be a positive number of g/mol, got {molar_mass!r}")
        factor = mm / 1000.0
    return float(factor)


def normalise_unit(type_name: str, unit: str | None) -> str:
    """The table's spelling of ``unit`` for ``type_name`` (canonical unit when ``None``)."""
    name = str(type_name).upper()
    table = OBSERVATION_UNITS.get(name)
    if table is None:
        unit_factor(name, unit)
        return str(unit).strip()
    if unit is None:
        return next(iter(table))
    return _lookup(table, unit, f"observation type {name}")[0]


def convert_units(values, type_name: str, unit: str | None, molar_mass: float | None = None):
    """Convert ``values`` from ``unit`` to the canonical unit of ``type_name``.

    Examples
    --------
    >>> convert_units([1500.0], "ANC", "cells/uL").tolist()
    [1.5]
    >>> convert_units([2.0], "CONC", "umol/L", molar_mass=808.0).tolist()
    [1.616]
    """
    return np.asarray(values, dtype=np.float64) * unit_factor(type_name, unit, molar_mass)


def time_factor(time_unit: str) -> float:
    """Hours per ``time_unit`` (``"h"``/``"hours"`` or ``"d"``/``"days"``)."""
    return float(_lookup(TIME_UNITS, time_unit, "time_unit")[1])


def dose_factor(dose_unit: str) -> float:
    """mg per ``dose_unit`` (``"mg"``, ``"ug"`` or ``"g"``)."""
    return float(_lookup(DOSE_UNITS, dose_unit, "dose_unit")[1])
