"""Compact regimens: parsing, dose records, conversions and error messages."""

from __future__ import annotations

import math

import pytest

from pkpd.errors import ModelError
from pkpd.dosing.regimen import DoseSpec, Regimen, parse_regimen

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


# ----------------------------------------------------------------------------- several drugs, new units


from pkpd.dosing.regimen import COLUMNS as RECORD_COLUMNS, DrugInput  # noqa: E402


def _caret_token(msg: str, text: str) -> str:
    """The part of ``text`` above the caret line of an error message."""
    lines = msg.splitlines()
    i = next(k for k, line in enumerate(lines) if line == f"  {text}")
    caret = lines[i + 1]
    start = caret.index("^")
    return lines[i][start:start + caret.count("^")]


@pytest.mark.parametrize("text, expected", [
    ("docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4", (
        DoseSpec(amount=75.0, unit="mg/m2", duration=1.0, route="infusion", interval=504.0, count=4,
                 drug="docetaxel"),
        DoseSpec(amount=6.0, unit="mg", route="sc", interval=504.0, count=4, start=24.0, drug="pegfilgrastim"))),
    ("filgrastim 5 ug/kg sc daily x10 @24h", (
        DoseSpec(amount=5.0, unit="ug/kg", route="sc", interval=24.0, count=10, start=24.0, drug="filgrastim"),)),
    ("platelets 1 unit @240h", (DoseSpec(amount=1.0, unit="unit", start=240.0, drug="platelets"),)),
    ("platelets 2 Units @10d", (DoseSpec(amount=2.0, unit="unit", start=240.0, drug="platelets"),)),
    ("darbepoetin 500 ug sc q3w", (DoseSpec(amount=500.0, unit="ug", route="sc", interval=504.0,
                                            drug="darbepoetin"),)),
    ("epoetin 40000 IU sc weekly x4", (DoseSpec(amount=40000.0, unit="IU", route="sc", interval=168.0, count=4,
                                                drug="epoetin"),)),
    ("Epoetin 150 IU/kg sc q1w x3", (DoseSpec(amount=150.0, unit="IU/kg", route="sc", interval=168.0, count=3,
                                              drug="epoetin"),)),
    ("interferon 3 MIU sc q48h x3", (DoseSpec(amount=3.0, unit="MIU", route="sc", interval=48.0, count=3,
                                              drug="interferon"),)),
    ("G-CSF 300 mcg sc daily x5", (DoseSpec(amount=300.0, unit="ug", route="sc", interval=24.0, count=5,
                                            drug="g-csf"),)),
    ("carboplatin 2 mmol 30min", (DoseSpec(amount=2.0, unit="mmol", duration=0.5, route="infusion",
                                           drug="carboplatin"),)),
    ("5 kIU iv", (DoseSpec(amount=5.0, unit="kIU", route="iv"),)),
])
def test_parse_named_drugs_and_new_units(text, expected):
    reg = parse_regimen(text)
    assert reg.items == expected
    assert parse_regimen(str(reg)) == reg  # round trip
    assert str(parse_regimen(str(reg))) == str(reg)


def test_named_intervals_and_drug_properties():
    reg = parse_regimen("docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4; docetaxel 10 mg @2000h")
    assert reg.drugs == ("docetaxel", "pegfilgrastim")
    assert reg.last_time == 2000.0 and reg.items[1].last_time == 24.0 + 3 * 504.0
    assert [d.amount for d in reg.for_drug("DOCETAXEL")] == [75.0, 10.0]
    assert parse_regimen("1 mg daily x2").items[0].interval == 24.0
    assert parse_regimen("1 mg weekly x2").items[0].interval == 168.0
    assert str(parse_regimen("filgrastim 5 ug/kg sc daily x10 @24h")) == "filgrastim 5 ug/kg sc q24h x10 @24h"
    assert parse_regimen("250 mg").items[0].drug is None and parse_regimen("250 mg").drugs == ()


@pytest.mark.parametrize("text, token, problem", [
    ("1e400 mg", "1e400", "not a finite number"),
    ("docetaxel 1e400mg/m2 1h", "1e400", "not a finite number"),
    ("2e15 mg", "2e15", "at most 1e+15"),
    ("100 mg q1e400h x2", "1e400h", "interval"),
    ("100 mg @1e400d", "1e400d", "start time"),
    ("100 mg 1e400h", "1e400h", "duration"),
    ("100 mg q1d x100000", "x100000", "count from 1 to 10000"),
    ("100 mg q100000h x12", "100 mg q100000h x12", "after 1e+06 h"),
    ("100 mg cmt99999", "cmt99999", "cmt"),
    ("filgrastim 5 ug/kg sc bid x10", "bid", "q12h"),
    ("filgrastim 5 ug/kg sc qd x10", "qd", "daily"),
    ("1 mg daily q24h x2", "q24h", "interval given twice"),
    ("epoetin 3 miu sc", "miu", "ambiguous dose unit"),
    ("docetaxel", "docetaxel", "expected an amount"),
    ("docetaxel pegfilgrastim 6 mg", "pegfilgrastim", "expected an amount"),
    ("daily 100 mg", "daily", "drug name"),
    ("q3w 100 mg", "q3w", "drug name"),
    ("docetaxel 75 mg/L", "mg/L", "unknown dose unit"),
    ("docetaxel 75 mg/m2 1h; 6 mg sc; pegfilgrastim x", "x", "expected an amount"),
])
def test_bad_new_inputs_point_at_token(text, token, problem):
    with pytest.raises(ModelError) as info:
        parse_regimen(text)
    msg = str(info.value)
    assert repr(text) in msg and problem in msg
    assert _caret_token(msg, text).lower() == token.lower()


