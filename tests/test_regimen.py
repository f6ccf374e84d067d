"""Compact regimens: parsing, dose records, conversions and error messages."""

from __future__ import annotations

import math

import pytest

from pkpd.errors import ModelError
from pkpd.regimen import DoseSpec, Regimen, parse_regimen

COLUMNS = ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "DVID"]


def test_parse_infusion_cycles():
    (dose,) = parse_regimen("100 mg/m2 1h q21d x4").items
    assert dose == DoseSpec(amount=100.0, unit="mg/m2", duration=1.0, route="infusion", interval=504.0, count=4)


@pytest.mark.parametrize("text, interval", [("q3w", 504.0), ("q21d", 504.0), ("q24h", 24.0), ("q12", 12.0),
                                            ("q90min", 1.5)])
def test_interval_units(text, interval):
    assert parse_regimen(f"75 mg/m2 1h {text} x6 @0").items[0].interval == interval


def test_parse_sc_and_oral():
    (sc,) = parse_regimen("5 ug/kg sc q24h x7 @24h cmt1").items
    assert (sc.route, sc.duration, sc.start, sc.cmt, sc.count) == ("sc", 0.0, 24.0, 1, 7)
    (oral,) = parse_regimen("80 mg oral q24h x7").items
    assert (oral.route, oral.unit, oral.amount, oral.interval) == ("oral", "mg", 80.0, 24.0)


def test_defaults_and_tolerance():
    (d,) = parse_regimen("  250MG  ").items
    assert d == DoseSpec(amount=250.0, unit="mg")
    assert parse_regimen("100mg/m2 1H Q3W X2 @ 2d CMT 2").items[0] == DoseSpec(
        amount=100.0, unit="mg/m2", duration=1.0, route="infusion", interval=504.0, count=2, start=48.0, cmt=2)
    assert parse_regimen("260 mg/m2 30min iv").items[0].duration == 0.5
    assert parse_regimen("10 mg iv").items[0].route == "iv"


def test_several_doses():
    reg = parse_regimen("75 mg/m2 1h; 20 mg oral q12h x2 @0")
    assert len(reg) == 2 and reg.items[1].route == "oral"


def test_bsa_conversion_and_records():
    rec = parse_regimen("100 mg/m2 1h q21d x4").to_records({"BSA": 1.8})
    assert list(rec.columns) == COLUMNS
    row = rec.iloc[0]
    assert row.AMT == pytest.approx(180.0)
    assert row.RATE == pytest.approx(180.0)
    assert (row.II, row.ADDL, row.EVID, row.MDV, row.CMT, row.SS, row.DVID) == (504.0, 3, 1, 1, 1, 0, 0)
    assert math.isnan(row.DV)


def test_bolus_and_single_dose_records():
    rec = parse_regimen("80 mg; 40 mg @24h cmt2").to_records(id=7)
    assert rec.TIME.tolist() == [0.0, 24.0]
    assert rec.RATE.tolist() == [0.0, 0.0] and rec.II.tolist() == [0.0, 0.0] and rec.ADDL.tolist() == [0, 0]
    assert rec.CMT.tolist() == [1, 2] and rec.ID.tolist() == [7, 7]


def test_weight_and_molar_conversion():
    reg = parse_regimen("5 ug/kg sc q24h x7")
    assert reg.to_records({"WT": 70}).AMT[0] == pytest.approx(350.0 * 1e-3)
    assert reg.to_records({"wt": 70}, dose_unit="ug").AMT[0] == pytest.approx(350.0)
    rec = parse_regimen("808 mg 1h").to_records(dose_unit="umol", molar_mass=808.0)
    assert rec.AMT[0] == pytest.approx(1000.0) and rec.RATE[0] == pytest.approx(1000.0)
    assert parse_regimen("1000 umol").to_records(dose_unit="mg", molar_mass=808.0).AMT[0] == pytest.approx(808.0)
    with pytest.raises(ModelError, match="molar_mass"):
        parse_regimen("808 mg").to_records(dose_unit="umol")


