"""The unit registry: amounts, concentrations, dose units, observation types, time."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest

import pkpd.units as units
from pkpd.errors import DatasetError, ModelError
from pkpd.units import (
    COUNT_TYPES,
    DEFAULT_OBSERVATION_TYPES,
    DOSE_UNITS,
    FILGRASTIM_MOLAR_MASS,
    OBSERVATION_UNITS,
    TIME_UNITS,
    UnitError,
    accepted_units,
    amount_factor,
    canonical_unit,
    concentration_factor,
    convert_units,
    dose_factor,
    hours_per,
    normalise_amount_unit,
    normalise_concentration_unit,
    normalise_time_unit,
    normalise_unit,
    observation_kind,
    observation_units,
    parse_dose_unit,
    parse_quantity,
    time_factor,
    unit_factor,
)

# The tables as they were before the registry grew: these factors must not change.
_COUNTS_BEFORE = {"10^9/L": 1.0, "x10^9/L": 1.0, "1e9/L": 1.0, "G/L": 1.0, "10^3/uL": 1.0, "cells/uL": 1e-3,
                  "/uL": 1e-3, "cells/mm3": 1e-3}
TABLES_BEFORE = {
    "CONC": {"mg/L": 1.0, "ug/mL": 1.0, "ug/L": 1e-3, "ng/mL": 1e-3, "umol/L": None},
    "ANC": _COUNTS_BEFORE, "PLT": _COUNTS_BEFORE, "WBC": _COUNTS_BEFORE,
    "HGB": {"g/dL": 1.0, "g/L": 0.1, "mmol/L": 1.611},
}


def test_docstring_examples():
    result = doctest.testmod(units, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


def test_unit_error_is_both_families():
    with pytest.raises(DatasetError):
        amount_factor("furlong", "mg")
    with pytest.raises(ModelError):
        amount_factor("furlong", "mg")
    assert issubclass(UnitError, DatasetError) and issubclass(UnitError, ModelError)


# ----------------------------------------------------------------------------- backwards compatibility


@pytest.mark.parametrize("type_name", sorted(TABLES_BEFORE))
def test_old_observation_factors_unchanged(type_name):
    for unit, factor in TABLES_BEFORE[type_name].items():
        assert OBSERVATION_UNITS[type_name][unit] == factor
        if factor is not None:
            assert unit_factor(type_name, unit) == pytest.approx(factor, rel=1e-15)
    assert canonical_unit(type_name) == next(iter(TABLES_BEFORE[type_name]))
    assert set(TABLES_BEFORE[type_name]) <= set(accepted_units(type_name))


def test_old_constants_unchanged():
    assert DEFAULT_OBSERVATION_TYPES == {1: "CONC", 2: "ANC", 3: "PLT", 4: "HGB", 5: "WBC", 6: "GCSF", 7: "EPO"}
    assert COUNT_TYPES == ("ANC", "PLT", "WBC", "HGB")
    assert DOSE_UNITS == {"mg": 1.0, "ug": 1e-3, "mcg": 1e-3, "g": 1e3}
    for unit, hours in {"h": 1.0, "hour": 1.0, "hours": 1.0, "hr": 1.0, "d": 24.0, "day": 24.0, "days": 24.0}.items():
        assert TIME_UNITS[unit] == hours and time_factor(unit) == hours
    assert [dose_factor(u) for u in ("mg", "ug", "MCG", "g")] == [1.0, 1e-3, 1e-3, 1e3]
    with pytest.raises(DatasetError, match="dose_unit.*'umol'"):
        dose_factor("umol")  # the dataset's AMT is mass only


def test_molar_concentration_and_missing_molar_mass():
    assert unit_factor("CONC", "umol/L", 808.0) == pytest.approx(0.808)
    assert convert_units([2.0], "CONC", "umol/L", molar_mass=808.0).tolist() == pytest.approx([1.616])
    with pytest.raises(DatasetError, match="molar_mass"):
        unit_factor("CONC", "umol/L")
    for bad in (0, -1, float("nan"), float("inf"), "abc"):
        with pytest.raises(DatasetError, match="molar_mass must be a positive number"):
            unit_factor("CONC", "nmol/L", bad)


def test_unknown_type_and_unit_messages():
    assert unit_factor("CRP", "mg/dL") == 1.0 and normalise_unit("crp", " mg/dL ") == "mg/dL"
    with pytest.raises(DatasetError, match="'CRP' is not one pkpd knows"):
        unit_factor("CRP", None)
    with pytest.raises(DatasetError, match=r"observation type ANC: unknown unit 'mg/L' \(accepted: 10\^9/L"):
        unit_factor("ANC", "mg/L")


# ----------------------------------------------------------------------------- time


@pytest.mark.parametrize("unit, hours, canonical", [
    ("min", 1 / 60, "min"), ("Minutes", 1 / 60, "min"), ("h", 1.0, "h"), ("HR", 1.0, "h"), ("d", 24.0, "d"),
    ("days", 24.0, "d"), ("w", 168.0, "w"), ("week", 168.0, "w"),
])
def test_time_units(unit, hours, canonical):
    assert hours_per(unit) == pytest.approx(hours, rel=1e-15)
    assert normalise_time_unit(unit) == canonical
    if canonical in ("h", "d"):
        assert time_factor(unit) == hours


def test_time_unit_errors():
    with pytest.raises(UnitError, match=r"time unit: unknown unit 'fortnight' \(accepted: h, "):
        hours_per("fortnight")
    with pytest.raises(UnitError, match="non-empty string"):
        hours_per(24)
    with pytest.raises(DatasetError, match=r"time_unit: unknown unit 'w' \(accepted: h, hour, hours, hr, d, day, days"):
        time_factor("w")  # a dataset's TIME column is in hours or days


# ----------------------------------------------------------------------------- amounts


@pytest.mark.parametrize("a, b, factor", [
    ("g", "mg", 1e3), ("mg", "ug", 1e3), ("ug", "ng", 1e3), ("mcg", "mg", 1e-3), ("µg", "ng", 1e3),
    ("mol", "mmol", 1e3), ("mmol", "umol", 1e3), ("umol", "nmol", 1e3), ("nmol", "pmol", 1e3),
    ("MIU", "kIU", 1e3), ("kIU", "IU", 1e3), ("IU", "MIU", 1e-6),
    ("10^9 cells", "cells", 1e9), ("10^11cells", "10^9cells", 100.0), ("units", "unit", 1.0),
])
def test_amount_factor_within_a_dimension(a, b, factor):
    assert amount_factor(a, b) == pytest.approx(factor, rel=1e-12)
    assert amount_factor(b, a) == pytest.approx(1 / factor, rel=1e-12)


def test_amount_factor_mass_molar():
    # docetaxel 808 g/mol: 808 mg = 1 mmol = 1000 umol
    assert amount_factor("mg", "umol", molar_mass=808.0) * 808.0 == pytest.approx(1000.0)
    assert amount_factor("mmol", "g", molar_mass=808.0) == pytest.approx(0.808)
    # filgrastim 18.8 kDa: 1 ug = 53.2 pmol (MODELS.md, Harrold 2020)
    assert amount_factor("ug", "pmol", molar_mass=FILGRASTIM_MOLAR_MASS) == pytest.approx(53.19, abs=0.01)
    assert amount_factor("ug", "umol", 808.0) * amount_factor("umol", "ug", 808.0) == pytest.approx(1.0)
    with pytest.raises(UnitError, match=r"converting mg to nmol needs molar_mass \(g/mol\)"):
        amount_factor("mg", "nmol")


def test_amount_factor_iu_only_to_iu():
    with pytest.raises(UnitError, match="cannot convert IU to mg: an IU amount converts only to IU, kIU or MIU"):
        amount_factor("IU", "mg")
    with pytest.raises(UnitError, match="cannot convert umol to kIU"):
        amount_factor("umol", "kIU", molar_mass=808.0)


def test_miu_case():
    assert normalise_amount_unit("MIU") == "MIU" and amount_factor(" MIU ", "IU") == 1e6
    for text in ("miu", "mIU", "Miu"):
        with pytest.raises(UnitError, match="ambiguous: write MIU"):
            normalise_amount_unit(text)


def test_product_units_need_a_caller_quantity():
    assert amount_factor("unit", "10^9cells", unit_amount="3e11 cells") == pytest.approx(300.0)
    assert amount_factor("units", "cells", unit_amount=(3.0, "10^11 cells")) == pytest.approx(3e11)
    assert amount_factor("unit", "mg", unit_amount=250.0) == 250.0  # a number is in the target unit
    with pytest.raises(UnitError, match="needs unit_amount"):
        amount_factor("unit", "cells")
    with pytest.raises(UnitError, match="finite and positive"):
        amount_factor("unit", "cells", unit_amount="1e400 cells")
    with pytest.raises(UnitError, match="must say what a unit holds"):
        amount_factor("unit", "cells", unit_amount="2 units")
    with pytest.raises(UnitError, match="positive number"):
        amount_factor("unit", "cells", unit_amount=-3)
    with pytest.raises(UnitError, match="cannot convert cells"):
        amount_factor("cells", "mg")


def test_amount_unit_errors_name_the_unit():
    with pytest.raises(UnitError, match=r"to_unit: unknown amount unit 'grain' \(accepted: g, mg, ug, ng, mol"):
        amount_factor("mg", "grain")
    with pytest.raises(UnitError, match="from_unit: a unit must be a non-empty string, got None"):
        amount_factor(None, "mg")


def test_amount_factor_never_returns_non_finite():
    with pytest.raises(UnitError, match="not a finite positive number"):
        amount_factor("mol", "ng", molar_mass=1e308)


def test_parse_quantity():
    assert parse_quantity("3e11 cells") == (3e11, "cells")
    assert parse_quantity("2.5 mcg") == (2.5, "ug")
    for bad in ("cells", "inf cells", "0 cells", "3e11 furlongs", None):
        with pytest.raises(UnitError):
            parse_quantity(bad)


# ----------------------------------------------------------------------------- dose units


@pytest.mark.parametrize("text, expected", [
    ("mg", ("mg", None)), ("mg/m2", ("mg", "m2")), ("mg/m^2", ("mg", "m2")), ("mg/m²", ("mg", "m2")),
    ("MCG/KG", ("ug", "kg")), ("µg/kg", ("ug", "kg")), ("IU/kg", ("IU", "kg")), ("umol/m2", ("umol", "m2")),
    ("units", ("unit", None)), ("MIU", ("MIU", None)),
])
def test_parse_dose_unit(text, expected):
    assert parse_dose_unit(text) == expected


def test_parse_dose_unit_errors():
    with pytest.raises(UnitError, match=r"dose unit 'mg/L': unknown denominator '/L' \(accepted: /m2 .*BSA.*/kg.*WT"):
        parse_dose_unit("mg/L")
    with pytest.raises(UnitError, match="unknown amount unit 'furlongs'"):
        parse_dose_unit("furlongs/m2")


# ----------------------------------------------------------------------------- concentrations


@pytest.mark.parametrize("a, b, factor", [
    ("mg/L", "ug/mL", 1.0), ("mg/L", "ng/mL", 1e3), ("ng/mL", "pg/mL", 1e3), ("ng/L", "pg/mL", 1.0),
    ("g/L", "mg/L", 1e3), ("mg/dL", "mg/L", 10.0), ("ug/L", "ng/mL", 1.0),
    ("mmol/L", "umol/L", 1e3), ("uM", "nM", 1e3), ("nmol/L", "pM", 1e3), ("mM", "mmol/L", 1.0),
    ("IU/L", "mIU/mL", 1.0), ("IU/mL", "IU/L", 1e3),
])
def test_concentration_factor_within_a_dimension(a, b, factor):
    assert concentration_factor(a, b) == pytest.approx(factor, rel=1e-12)
    assert concentration_factor(b, a) == pytest.approx(1 / factor, rel=1e-12)


def test_concentration_factor_mass_molar_and_activity():
    assert concentration_factor("umol/L", "mg/L", 808.0) == pytest.approx(0.808)
    assert concentration_factor("nM", "ng/mL", FILGRASTIM_MOLAR_MASS) == pytest.approx(18.8)
    # Melhem 2018 endogenous G-CSF baseline 0.00299 nM is about 56 pg/mL
    assert 0.00299 * concentration_factor("nM", "pg/mL", FILGRASTIM_MOLAR_MASS) == pytest.approx(56.2, abs=0.1)
    with pytest.raises(UnitError, match=r"converting ng/mL to nmol/L needs molar_mass"):
        concentration_factor("ng/mL", "nmol/L")
    with pytest.raises(UnitError, match="activity concentration"):
        concentration_factor("mIU/mL", "ng/mL")
    with pytest.raises(UnitError, match=r"unknown concentration unit 'mg/furlong'"):
        concentration_factor("mg/furlong", "mg/L")
    assert normalise_concentration_unit("NG/ML") == "ng/mL" and normalise_concentration_unit("um") == "uM"


@pytest.mark.parametrize("a, b", [("mg/L", "ug/L"), ("ug/L", "mg/L"), ("ng/mL", "mg/L"), ("ug/mL", "ug/L"),
                                  ("mg/L", "umol/L"), ("umol/L", "ug/L"), ("uM", "mg/L")])
def test_concentration_factor_agrees_with_model_cards(a, b):
    # pkpd.model.card keeps its own small table for now: both must give the same factor
    concentration_scale = getattr(importlib.import_module("pkpd.model.card"), "concentration_scale", None)
    if concentration_scale is None:
        pytest.skip("pkpd.model.card has no table of its own any more")
    assert concentration_factor(a, b, 808.0) == pytest.approx(concentration_scale(a, b, 808.0), rel=1e-14)


# ----------------------------------------------------------------------------- observation types


def test_new_observation_types():
    assert canonical_unit("GCSF") == "ng/mL" and canonical_unit("gcsf") == "ng/mL"
    assert unit_factor("GCSF", "pg/mL") == pytest.approx(1e-3)
    assert unit_factor("GCSF", "ug/L") == 1.0 and unit_factor("GCSF", "mg/L") == pytest.approx(1e3)
    assert unit_factor("GCSF", "nM", {"GCSF": FILGRASTIM_MOLAR_MASS}) == pytest.approx(18.8)
    with pytest.raises(DatasetError, match="GCSF in nM needs molar_mass"):
        unit_factor("GCSF", "nM", {"CONC": 808.0})
    assert canonical_unit("EPO") == "IU/L" and unit_factor("EPO", "mIU/mL") == 1.0
    with pytest.raises(DatasetError, match="observation type EPO: unknown unit 'ng/mL'"):
        unit_factor("EPO", "ng/mL")  # an activity has no mass conversion
    assert "IU/L" not in accepted_units("CONC")


def test_conc_per_drug():
    assert canonical_unit("CONC:docetaxel") == "mg/L"
    assert accepted_units("CONC:docetaxel") == accepted_units("CONC")
    assert unit_factor("CONC:docetaxel", "ng/mL") == pytest.approx(1e-3)
    # a molar-mass mapping: the drug's own entry, else the CONC entry
    mm = {"CONC:carboplatin": 371.25, "CONC": 808.0}
    assert unit_factor("CONC:carboplatin", "umol/L", mm) == pytest.approx(0.37125)
    assert unit_factor("conc:docetaxel", "umol/L", mm) == pytest.approx(0.808)
    assert normalise_unit("CONC:docetaxel", "UG/L") == "ug/L"
    assert units.conc_drug("CONC:Docetaxel") == "Docetaxel" and units.conc_drug("ANC") is None
    for bad in ("CONC:", "CONC:5fu", "CONC:a b"):
        with pytest.raises(DatasetError, match="expected CONC:<drug>"):
            canonical_unit(bad)


def test_observation_kinds_and_copies():
    assert [observation_kind(t) for t in ("CONC", "CONC:x", "GCSF", "EPO", "ANC", "HGB", "CRP")] == [
        "concentration", "concentration", "concentration", "concentration", "count", "haemoglobin", None]
    table = observation_units("ANC")
    table["furlongs"] = 1.0  # a copy: the registry is not changed
    assert "furlongs" not in accepted_units("ANC") and observation_units("CRP") is None


@pytest.mark.parametrize("unit, factor", [("K/uL", 1.0), ("x10^3/uL", 1.0), ("10^6/mL", 1.0), ("/mm3", 1e-3),
                                          ("cells/L", 1e-9), ("10^3/mm3", 1.0)])
def test_new_count_units(unit, factor):
    for name in ("ANC", "PLT", "WBC"):
        assert unit_factor(name, unit) == pytest.approx(factor, rel=1e-15)


def test_hgb_matches_ctcae_anchors():
    # CTCAE v5.0 anaemia thresholds 10.0 and 8.0 g/dL are listed (truncated) as 6.2 and 4.9 mmol/L
    per_g_dl = 1.0 / unit_factor("HGB", "mmol/L")
    assert [math.floor(g * per_g_dl * 10) / 10 for g in (10.0, 8.0)] == [6.2, 4.9]
    assert unit_factor("HGB", "g/L") * 80.0 == pytest.approx(8.0)


def test_convert_units_refuses_non_finite():
    out = convert_units([1.0, np.nan], "ANC", "cells/uL")
    assert out[0] == 1e-3 and math.isnan(out[1])  # NaN is a missing value
    with pytest.raises(UnitError, match="not finite"):
        convert_units([1.0, np.inf], "ANC", "cells/uL")
    with pytest.raises(UnitError, match="not finite"):
        convert_units([1e307], "CONC", "g/L")  # overflows float64