def test_multi_drug_records():
    reg = parse_regimen("docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4")
    drugs = {"Docetaxel": DrugInput(cmt=1, dose_unit="umol", molar_mass=808.0),
             "pegfilgrastim": DrugInput(cmt=5, sc_cmt=4, dose_unit="ug")}
    rec = reg.to_records({"BSA": 2.0}, drugs=drugs, id=3)
    assert list(rec.columns) == RECORD_COLUMNS + ["DRUG"]
    assert rec.DRUG.tolist() == ["Docetaxel", "pegfilgrastim"]  # the names the model gave
    assert rec.CMT.tolist() == [1, 4] and rec.TIME.tolist() == [0.0, 24.0] and rec.ID.tolist() == [3, 3]
    assert rec.AMT[0] == pytest.approx(150.0 * 1000.0 / 808.0) and rec.RATE[0] == pytest.approx(rec.AMT[0])
    assert rec.AMT[1] == pytest.approx(6000.0) and rec.RATE[1] == 0.0
    assert rec.II.tolist() == [504.0, 504.0] and rec.ADDL.tolist() == [3, 3]
    doses = reg.doses({"BSA": 2.0}, drugs=drugs)
    assert len(doses) == 8 and doses[1] == (24.0, pytest.approx(6000.0), 0.0, 0.0, 4)


def test_multi_drug_mapping_rules():
    drugs = {"filgrastim": {"cmt": 2, "sc_cmt": 1, "dose_unit": "ug"}}  # a dict works too
    rec = parse_regimen("filgrastim 5 ug/kg sc daily x10 @24h; filgrastim 300 ug iv @0").to_records(
        {"WT": 70.0}, drugs=drugs)
    assert rec.CMT.tolist() == [2, 1] and rec.AMT.tolist() == pytest.approx([300.0, 350.0])
    # cmt<n> on the dose line wins over the mapping; an unnamed dose goes to the only drug
    rec = parse_regimen("filgrastim 300 ug sc cmt7; 10 ug").to_records(drugs=drugs)
    assert rec.CMT.tolist() == [2, 7] and rec.DRUG.tolist() == ["filgrastim", "filgrastim"]
    # a blood product: what a unit holds comes from the caller
    plt = {"platelets": DrugInput(cmt=6, dose_unit="10^9cells", unit_amount="3e11 cells")}
    rec = parse_regimen("platelets 2 units @240h").to_records(drugs=plt)
    assert rec.AMT.tolist() == [600.0] and rec.CMT.tolist() == [6]
    # an activity stays an activity
    rec = parse_regimen("epoetin 40000 IU sc weekly x4").to_records(
        drugs={"epoetin": DrugInput(cmt=2, sc_cmt=1, dose_unit="kIU")})
    assert rec.AMT.tolist() == [40.0] and rec.ADDL.tolist() == [3] and rec.II.tolist() == [168.0]


@pytest.mark.parametrize("text, covariates, drugs, token, problem", [
    ("docetaxel 75 mg/m2 1h; pegfilgrastm 6 mg sc @24h", {"BSA": 2.0},
     {"docetaxel": DrugInput(cmt=1), "pegfilgrastim": DrugInput(cmt=2, sc_cmt=3)}, "pegfilgrastm", "unknown drug"),
    ("docetaxel 75 mg/m2 1h; pegfilgrastim 6 mg sc @24h", {"WT": 70},
     {"docetaxel": DrugInput(cmt=1), "pegfilgrastim": DrugInput(cmt=2, sc_cmt=3)}, "mg/m2", "covariate BSA"),
    ("filgrastim 5 ug/kg sc daily x10", {"BSA": 2.0}, {"filgrastim": DrugInput(cmt=2, sc_cmt=1)}, "ug/kg",
     "covariate WT"),
    ("docetaxel 75 mg/m2 1h; pegfilgrastim 6 mg sc @24h", {"BSA": 2.0},
     {"docetaxel": DrugInput(cmt=1), "pegfilgrastim": DrugInput(cmt=2)}, "sc", "takes no sc dose"),
    ("docetaxel 75 mg/m2 1h; 6 mg sc @24h", {"BSA": 2.0},
     {"docetaxel": DrugInput(cmt=1), "pegfilgrastim": DrugInput(cmt=2, sc_cmt=3)}, "6", "names no drug"),
    ("epoetin 40000 IU sc weekly x4", {}, {"epoetin": DrugInput(cmt=2, sc_cmt=1)}, "IU", "cannot convert IU to mg"),
    ("platelets 1 unit @240h", {}, {"platelets": DrugInput(cmt=6, dose_unit="cells")}, "unit", "unit_amount"),
    ("docetaxel 75 mg 1h", {}, {"docetaxel": DrugInput(cmt=1, dose_unit="umol")}, "mg", "molar_mass"),
    ("docetaxel 75 mg/m2 1h; pegfilgrastim 6 mg sc @24h", {"BSA": 2.0}, None, "pegfilgrastim",
     "names several drugs"),
])
def test_dose_errors_point_at_token(text, covariates, drugs, token, problem):
    with pytest.raises(ModelError) as info:
        parse_regimen(text).to_records(covariates, drugs=drugs)
    msg = str(info.value)
    assert msg.startswith(f"cannot dose regimen {text!r}") and problem in msg
    assert _caret_token(msg, text) == token


