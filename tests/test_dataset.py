"""read_dataset, Dataset and unit conversion."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pkpd.data.dataset import CANONICAL_COLUMNS, Dataset, ObservationArrays, read_dataset
from pkpd.errors import DatasetError
from pkpd.units import canonical_unit, convert_units

BASIC = """\
id,Time,dv,AMT,evid,MDV,cmt,DVID,WT,SEX
1,0,.,100,1,1,1,.,70,F
1,1,2.5,.,0,0,.,1,.,F

1,24,3.1,.,0,0,.,2,71,F
2,0,.,100,1,1,1,.,80,M
2,2,1.5,.,0,0,.,1,80,M
2,48,2.2,.,0,0,.,2,80,M
"""


def write(path, text, name="data.csv"):
    file = os.path.join(path, name)
    with open(file, "w") as handle:
        handle.write(text)
    return file


@pytest.fixture
def basic(tmp_path):
    return read_dataset(write(tmp_path, BASIC))


def test_header_case_and_missing_values(basic):
    df = basic.df
    assert list(df.columns) == [*CANONICAL_COLUMNS, "WT", "SEX", "LINE"]
    assert df["LINE"].tolist() == [2, 3, 5, 6, 7, 8]  # blank line 4 keeps its number
    assert df["ID"].tolist() == [1, 1, 1, 2, 2, 2] and df["ID"].dtype.kind == "i"
    assert np.isnan(df["DV"][0]) and df["DV"][1] == 2.5
    assert df["AMT"].tolist() == [100.0, 0, 0, 100.0, 0, 0]
    assert df["CMT"].tolist() == [1, 0, 0, 1, 0, 0]
    assert df["DVID"].tolist() == [0, 1, 2, 0, 1, 2]
    for col in ("EVID", "MDV", "CMT", "ADDL", "SS", "DVID"):
        assert df[col].dtype == np.int64, col
    for col in ("TIME", "DV", "AMT", "RATE", "II", "LLOQ"):
        assert df[col].dtype == np.float64, col
    assert df["CENS"].dtype == bool and not df["CENS"].any()
    assert df["WT"].dtype == np.float64 and np.isnan(df["WT"][1])
    assert basic.ids == [1, 2] and basic.n_subjects == 2
    assert basic.covariate_names == ("WT", "SEX")
    cov = basic.covariate_table()
    assert cov.index.name == "ID" and cov.loc[1, "WT"] == 70 and cov.loc[2, "SEX"] == "M"


def test_defaults_derived(tmp_path):
    text = "ID,TIME,DV,AMT\n1,0,.,50\n1,1,4,.\n1,2,.,.\nA2,0,.,25\nA2,3,1.0,0\n"
    ds = read_dataset(write(tmp_path, text))
    df = ds.df
    assert df["EVID"].tolist() == [1, 0, 0, 1, 0]
    assert df["MDV"].tolist() == [1, 0, 1, 1, 0]
    assert df["CMT"].tolist() == [1, 0, 0, 1, 0]
    assert df["DVID"].tolist() == [0, 1, 0, 0, 1]
    assert df["ID"].tolist() == ["1", "1", "1", "A2", "A2"]  # not all integral: text IDs
    text = "ID,TIME,DV,MDV,AMT\n1,0,.,1,.\n1,1,3,0,.\n"
    assert read_dataset(write(tmp_path, text)).df["EVID"].tolist() == [2, 0]


def test_time_in_days(tmp_path):
    text = "ID,TIME,DV,AMT,RATE,II,ADDL,EVID,MDV,CMT\n1,0,.,100,48,7,2,1,1,1\n1,1.5,2,.,.,.,.,0,0,.\n"
    ds = read_dataset(write(tmp_path, text), time_unit="days")
    df = ds.df
    assert df["TIME"].tolist() == [0.0, 36.0]
    assert df["II"][0] == 168.0 and df["RATE"][0] == 2.0 and df["AMT"][0] == 100.0
    assert ds.time_unit == "d"
    ds = read_dataset(write(tmp_path, text.replace(",48,", ",-2,")), time_unit="d")
    assert ds.df["RATE"][0] == -2.0  # flags are not scaled


def test_dose_units(tmp_path):
    text = "ID,TIME,DV,AMT,RATE\n1,0,.,1000,500\n1,1,2,.,.\n"
    df = read_dataset(write(tmp_path, text), dose_unit="ug").df
    assert df["AMT"][0] == 1.0 and df["RATE"][0] == 0.5
    df = read_dataset(write(tmp_path, text), dose_unit="g", time_unit="d").df
    assert df["AMT"][0] == 1e6 and df["RATE"][0] == pytest.approx(5e5 / 24)


OBS = "ID,TIME,DV,EVID,MDV,DVID,LLOQ\n1,1,{a},0,0,{d},{l}\n1,2,{b},0,0,{d},.\n"


@pytest.mark.parametrize(
    "dvid,unit,a,b,expected",
    [
        (2, "cells/uL", 1500, 2500, [1.5, 2.5]),
        (2, "/uL", 800, 300, [0.8, 0.3]),
        (3, "cells/mm3", 250000, 180000, [250.0, 180.0]),
        (5, "10^9/L", 4.5, 6, [4.5, 6.0]),
        (4, "g/L", 120, 95, [12.0, 9.5]),
        (4, "mmol/L", 6.2, 5, [6.2 * 1.611, 5 * 1.611]),
        (1, "ug/L", 500, 20, [0.5, 0.02]),
        (1, "ng/mL", 500, 20, [0.5, 0.02]),
        (1, "ug/mL", 3, 4, [3.0, 4.0]),
    ],
)
def test_observation_units(tmp_path, dvid, unit, a, b, expected):
    name = {1: "CONC", 2: "ANC", 3: "PLT", 4: "HGB", 5: "WBC"}[dvid]
    text = OBS.format(a=a, b=b, d=dvid, l=a / 2)
    ds = read_dataset(write(tmp_path, text), units={name: unit})
    np.testing.assert_allclose(ds.df["DV"], expected, rtol=1e-12)
    np.testing.assert_allclose(ds.df["LLOQ"][0], expected[0] / 2, rtol=1e-12)
    assert ds.units[name] == unit and canonical_unit(name) in ('10^9/L', 'g/dL', 'mg/L')
    assert ds.units["ANC"] == ("10^9/L" if name != "ANC" else unit)


def test_molar_units(tmp_path):
    text = OBS.format(a=2, b=1, d=1, l=".")
    ds = read_dataset(write(tmp_path, text), units={"CONC": "umol/L"}, molar_mass=808.0)
    np.testing.assert_allclose(ds.df["DV"], [1.616, 0.808], rtol=1e-12)
    assert ds.molar_mass == 808.0
    with pytest.raises(DatasetError, match="molar_mass"):
        read_dataset(write(tmp_path, text), units={"CONC": "umol/L"})
    with pytest.raises(DatasetError, match="molar_mass"):
        read_dataset(write(tmp_path, text), units={"CONC": "umol/L"}, validate=False)
    with pytest.raises(DatasetError, match="molar_mass"):
        convert_units([1.0], "CONC", "umol/L")
    np.testing.assert_allclose(convert_units([1500.0], "ANC", "cells/uL"), [1.5])


def test_unknown_unit_and_unknown_type(tmp_path):
    text = OBS.format(a=2, b=1, d=2, l=".")
    with pytest.raises(DatasetError, match=r"ANC.*'furlongs'.*cells/uL") as err:
        read_dataset(write(tmp_path, text), units={"ANC": "furlongs"})
    assert err.value.violations and err.value.violations[0].code == "unknown-unit"
    with pytest.raises(DatasetError, match="CRP"):
        read_dataset(write(tmp_path, text), observation_types={2: "CRP"})
    ds = read_dataset(write(tmp_path, text), observation_types={2: "CRP"}, units={"CRP": "mg/dL"})
    assert ds.df["DV"].tolist() == [2.0, 1.0] and ds.units == {"CRP": "mg/dL"}
    assert ds.observation_type_names == ("CRP",)
    with pytest.raises(DatasetError, match="time_unit"):
        read_dataset(write(tmp_path, text), time_unit="fortnights")


def test_censoring(tmp_path):
    text = ("ID,TIME,DV,EVID,MDV,DVID,LLOQ,BLQ\n1,1,0.05,0,0,1,0.1,0\n1,2,0.1,0,0,1,0.1,1\n"
            "1,3,0.5,0,0,1,0.1,0\n1,4,0.7,0,0,1,.,.\n")
    df = read_dataset(write(tmp_path, text)).df
    assert df["CENS"].tolist() == [True, True, False, False]
    assert "BLQ" not in df.columns
    text = "ID,TIME,DV,CENS\n1,1,0.2,1\n1,2,0.5,0\n"
    assert read_dataset(write(tmp_path, text)).df["CENS"].tolist() == [True, False]


def test_validation_errors_raise_with_violations(tmp_path):
    text = "ID,TIME,DV,AMT\n1,0,.,-5\n1,x,2,.\n"
    with pytest.raises(DatasetError) as err:
        read_dataset(write(tmp_path, text))
    codes = {(v.line, v.code) for v in err.value.violations}
    assert codes == {(2, "negative-amt"), (3, "non-numeric")}
    assert "negative-amt" in str(err.value) and "non-numeric" in str(err.value)
    with pytest.warns(UserWarning, match="dose of zero"):
        read_dataset(write(tmp_path, "ID,TIME,DV,AMT,EVID\n1,0,.,0,1\n1,1,2,.,0\n"))


def test_dataframe_source():
    frame = pd.DataFrame({"id": [1, 1], "time": [0.0, 1.0], "dv": [np.nan, 3.0],
                          "amt": [10.0, np.nan]})
    ds = read_dataset(frame)
    assert ds.source == "<DataFrame>" and ds.df["LINE"].tolist() == [2, 3]
    assert ds.df["EVID"].tolist() == [1, 0] and ds.df["DV"][1] == 3.0


def test_immutable(basic):
    with pytest.raises(AttributeError):
        basic.source = "x"
    with pytest.raises(AttributeError):
        basic.new_attribute = 1
    df = basic.df
    df.loc[1, "DV"] = 99.0
    df["TIME"] = 0.0
    assert basic.df["DV"][1] == 2.5 and basic.df["TIME"][2] == 24.0
    units = basic.units
    units["ANC"] = "cells/uL"
    assert basic.units["ANC"] == "10^9/L"


def test_subset(basic):
    sub = basic.subset([2])
    assert isinstance(sub, Dataset) and sub.ids == [2] and len(sub.df) == 3
    assert sub.df["LINE"].tolist() == [6, 7, 8]
    assert sub.hash != basic.hash and len(basic.df) == 6
    with pytest.raises(DatasetError, match="unknown subject"):
        basic.subset([3])


def _obs_csv(n_obs: int, n_subjects: int = 2) -> str:
    lines = ["ID,TIME,DV,AMT,EVID,MDV,DVID"]
    for s in range(1, n_subjects + 1):
        lines.append(f"{s},0,.,100,1,1,.")
        for k in range(n_obs):
            lines.append(f"{s},{k + 1},{1 + 0.1 * k},.,0,0,{1 if k % 2 else 2}")
    return "\n".join(lines) + "\n"


def test_observation_arrays_bucketed(tmp_path):
    a = read_dataset(write(tmp_path, _obs_csv(37, 3), "a.csv")).observation_arrays()
    b = read_dataset(write(tmp_path, _obs_csv(41, 3), "b.csv")).observation_arrays()
    assert isinstance(a, ObservationArrays)
    assert a.time.shape == b.time.shape == (3, 48)
    assert a.mask.sum() == 3 * 37 and b.mask.sum() == 3 * 41
    c = read_dataset(write(tmp_path, _obs_csv(5, 5), "c.csv")).observation_arrays(min_obs=20)
    assert c.value.shape == (6, 24) and c.subject_mask.tolist() == [True] * 5 + [False]
    assert not c.mask[5].any() and (c.row[5] == -1).all()
    assert set(ObservationArrays._fields) == {
        "time", "value", "dvid", "cens", "lloq", "mask", "row", "subject_mask"}


def test_observation_arrays_values(basic):
    arr = basic.observation_arrays()
    assert arr.time.shape == (2, 2)
    np.testing.assert_array_equal(arr.time, [[1.0, 24.0], [2.0, 48.0]])
    np.testing.assert_array_equal(arr.value, [[2.5, 3.1], [1.5, 2.2]])
    assert basic.observation_type_names == ("CONC", "ANC", "PLT", "HGB", "WBC", "GCSF", "EPO")
    np.testing.assert_array_equal(arr.dvid, [[0, 1], [0, 1]])
    np.testing.assert_array_equal(arr.row, [[1, 2], [4, 5]])
    assert arr.mask.all() and not arr.cens.any() and (arr.lloq == 0).all()
    assert arr.time.dtype == np.float64 and arr.dvid.dtype == np.int64 and arr.mask.dtype == bool
    df = basic.df
    assert (df["DV"].to_numpy()[arr.row[arr.mask]] == arr.value[arr.mask]).all()
    big = basic.observation_arrays(min_obs=3, min_subjects=3)
    assert big.value.shape == (3, 3)
    assert big.value[0, 2] == 0.0 and big.time[0, 2] == 24.0 and not big.mask[0, 2]
    assert big.row[2].tolist() == [-1, -1, -1] and not big.subject_mask[2]


def test_to_csv_round_trip(tmp_path):
    text = ("ID,TIME,DV,AMT,RATE,II,ADDL,EVID,MDV,CMT,DVID,LLOQ,WT,SEX\n"
            "1,0,.,1000,500,1,3,1,1,1,.,.,70.5,F\n1,0.5,1500,.,.,.,.,0,0,.,2,100,.,F\n"
            "2,0,.,2000,0,0,0,1,1,1,.,.,80,M\n2,1.25,300,.,.,.,.,0,0,.,1,400,80,M\n")
    ds = read_dataset(write(tmp_path, text), time_unit="d", dose_unit="ug",
                      units={"ANC": "cells/uL", "CONC": "ug/L"})
    out = os.path.join(tmp_path, "out.csv")
    ds.to_csv(out)
    back = read_dataset(out)
    pd.testing.assert_frame_equal(back.df, ds.df)
    assert back.df["CENS"].tolist() == [False, False, False, True]
    with open(out) as handle:
        assert ".," in handle.read()


def test_hash(tmp_path, basic):
    again = read_dataset(write(tmp_path, BASIC, "again.csv"))
    assert again.hash == basic.hash and len(basic.hash) == 64
    changed = read_dataset(write(tmp_path, BASIC.replace("2,2,1.5", "2,2,1.6"), "changed.csv"))
    assert changed.hash != basic.hash
    relabelled = read_dataset(write(tmp_path, BASIC, "again.csv"), units={"ANC": "cells/uL"},
                              validate=False)
    assert relabelled.hash != basic.hash


# ------------------------------------------------- no silent reinterpretation (issue 11)


def test_short_row_is_not_padded_into_another_record(tmp_path):
    # line 3 lacks its last field (DVID): padding used to turn the ANC value into a CONC
    text = "ID,TIME,DV,EVID,MDV,DVID\n1,0,2.0,0,0,2\n1,24,1.1,0,0\n"
    with pytest.raises(DatasetError) as err:
        read_dataset(write(tmp_path, text))
    assert [(v.line, v.column, v.code) for v in err.value.violations] == [(3, "DVID", "field-count")]


def test_one_id_written_two_ways_is_refused(tmp_path):
    text = "ID,TIME,DV,AMT,EVID\n1,0,.,100,1\n1,24,2.5,.,0\n01,0,.,80,1\n01,24,1.5,.,0\n"
    with pytest.raises(DatasetError, match="ID '01' is the same number as ID '1'") as err:
        read_dataset(write(tmp_path, text))
    assert {(v.line, v.code) for v in err.value.violations} >= {(4, "id-spelling")}


def test_long_numeric_ids_keep_every_digit(tmp_path):
    # 2**53 and 2**53 + 1 are one float: reading IDs through float merged two patients
    text = "ID,TIME,DV\n9007199254740992,1,2.0\n9007199254740993,1,3.0\n"
    ds = read_dataset(write(tmp_path, text))
    assert ds.ids == [9007199254740992, 9007199254740993] and ds.n_subjects == 2
    text = "ID,TIME,DV\n12345678901234567890123,1,2.0\n12345678901234567890124,1,3.0\n"  # beyond int64: text
    assert read_dataset(write(tmp_path, text)).ids == ["12345678901234567890123", "12345678901234567890124"]


def test_warnings_are_passed_on_and_censoring_limit_is_kept(tmp_path):
    text = "ID,TIME,DV,DVID,CENS,WT\n1,24,0,2,0,70\n1,48,0.05,1,1,70\n2,24,2.0,2,0,.\n"
    with pytest.warns(UserWarning) as record:
        ds = read_dataset(write(tmp_path, text))
    messages = "\n".join(str(w.message) for w in record)
    assert "line 2: ANC DV 0" in messages and "pkpd fit" in messages  # zero count, log-scale error model
    assert "line 3: censored observation without an LLOQ" in messages
    assert "line 4: covariate WT has no value for ID 2" in messages
    df = ds.df
    assert df["CENS"].tolist() == [False, True, False]
    assert df["LLOQ"][1] == 0.05 and np.isnan(df["LLOQ"][0])  # DV = LLOQ on the censored row

