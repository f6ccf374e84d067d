"""check_dataset: every violation kind, line numbers, the CLI, and a property test."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pkpd.cli
from pkpd.errors import DatasetError
from pkpd.data.validation import ValidationReport, Violation, check_dataset

HEADER = ["ID", "TIME", "DV", "AMT", "RATE", "II", "ADDL", "SS", "EVID", "MDV", "CMT", "DVID"]
# Clean rows; the comment is each row's CSV line number.
CLEAN = [
    ["1", "0", ".", "100", "0", "0", "0", "0", "1", "1", "1", "0"],  # 2
    ["1", "1", "2.5", ".", ".", ".", ".", ".", "0", "0", "0", "1"],  # 3
    ["1", "24", "3.1", ".", ".", ".", ".", ".", "0", "0", "0", "2"],  # 4
    ["2", "0", ".", "100", "0", "0", "0", "0", "1", "1", "1", "0"],  # 5
    ["2", "2", "1.5", ".", ".", ".", ".", ".", "0", "0", "0", "1"],  # 6
    ["2", "48", "2.0", ".", ".", ".", ".", ".", "0", "0", "0", "2"],  # 7
]


def to_text(rows, header=HEADER) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def write(path, rows, header=HEADER, name="data.csv"):
    file = os.path.join(path, name)
    with open(file, "w") as handle:
        handle.write(rows if isinstance(rows, str) else to_text(rows, header))
    return file


def edit(line: int, **cells):
    """Rows of CLEAN with the cells of CSV line ``line`` replaced."""
    rows = [list(r) for r in CLEAN]
    for col, value in cells.items():
        rows[line - 2][HEADER.index(col)] = value
    return rows


def find(report, code):
    return [v for v in report.violations if v.code == code]


def test_clean_file_has_no_violations(tmp_path):
    report = check_dataset(write(tmp_path, CLEAN))
    assert report.violations == []
    assert report.ok and report.n_rows == 6 and report.n_subjects == 2
    assert report.render() == "no violations"


# (rows, kwargs, line, column, code, phrase)
CASES = {
    "non-numeric": (edit(3, TIME="abc"), {}, 3, "TIME", "non-numeric", "'abc' is not a number"),
    "non-integer": (edit(3, EVID="0.5"), {}, 3, "EVID", "non-integer", "not an integer"),
    "non-finite": (edit(3, DV="inf"), {}, 3, "DV", "non-finite", "not finite"),
    "missing-id": (edit(3, ID="."), {}, 3, "ID", "missing-value", "ID is missing"),
    "missing-time": (edit(3, TIME=""), {}, 3, "TIME", "missing-value", "TIME is missing"),
    "time-decreasing": (edit(4, TIME="0.5"), {}, 4, "TIME", "time-decreasing",
                        "TIME 0.5 is before the previous TIME 1 of ID 1"),
    "id-not-contiguous": (CLEAN + [["1", "72", "2", ".", ".", ".", ".", ".", "0", "0", "0", "1"]],
                          {}, 8, "ID", "id-not-contiguous", "ID 1 reappears"),
    "negative-amt": (edit(2, AMT="-100"), {}, 2, "AMT", "negative-amt", "AMT -100 is negative"),
    "negative-rate": (edit(2, RATE="-3"), {}, 2, "RATE", "negative-rate", "RATE -3 is negative"),
    "negative-ii": (edit(2, II="-24"), {}, 2, "II", "negative-ii", "II -24 is negative"),
    "negative-count": (edit(4, DV="-1.2"), {}, 4, "DV", "negative-count", "negative for ANC"),
    "negative-conc": (edit(3, DV="-0.1"), {}, 3, "DV", "negative-conc", "negative concentration"),
    "bad-evid": (edit(3, EVID="5"), {}, 3, "EVID", "bad-evid", "EVID 5 is not one of"),
    "dose-with-dv": (edit(2, DV="7"), {}, 2, "DV", "dose-with-dv", "has DV 7"),
    "obs-without-dv": (edit(3, DV="."), {}, 3, "DV", "obs-without-dv", "has no DV"),
    "unknown-cmt": (edit(2, CMT="5"), {"compartments": (1, 2)}, 2, "CMT", "unknown-cmt",
                    "CMT 5 is not a compartment"),
    "unknown-cmt-zero-dose": (edit(2, CMT="0"), {}, 2, "CMT", "unknown-cmt", "positive"),
    "unknown-cmt-obs": (edit(3, CMT="7"), {"compartments": [1]}, 3, "CMT", "unknown-cmt",
                        "expected one of 1"),
    "unknown-dvid": (edit(3, DVID="9"), {}, 3, "DVID", "unknown-dvid", "DVID 9 is not a known"),
    "addl-without-ii": (edit(2, ADDL="3"), {}, 2, "II", "addl-without-ii", "need II > 0"),
    "ss-without-ii": (edit(2, SS="1"), {}, 2, "II", "ss-without-ii", "steady-state dose"),
    "bad-ss": (edit(2, SS="3", II="24"), {}, 2, "SS", "bad-ss", "SS 3 is not one of"),
    "modelled-rate": (edit(2, RATE="-1"), {}, 2, "RATE", "modelled-rate-undefined", "R1"),
    "modelled-duration": (edit(5, RATE="-2", CMT="2"), {"modelled_rates": ["R2"]}, 5, "RATE",
                          "modelled-rate-undefined", "D2 is neither"),
    "duplicate-row": (CLEAN[:2] + [CLEAN[1]] + CLEAN[2:], {}, 4, None, "duplicate-row",
                      "duplicates line 3"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_violation_kind(tmp_path, name):
    rows, kwargs, line, column, code, phrase = CASES[name]
    report = check_dataset(write(tmp_path, rows), **kwargs)
    hits = [v for v in report.violations if v.code == code]
    assert len(hits) == 1, report.render()
    hit = hits[0]
    assert (hit.line, hit.column, hit.severity) == (line, column, "error")
    assert phrase in hit.message
    assert not report.ok
    # the fault is the only error in the file
    assert {v.line for v in report.errors} == {line}, report.render()


def test_missing_column_and_no_data(tmp_path):
    header = [h for h in HEADER if h != "DV"]
    rows = [[c for h, c in zip(HEADER, r) if h != "DV"] for r in CLEAN]
    report = check_dataset(write(tmp_path, rows, header))
    (hit,) = find(report, "missing-column")
    assert (hit.line, hit.column) == (1, "DV") and "required column DV" in hit.message
    report = check_dataset(write(tmp_path, "id,time,dv\n", name="h.csv"))
    (hit,) = report.violations
    assert (hit.line, hit.code) == (None, "no-data") and "no data rows" in hit.message


def test_allowed_special_cases_are_clean(tmp_path):
    # EVID 3 reset lets TIME go back; a modelled rate present; constant-infusion SS
    rows = edit(4, TIME="0", EVID="3", MDV="1", DV=".", DVID="0")
    rows = [r[:] for r in rows]
    rows[0][HEADER.index("RATE")] = "-1"
    assert check_dataset(write(tmp_path, rows), modelled_rates=("R1",)).violations == []
    rows = edit(2, AMT="0", RATE="10", SS="1")
    assert check_dataset(write(tmp_path, rows)).violations == []
    # a column named D1 also defines a modelled duration
    header = HEADER + ["D1"]
    rows = [r + ["1"] for r in edit(2, RATE="-2")]
    assert check_dataset(write(tmp_path, rows, header)).violations == []


def test_zero_dose_is_a_warning(tmp_path):
    report = check_dataset(write(tmp_path, edit(2, AMT="0")))
    (hit,) = report.violations
    assert (hit.line, hit.column, hit.severity, hit.code) == (2, "AMT", "warning", "zero-dose")
    assert "dose of zero" in hit.message and report.ok and report.warnings == [hit]


@pytest.mark.parametrize(
    "type_,dvid,values,unit,expected",
    [
        ("ANC", "2", ("1500", "2200"), None, "look like cells/uL"),
        ("ANC", "2", ("1.5", "2.2"), "cells/uL", "look like 10^9/L"),
        ("WBC", "5", ("4500", "6000"), None, "look like cells/uL"),
        ("PLT", "3", ("250000", "180000"), None, "look like cells/uL"),
        ("PLT", "3", ("250", "180"), "/uL", "look like 10^9/L"),
        ("HGB", "4", ("120", "98"), None, "look like g/L"),
        ("HGB", "4", ("12", "9.8"), "g/L", "look like g/dL"),
    ],
)
def test_unit_mismatch(tmp_path, type_, dvid, values, unit, expected):
    rows = edit(4, DV=values[0], DVID=dvid)
    rows[5][HEADER.index("DV")], rows[5][HEADER.index("DVID")] = values[1], dvid
    units = {type_: unit} if unit else None
    report = check_dataset(write(tmp_path, rows), units=units)
    (hit,) = report.violations
    assert (hit.line, hit.column, hit.code) == (None, "DV", "unit-mismatch")
    assert expected in hit.message.replace("values look", "look") and type_ in hit.message
    # declaring the suggested unit fixes it
    suggested = expected.split("like ")[1]
    assert check_dataset(write(tmp_path, rows), units={type_: suggested}).ok


def test_unit_argument_problems(tmp_path):
    file = write(tmp_path, CLEAN)
    (hit,) = check_dataset(file, units={"ANC": "furlongs"}).violations
    assert hit.code == "unknown-unit" and hit.line is None
    assert "ANC" in hit.message and "furlongs" in hit.message and "cells/uL" in hit.message
    (hit,) = check_dataset(file, units={"CONC": "umol/L"}).violations
    assert hit.code == "missing-unit" and "molar_mass" in hit.message
    assert check_dataset(file, units={"CONC": "umol/L"}, molar_mass=808).ok
    (hit,) = check_dataset(file, time_unit="fortnights").violations
    assert (hit.code, hit.column) == ("unknown-unit", "TIME") and "fortnights" in hit.message
    (hit,) = check_dataset(file, observation_types={1: "CONC", 2: "CRP"}).violations
    assert hit.code == "missing-unit" and "CRP" in hit.message
    assert check_dataset(file, observation_types={1: "CONC", 2: "CRP"}, units={"CRP": "mg/L"}).ok


def test_structure_problems_and_blank_lines(tmp_path):
    text = to_text(CLEAN).splitlines()
    text.insert(3, "")  # blank line 4: later rows shift down by one
    text[4] = text[4].replace("1,24,3.1", "1,0.5,3.1")  # line 5 (was 4)
    text[6] += ",99"  # line 7 (was 6): an extra field
    report = check_dataset(write(tmp_path, "\n".join(text) + "\n"))
    got = {(v.line, v.code) for v in report.violations}
    assert got == {(5, "time-decreasing"), (7, "field-count")}
    header = ["ID", "id", "TIME", "DV"]
    report = check_dataset(write(tmp_path, [["1", "1", "0", "1"]], header))
    assert [(v.line, v.column, v.code) for v in report.violations] == [(1, "ID", "duplicate-column")]


def test_dozen_faults_each_reported_with_its_line(tmp_path):
    rows = [list(r) for r in CLEAN] + [
        ["3", "0", ".", "100", "0", "0", "0", "0", "1", "1", "1", "0"],  # 8
        ["3", "4", "1.1", ".", ".", ".", ".", ".", "0", "0", "0", "1"],  # 9
        ["3", "30", "2.9", ".", ".", ".", ".", ".", "0", "0", "0", "2"],  # 10
        ["3", "50", "3.3", ".", ".", ".", ".", ".", "0", "0", "0", "2"],  # 11
    ]
    faults = {
        (2, "AMT", "negative-amt"): ("AMT", "-5"),
        (3, "TIME", "non-numeric"): ("TIME", "one"),
        (4, "DV", "negative-count"): ("DV", "-3"),
        (5, "DV", "dose-with-dv"): ("DV", "12"),
        (6, "EVID", "bad-evid"): ("EVID", "9"),
        (7, "DVID", "unknown-dvid"): ("DVID", "8"),
        (8, "II", "addl-without-ii"): ("ADDL", "4"),
        (9, "DV", "obs-without-dv"): ("DV", "."),
        (10, "TIME", "time-decreasing"): ("TIME", "3"),
        (11, "RATE", "negative-rate"): ("RATE", "-7"),
    }
    for (line, _, _), (col, value) in faults.items():
        rows[line - 2][HEADER.index(col)] = value
    rows.append(["3", "60", "3.0", ".", ".", ".", ".", ".", "0", "0", "0", "2"])  # 12
    rows.append(list(rows[-1]))  # 13: duplicate of 12
    rows.append(["1", "100", "2", ".", ".", ".", ".", ".", "0", "0", "0", "1"])  # 14
    expected = set(faults) | {(13, None, "duplicate-row"), (14, "ID", "id-not-contiguous")}
    report = check_dataset(write(tmp_path, rows))
    got = {(v.line, v.column, v.code) for v in report.errors}
    assert expected <= got, report.render()
    assert len(report.errors) == len(expected), report.render()
    lines = [v.line for v in report.violations]
    assert lines == sorted(lines)
    frame = report.to_frame()
    assert list(frame.columns) == ["line", "column", "severity", "code", "message"]
    assert len(frame) == len(report.violations)
    table = report.render()
    assert all(code in table for _, _, code in expected)
    assert "10 errors" not in report.summary() and "12 errors" in report.summary()


def test_dataframe_source_lines():
    import pandas as pd

    frame = pd.DataFrame([r for r in edit(4, TIME="0.5")], columns=[h.lower() for h in HEADER])
    report = check_dataset(frame)
    assert [(v.line, v.code) for v in report.violations] == [(4, "time-decreasing")]
    assert report.source == "<DataFrame>"


def test_unreadable_files_raise(tmp_path):
    empty = write(tmp_path, "", name="empty.csv")
    binary = os.path.join(tmp_path, "x.png")
    with open(binary, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    for path, phrase in [(empty, "empty"), (binary, "binary"), (str(tmp_path), "directory"),
                         (os.path.join(tmp_path, "nope.csv"), "no such file")]:
        with pytest.raises(DatasetError, match=phrase):
            check_dataset(path)


def test_violation_is_frozen():
    v = Violation(2, "AMT", "error", "negative-amt", "x")
    with pytest.raises(AttributeError):
        v.line = 3
    assert ValidationReport([v]).ok is False


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch):
    """pkpd.cli.main restricted to the check command (others may not exist yet)."""
    monkeypatch.setattr(pkpd.cli, "_COMMANDS", ["check"])
    return pkpd.cli.main


def test_cli_exit_codes(tmp_path, cli, capsys):
    assert cli(["check", write(tmp_path, CLEAN)]) == 0
    out = capsys.readouterr().out
    assert "data.csv: 0 errors, 0 warnings (6 rows, 2 subjects)" in out
    assert cli(["check", write(tmp_path, edit(2, AMT="0"))]) == 0
    assert "1 warning" in capsys.readouterr().out
    assert cli(["check", write(tmp_path, edit(2, AMT="-1"))]) == 2
    out = capsys.readouterr().out
    assert "negative-amt" in out and "1 error," in out
    file = write(tmp_path, edit(2, CMT="3", RATE="-1"))
    assert cli(["check", file, "--compartments", "1,3", "--modelled", "R3"]) == 0
    assert cli(["check", file, "--compartments", "1,2"]) == 2
    capsys.readouterr()
    rows = edit(4, DV="1500")
    rows[5][HEADER.index("DV")] = "2100"
    file = write(tmp_path, rows)
    assert cli(["check", file]) == 2
    assert cli(["check", file, "--units", "ANC=cells/uL,CONC=ug/L", "--dvid", "1=CONC,2=ANC"]) == 0
    capsys.readouterr()
    assert cli(["check", file, "--units", "ANC"]) == 2
    assert "--units" in capsys.readouterr().err
    assert cli(["check", file, "--dvid", "x=ANC"]) == 2
    clean = write(tmp_path, CLEAN, name="clean.csv")
    assert cli(["check", clean, "--time-unit", "d", "--dose-unit", "ug", "--molar-mass", "808"]) == 0
    assert cli(["check", clean, "--time-unit", "fortnights"]) == 2


def test_cli_unreadable_files(tmp_path, cli, capsys):
    empty = write(tmp_path, "", name="empty.csv")
    header = write(tmp_path, "ID,TIME,DV\n", name="header.csv")
    for path in (empty, header, str(tmp_path), os.path.join(tmp_path, "none.csv")):
        assert cli(["check", path]) == 2
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        assert "error" in captured.err + captured.out


def _command():
    """``python -m pkpd`` when every registered command exists, else a shim running main."""
    if all(importlib.util.find_spec(f"pkpd.cli.{c}") for c in pkpd.cli._COMMANDS):
        return [sys.executable, "-m", "pkpd"]
    shim = "import sys, pkpd.cli as c; c._COMMANDS[:] = ['check']; sys.exit(c.main(sys.argv[1:]))"
    return [sys.executable, "-c", shim]


def test_cli_subprocess_no_traceback(tmp_path):
    binary = os.path.join(tmp_path, "random.bin")
    with open(binary, "wb") as handle:
        handle.write(os.urandom(512) + b"\x00")
    files = {
        "clean": (write(tmp_path, CLEAN, name="clean.csv"), 0),
        "empty": (write(tmp_path, "", name="empty.csv"), 2),
        "header": (write(tmp_path, "ID,TIME,DV\n", name="header.csv"), 2),
        "binary": (binary, 2),
        "missing": (os.path.join(tmp_path, "missing.csv"), 2),
    }
    for name, (path, code) in files.items():
        proc = subprocess.run([*_command(), "check", path], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == code, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        if code:
            assert "error" in proc.stderr + proc.stdout
        else:
            assert "clean.csv: 0 errors, 0 warnings (6 rows, 2 subjects)" in proc.stdout


# ----------------------------------------------------------------------- property


@st.composite
def valid_rows(draw):
    """Random valid datasets: a few subjects, sorted times, dose and observation rows."""
    rows = []
    for subject in range(1, draw(st.integers(1, 4)) + 1):
        time = 0.0
        for k in range(draw(st.integers(1, 7))):
            if k:
                time += draw(st.integers(1, 200)) / 4
            kind = "dose" if k == 0 else draw(st.sampled_from(["dose", "conc", "anc"]))
            row = dict(ID=str(subject), TIME=repr(time), DV=".", AMT=".", RATE=".", II=".",
                       ADDL=".", SS=".", EVID="0", MDV="0", CMT="0", DVID="1")
            if kind == "dose":
                ii = draw(st.sampled_from([0, 24, 168]))
                row.update(AMT=str(draw(st.integers(1, 1000))), EVID="1", MDV="1", CMT="1",
                           DVID="0", II=str(ii), ADDL=str(draw(st.integers(1, 5)) if ii else 0),
                           RATE=str(draw(st.sampled_from([0, 50]))), SS="0")
            else:
                high = 100.0 if kind == "conc" else 40.0
                dv = draw(st.floats(0.01, high, allow_nan=False))
                row.update(DV=repr(dv), DVID="1" if kind == "conc" else "2")
            rows.append([row[h] for h in HEADER])
    return rows


def _set(column):
    def apply(rows, i):
        rows[i][HEADER.index(column[0])] = column[1]
    return apply


def _is_dose(row):
    return row[HEADER.index("EVID")] == "1"


def _is_obs(row):
    return row[HEADER.index("EVID")] == "0"


def _decrease(rows, i):
    rows[i][1] = repr(float(rows[i - 1][1]) - 1.5)


# name -> (applies to row i?, corrupt, code, column, line offset)
CORRUPTIONS = {
    "negative AMT": (lambda r, i: _is_dose(r[i]), _set(("AMT", "-5")), "negative-amt", 0),
    "text in TIME": (lambda r, i: True, _set(("TIME", "t1")), "non-numeric", 0),
    "text in DV": (lambda r, i: _is_obs(r[i]), _set(("DV", "high")), "non-numeric", 0),
    "decreasing TIME": (lambda r, i: i > 0 and r[i - 1][0] == r[i][0], _decrease,
                        "time-decreasing", 0),
    "DV on dose row": (lambda r, i: _is_dose(r[i]), _set(("DV", "5")), "dose-with-dv", 0),
    "duplicated row": (lambda r, i: True, lambda r, i: r.insert(i + 1, list(r[i])),
                       "duplicate-row", 1),
    "unknown EVID": (lambda r, i: True, _set(("EVID", "7")), "bad-evid", 0),
    "negative RATE": (lambda r, i: _is_dose(r[i]), _set(("RATE", "-3")), "negative-rate", 0),
    "unknown DVID": (lambda r, i: _is_obs(r[i]), _set(("DVID", "11")), "unknown-dvid", 0),
    "obs without DV": (lambda r, i: _is_obs(r[i]), _set(("DV", ".")), "obs-without-dv", 0),
    "negative count": (lambda r, i: _is_obs(r[i]) and r[i][11] == "2", _set(("DV", "-1")),
                       "negative-count", 0),
    "ADDL without II": (lambda r, i: _is_dose(r[i]), lambda r, i: (_set(("ADDL", "2"))(r, i),
                                                                  _set(("II", "0"))(r, i)),
                        "addl-without-ii", 0),
    "missing ID": (lambda r, i: True, _set(("ID", ".")), "missing-value", 0),
}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=valid_rows(), data=st.data())
def test_property_valid_pass_and_corruption_found(rows, data):
    with tempfile.TemporaryDirectory() as folder:
        report = check_dataset(write(folder, rows))
        assert report.violations == [], report.render()
        name = data.draw(st.sampled_from(sorted(CORRUPTIONS)), label="corruption")
        applies, corrupt, code, offset = CORRUPTIONS[name]
        candidates = [i for i in range(len(rows)) if applies(rows, i)]
        assume(candidates)
        i = data.draw(st.sampled_from(candidates), label="row")
        broken = [list(r) for r in rows]
        corrupt(broken, i)
        line = i + 2 + offset
        report = check_dataset(write(folder, broken))
        assert (line, code) in {(v.line, v.code) for v in report.errors}, (name, report.render())
        assert {v.line for v in report.errors} == {line}, (name, report.render())


# ------------------------------------------------- silent reinterpretations (issue 11)


def _with(extra_header, extra_by_line, rows=None):
    """CLEAN (or ``rows``) with extra columns; ``extra_by_line`` maps CSV line -> values."""
    rows = [list(r) for r in (rows or CLEAN)]
    for k, r in enumerate(rows):
        r.extend(extra_by_line.get(k + 2, ["."] * len(extra_header)))
    return rows, HEADER + list(extra_header)


def _anc_subjects(values_by_subject, dvid="2"):
    """Subjects 1..n, each a dose at 0 and one observation of type ``dvid`` per value."""
    rows = []
    for s, values in enumerate(values_by_subject, start=1):
        rows.append([str(s), "0", ".", "100", "0", "0", "0", "0", "1", "1", "1", "0"])
        for k, v in enumerate(values):
            rows.append([str(s), str(24 * (k + 1)), v, ".", ".", ".", ".", ".", "0", "0", "0", dvid])
    return rows


_TEXT_SHORT = to_text(CLEAN).replace("1,24,3.1,.,.,.,.,.,0,0,0,2", "1,24,3.1,.,.,.,.,.,0,0,0")
_TEXT_TRAILING = to_text(CLEAN).replace("1,24,3.1,.,.,.,.,.,0,0,0,2", "1,24,3.1,.,.,.,.,.,0,0,0,2,,")
_TWO_FORMS = [list(r) for r in CLEAN]
for _r in _TWO_FORMS[3:]:
    _r[0] = "01"  # lines 5-7: another patient, written 01, read as the same subject as 1
_TWO_FORMS[3][1] = "0"

# name -> (rows or text, header, kwargs, line, column, severity, code, phrase)
REINTERPRETATIONS = {
    "short row": (_TEXT_SHORT, None, {}, 4, "DVID", "error", "field-count", "has no DVID"),
    "trailing empty fields": (_TEXT_TRAILING, None, {}, 4, None, "warning", "field-count", "empty and ignored"),
    "one subject in another unit": (_anc_subjects([["2.1", "3.0"], ["1.9", "2.8"], ["1800", "2500"],
                                                   ["2.2", "2.6"]]), None, {}, 9, "DV", "error", "unit-mismatch",
                                    "ID 3: median ANC DV is 2150"),
    "one subject in 10^9/L among cells/uL": (_anc_subjects([["2100", "3000"], ["1900", "2800"], ["1.8", "2.5"],
                                                            ["2200", "2600"]]), None, {"units": {"ANC": "cells/uL"}},
                                             9, "DV", "error", "unit-mismatch", "look like 10^9/L"),
    "one value in another unit": (_anc_subjects([["2.1", "3.0", "2.4"], ["1.9", "1500", "2.0"]]), None, {}, 8,
                                  "DV", "error", "unit-mismatch", "ANC DV 1500 10^9/L is impossible"),
    "one subject's HGB in g/L": (_anc_subjects([["12", "9.8"], ["11", "10.5"], ["120", "98"], ["13", "12"]],
                                               dvid="4"), None, {}, 9, "DV", "error", "unit-mismatch",
                                 "look like g/L"),
    "BLQ 1 above LLOQ": (*_with(["LLOQ", "BLQ"], {3: ["0.5", "1"]}), {}, 3, "BLQ", "error", "cens-above-lloq",
                         "DV 2.5 is above the LLOQ 0.5"),
    "BLQ 0 below LLOQ": (*_with(["LLOQ", "BLQ"], {3: ["5", "0"]}), {}, 3, "DV", "warning",
                         "below-lloq-not-flagged", "read as censored"),
    "BLQ 2": (*_with(["LLOQ", "BLQ"], {3: ["0.5", "2"]}), {}, 3, "BLQ", "error", "bad-cens", "BLQ 2 is not 0 or 1"),
    "CENS -1": (*_with(["CENS"], {3: ["-1"]}), {}, 3, "CENS", "error", "bad-cens", "not supported"),
    "BLQ and CENS disagree": (*_with(["BLQ", "CENS"], {3: ["1", "0"]}), {}, 3, "CENS", "error", "cens-conflict",
                              "disagree"),
    "CENS without LLOQ": (*_with(["CENS"], {3: ["1"]}), {}, 3, "LLOQ", "warning", "cens-without-lloq",
                          "taken as the limit"),
    "AMT on an observation": (edit(3, AMT="50"), None, {}, 3, "AMT", "error", "amt-on-non-dose",
                              "AMT 50 on an observation record (EVID 0)"),
    "RATE on an observation": (edit(3, RATE="10"), None, {}, 3, "RATE", "error", "rate-on-non-dose",
                               "RATE 10 on an observation record"),
    "AMT on an other-type event": (edit(3, EVID="2", MDV="1", DV=".", AMT="20"), None, {}, 3, "AMT", "error",
                                   "amt-on-non-dose", "EVID 2"),
    "RATE with AMT 0": (edit(2, AMT="0", RATE="10"), None, {}, 2, "RATE", "error", "rate-without-amt",
                        "an infusion needs an amount"),
    "SS 1 with AMT 0 and RATE 0": (edit(2, AMT="0", SS="1", II="24"), None, {}, 2, "SS", "error",
                                   "ss-without-dose", "doses nothing"),
    "SS on an observation": (edit(3, SS="1", II="24"), None, {}, 3, "SS", "error", "ss-on-non-dose",
                             "a steady state needs a dose"),
    "MDV 0 on a dose": (edit(2, MDV="0"), None, {}, 2, "MDV", "error", "mdv-evid", "MDV 0 marks an observation"),
    "MDV 2": (edit(3, MDV="2"), None, {}, 3, "MDV", "error", "bad-mdv", "MDV 2 is not 0 or 1"),
    "ID 01 within 1": (edit(3, ID="01"), None, {}, 3, "ID", "error", "id-spelling",
                       "ID '01' is the same number as ID '1' (line 2)"),
    "ID 01 after 1": (_TWO_FORMS, None, {}, 5, "ID", "error", "id-spelling", "read as subject 1"),
    "ID 1.0": (edit(6, ID="2.0"), None, {}, 6, "ID", "error", "id-spelling", "'2.0'"),
    "negative TIME": (edit(2, TIME="-1"), None, {}, 2, "TIME", "error", "negative-time", "TIME -1 is negative"),
    "TIME 1e308": (edit(4, TIME="1e308"), None, {}, 4, "TIME", "error", "absurd-value", "absurdly large"),
    "AMT 1e308": (edit(2, AMT="1e308"), None, {}, 2, "AMT", "error", "absurd-value", "AMT 1e+308"),
    "AMT Infinity": (edit(2, AMT="Infinity"), None, {}, 2, "AMT", "error", "non-finite", "not finite"),
    "DV 1e308 CONC": (edit(3, DV="1e308"), None, {}, 3, "DV", "error", "absurd-value", "for CONC"),
    "DV 1e308 ANC": (edit(4, DV="1e308"), None, {}, 4, "DV", "error", "absurd-value", "for ANC"),
    "ADDL 1e9": (edit(2, ADDL="1000000000", II="24"), None, {}, 2, "ADDL", "error", "absurd-value", "ADDL"),
    "zero count": (edit(4, DV="0"), None, {}, 4, "DV", "warning", "zero-count", "log-scale residual error"),
    "covariate missing for a subject": (*_with(["WT"], {2: ["70"], 3: ["70"], 4: ["70"]}), {}, 5, "WT",
                                        "warning", "covariate-missing", "no value for ID 2 (lines 5-7)"),
    "covariate text among numbers": (*_with(["WT"], {2: ["70"], 3: ["70"], 4: ["70"], 5: ["80"],
                                                     6: ["eighty"], 7: ["80"]}), {}, 6, "WT", "warning",
                                     "covariate-not-numeric", "'eighty'"),
}


@pytest.mark.parametrize("name", sorted(REINTERPRETATIONS))
def test_silent_reinterpretations_are_reported(tmp_path, name):
    rows, header, kwargs, line, column, severity, code, phrase = REINTERPRETATIONS[name]
    path = write(tmp_path, rows, header or HEADER)
    report = check_dataset(path, **kwargs)
    hits = [v for v in report.violations if v.code == code]
    assert len(hits) == 1, report.render()
    hit = hits[0]
    assert (hit.line, hit.column, hit.severity) == (line, column, severity), report.render()
    assert phrase in hit.message, hit.message
    if severity == "error":
        assert not report.ok and {v.line for v in report.errors} == {line}, report.render()
        with pytest.raises(DatasetError) as err:  # read_dataset refuses what check reports
            from pkpd.data.dataset import read_dataset

            read_dataset(path, **kwargs)
        assert (line, code) in {(v.line, v.code) for v in err.value.violations}
    else:
        assert report.ok and {v.line for v in report.warnings} == {line}, report.render()


def test_clean_variants_stay_clean(tmp_path):
    """What the new rules must not flag: zeros on observation rows, flags that agree, one ID form."""
    rows = edit(3, AMT="0", RATE="0", SS="0", II="0", ADDL="0")
    assert check_dataset(write(tmp_path, rows)).violations == []
    rows, header = _with(["LLOQ", "BLQ"], {3: ["2.5", "1"], 4: ["0.5", "0"]})  # DV == LLOQ when BLQ 1
    assert check_dataset(write(tmp_path, rows, header)).violations == []
    rows = _anc_subjects([["2.1", "0.05"], ["1.9", "2.8"], ["45", "30"]])  # nadir and G-CSF-level counts
    assert check_dataset(write(tmp_path, rows)).violations == []
    rows = _anc_subjects([["2100", "15"], ["1900", "2800"]])  # a nadir of 15 cells/uL is no unit error
    assert check_dataset(write(tmp_path, rows), units={"ANC": "cells/uL"}).violations == []
    rows, header = _with(["WT"], {2: ["70"], 5: ["80"]})  # values on the first row only: fine
    assert check_dataset(write(tmp_path, rows, header)).violations == []


def test_cli_check_reports_each_class_on_its_line(tmp_path, cli, capsys):
    for name in ("short row", "one subject in another unit", "BLQ 1 above LLOQ", "AMT on an observation",
                 "ID 01 after 1", "TIME 1e308", "zero count", "covariate missing for a subject"):
        rows, header, kwargs, line, column, severity, code, _ = REINTERPRETATIONS[name]
        status = cli(["check", write(tmp_path, rows, header or HEADER)])
        captured = capsys.readouterr()
        assert status == (2 if severity == "error" else 0), (name, captured.out)
        assert "Traceback" not in captured.out + captured.err
        row = next(r for r in captured.out.splitlines() if code in r)
        assert row.split()[:3] == [str(line), column or "-", severity], (name, row)