def test_dose_errors_after_scaling_quote_the_regimen():
    reg = parse_regimen("docetaxel 75 mg/m2 1h").scaled(0.8)
    with pytest.raises(ModelError) as info:
        reg.to_records({})
    assert _caret_token(str(info.value), str(reg)) == "mg/m2" and "60 mg/m2" in str(reg)


def test_single_drug_path_with_a_named_drug():
    rec = parse_regimen("docetaxel 100 mg/m2 1h q21d x4").to_records({"BSA": 1.8}, dose_unit="mg", molar_mass=808.0)
    assert list(rec.columns) == RECORD_COLUMNS + ["DRUG"] and rec.DRUG.tolist() == ["docetaxel"]
    assert rec.AMT[0] == pytest.approx(180.0) and rec.CMT[0] == 1
    rec = parse_regimen("100 mg; 5 mg cmt3").to_records(cmt=2)  # default compartment of unmarked doses
    assert rec.CMT.tolist() == [2, 3] and list(rec.columns) == RECORD_COLUMNS
    rec = parse_regimen("platelets 1 unit").to_records(dose_unit="10^9cells", unit_amount="3e11 cells")
    assert rec.AMT.tolist() == [300.0]


def test_to_records_argument_errors():
    reg = parse_regimen("docetaxel 75 mg")
    with pytest.raises(ModelError, match="give dose_unit per drug"):
        reg.to_records(dose_unit="mg", drugs={"docetaxel": DrugInput(cmt=1)})
    with pytest.raises(ModelError, match="drugs must map drug names"):
        reg.to_records(drugs={})
    with pytest.raises(ModelError, match=r"drugs\['docetaxel'\].*fields: cmt"):
        reg.to_records(drugs={"docetaxel": {"compartment": 1}})
    with pytest.raises(ModelError, match="given twice"):
        reg.to_records(drugs={"docetaxel": DrugInput(cmt=1), "DOCETAXEL": DrugInput(cmt=2)})
    with pytest.raises(ModelError, match="cmt must be an integer"):
        reg.to_records(cmt=0)
    with pytest.raises(ModelError, match="dose_unit: unknown amount unit 'furlong'"):
        reg.to_records(dose_unit="furlong")


@pytest.mark.parametrize("kwargs, problem", [
    ({"cmt": 0}, "DrugInput.cmt"), ({"cmt": 1.5}, "DrugInput.cmt"), ({"cmt": 1, "sc_cmt": -1}, "DrugInput.sc_cmt"),
    ({"cmt": 1, "dose_unit": "mg/m2"}, "DrugInput.dose_unit"), ({"cmt": 1, "molar_mass": 0}, "molar_mass"),
    ({"cmt": 1, "unit_amount": "lots"}, "unit_amount"), ({"cmt": 1, "unit_amount": float("inf")}, "unit_amount"),
])
def test_drug_input_validation(kwargs, problem):
    with pytest.raises(ModelError, match=problem):
        DrugInput(**kwargs)


def test_scaled_and_delayed_for_one_drug():
    reg = parse_regimen("docetaxel 75 mg/m2 1h q21d x4; pegfilgrastim 6 mg sc @24h q21d x4")
    reduced = reg.scaled(0.8, drug="Docetaxel")
    assert [d.amount for d in reduced] == [pytest.approx(60.0), 6.0]
    later = reg.delayed(24, drug="pegfilgrastim")
    assert [d.start for d in later] == [0.0, 48.0]
    assert [d.start for d in reg.delayed(24)] == [24.0, 48.0]
    with pytest.raises(ModelError, match="drug 'filgrastim' is not in regimen"):
        reg.scaled(0.8, drug="filgrastim")
    with pytest.raises(ModelError, match="before time 0"):
        reg.delayed(-12, drug="docetaxel")
    with pytest.raises(ModelError, match="outside"):
        reg.scaled(1e300)
    with pytest.raises(ModelError, match="past"):
        reg.delayed(1e7)
    with pytest.raises(ModelError, match="delay must be a number"):
        reg.delayed(float("inf"))


def test_amount_in_refuses_non_finite_results():
    with pytest.raises(ModelError, match="not a finite positive amount"):
        parse_regimen("1e15 mg/m2").items[0].amount_in({"BSA": 1e300}, "ng")