def test_missing_covariate_is_named():
    with pytest.raises(ModelError, match="BSA"):
        parse_regimen("100 mg/m2 1h").to_records({"WT": 70})
    with pytest.raises(ModelError, match="WT"):
        parse_regimen("5 ug/kg").to_records({"BSA": 1.8})
    with pytest.raises(ModelError, match="BSA.*positive"):
        parse_regimen("100 mg/m2").to_records({"BSA": -1})


def test_doses_expands_repeats():
    doses = parse_regimen("100 mg/m2 1h q21d x3 @24h").doses({"BSA": 2.0})
    assert doses == [(24.0, 200.0, 200.0, 1.0, 1), (528.0, 200.0, 200.0, 1.0, 1), (1032.0, 200.0, 200.0, 1.0, 1)]


def test_scaled_and_delayed():
    reg = parse_regimen("100 mg/m2 1h q21d x4")
    reduced = reg.scaled(0.8)
    assert reduced.items[0].amount == pytest.approx(80.0)
    assert reduced.to_records({"BSA": 1.8}).RATE[0] == pytest.approx(144.0)
    assert reg.delayed(168).items[0].start == 168.0
    assert reg.items[0].start == 0.0  # original unchanged (frozen)
    with pytest.raises(ModelError):
        reg.scaled(0)
    with pytest.raises(ModelError, match="before time 0"):
        reg.delayed(-1)


@pytest.mark.parametrize("text", [
    "100 mg/m2 1h q21d x4",
    "75 mg/m2 1h q3w x6 @0",
    "5 ug/kg sc q24h x7 @24h cmt1",
    "80 mg oral q24h x7",
    "260 mg/m2 30min iv; 40 mg po @ 168h cmt 2",
    "0.125 umol 2.5h q36h x3 @12h",
    "10 mg iv",
])
def test_round_trip(text):
    reg = parse_regimen(text)
    assert parse_regimen(str(reg)) == reg
    assert str(parse_regimen(str(reg))) == str(reg)


def test_str_is_compact():
    assert str(parse_regimen("100 mg/m2 1h q21d x4")) == "100 mg/m2 1h infusion q3w x4"
    assert str(parse_regimen("80 mg oral q24h x7")) == "80 mg oral q24h x7"
    assert str(parse_regimen("5 ug/kg sc q24h x7 @24h cmt2")) == "5 ug/kg sc q24h x7 @24h cmt2"


@pytest.mark.parametrize("text, token, problem", [
    ("100 mg/m2 1h q3y", "3y", "interval"),
    ("abc", "abc", "amount"),
    ("100 furlongs", "furlongs", "unknown dose unit"),
    ("100 mg 1h q21d x0", "x0", "count"),
    ("100 mg 1h oral", "1h", "a duration needs an infusion"),
    ("100 mg infusion", "infusion", "needs a duration"),
    ("100 mg q1d q2d", "q2d", "interval given twice"),
    ("100 mg cmt0", "cmt0", "cmt"),
    ("100 mg banana", "banana", "unknown token"),
    ("100 mg @later", "later", "start time"),
    ("100 mg; ; 3 mg", ";", "empty dose"),
    ("100 mg x4", "100 mg x4", "need an interval"),
    ("100", "100", "missing dose unit"),
    ("0 mg", "0", "positive"),
])
def test_bad_inputs_point_at_token(text, token, problem):
    with pytest.raises(ModelError) as info:
        parse_regimen(text)
    msg = str(info.value)
    assert repr(text) in msg and problem in msg
    assert "e.g. '100 mg/m2 1h q21d x4'" in msg
    # the caret line sits under the offending token
    lines = msg.splitlines()
    text_line = next(i for i, line in enumerate(lines) if line == f"  {text}")
    caret = lines[text_line + 1]
    start = caret.index("^")
    assert lines[text_line][start:start + len(token)].lower() == token.lower()


@pytest.mark.parametrize("value", ["", "   ", None, 12])
def test_empty_or_non_string(value):
    with pytest.raises(ModelError, match="regimen"):
        parse_regimen(value)


def test_regimen_passthrough():
    reg = parse_regimen("1 mg")
    assert parse_regimen(reg) is reg and isinstance(reg, Regimen)
