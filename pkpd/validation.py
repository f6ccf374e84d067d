"""Dataset validation that reports every violation, with its CSV line and column.

:func:`check_dataset` never stops at the first problem (cf. pharmpy's
``check_dataset``): it reads the raw cells, runs every rule and returns a
:class:`ValidationReport`. Only a file that cannot be read at all (missing, a
directory, empty, binary) raises :class:`~pkpd.errors.DatasetError`.
Line numbers count the header as line 1, so the first data row is line 2.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import units as _units
from .errors import DatasetError

#: Standard NONMEM columns; everything else is a covariate.
STANDARD_COLUMNS = (
    "ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "DVID",
    "LLOQ", "BLQ", "CENS",
)  # fmt: skip
REQUIRED_COLUMNS = ("ID", "TIME", "DV")
NUMERIC_COLUMNS = STANDARD_COLUMNS[1:]
INTEGER_COLUMNS = ("EVID", "MDV", "CMT", "ADDL", "SS", "DVID", "BLQ", "CENS")
_MISSING = frozenset({"", ".", "na", "nan"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")

# Unit plausibility: type -> [(declared factor, "above"/"below", threshold, suggestion)].
_UNIT_RULES = {
    "ANC": [(1.0, "above", 200.0, "cells/uL"), (1e-3, "below", 50.0, "10^9/L")],
    "WBC": [(1.0, "above", 200.0, "cells/uL"), (1e-3, "below", 50.0, "10^9/L")],
    "PLT": [(1.0, "above", 5000.0, "cells/uL"), (1e-3, "below", 5000.0, "10^9/L")],
    "HGB": [(1.0, "above", 30.0, "g/L"), (0.1, "below", 30.0, "g/dL")],
}


@dataclass(frozen=True)
class Violation:
    """One rule broken by one cell, row, column or the whole file.

    Attributes
    ----------
    line : int or None
        CSV line number (header = 1), ``None`` for file-level findings.
    column : str or None
        Column name (uppercase) or ``None``.
    severity : str
        ``"error"`` or ``"warning"``.
    code : str
        Short slug, e.g. ``"time-decreasing"``.
    message : str
        What was found and what was expected.
    """

    line: int | None
    column: str | None
    severity: str
    code: str
    message: str


@dataclass
class ValidationReport:
    """All violations of a dataset, ordered by line (file-level ones first).

    Attributes
    ----------
    violations : list of Violation
    source : str
        File path or ``"<DataFrame>"``.
    n_rows, n_subjects : int
        Data rows read and distinct non-missing IDs.
    """

    violations: list = field(default_factory=list)
    source: str = ""
    n_rows: int = 0
    n_subjects: int = 0

    def __post_init__(self):
        self.violations = sorted(
            self.violations, key=lambda v: (-1 if v.line is None else v.line)
        )

    @property
    def errors(self) -> list:
        """Violations with severity ``"error"``."""
        return [v for v in self.violations if v.severity == "error"]

    @property
    def warnings(self) -> list:
        """Violations with severity ``"warning"``."""
        return [v for v in self.violations if v.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_frame(self) -> pd.DataFrame:
        """Violations as a DataFrame with columns line, column, severity, code, message."""
        cols = ["line", "column", "severity", "code", "message"]
        rows = [[getattr(v, c) for c in cols] for v in self.violations]
        frame = pd.DataFrame(rows, columns=cols)
        frame["line"] = frame["line"].astype("Int64")
        return frame

    def render(self, violations=None) -> str:
        """Plain-text table of ``violations`` (default: all), columns aligned."""
        items = self.violations if violations is None else list(violations)
        if not items:
            return "no violations"
        head = ("line", "column", "severity", "code", "message")
        rows = [
            ("-" if v.line is None else str(v.line), v.column or "-", v.severity, v.code, v.message)
            for v in items
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        lines = []
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        return "\n".join(line.rstrip() for line in lines)

    def summary(self) -> str:
        """One line, e.g. ``"a.csv: 0 errors, 1 warning (12 rows, 3 subjects)"``."""

        def plural(n, word):
            return f"{n} {word}{'' if n == 1 else 's'}"

        return (
            f"{self.source}: {plural(len(self.errors), 'error')}, "
            f"{plural(len(self.warnings), 'warning')} "
            f"({plural(self.n_rows, 'row')}, {plural(self.n_subjects, 'subject')})"
        )

    def __str__(self) -> str:
        return self.render() + "\n" + self.summary()


# --------------------------------------------------------------------------- reading


@dataclass
class RawTable:
    """Raw string cells of a NONMEM-style table.

    Attributes
    ----------
    frame : pandas.DataFrame
        One column per header name (uppercase), all cells stripped strings.
    lines : numpy.ndarray
        CSV line number of each row.
    source : str
        Path or ``"<DataFrame>"``.
    problems : list of Violation
        Structural problems met while reading (field counts, duplicate headers).
    """

    frame: pd.DataFrame
    lines: np.ndarray
    source: str
    problems: list


def _read_text(path) -> str:
    name = os.fspath(path)
    if not os.path.exists(name):
        raise DatasetError(f"{name}: no such file")
    if os.path.isdir(name):
        raise DatasetError(f"{name}: is a directory, expected a CSV file")
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise DatasetError(f"{name}: cannot be read ({err.strerror or err})") from None
    if not data.strip():
        raise DatasetError(f"{name}: the file is empty (expected a CSV header and data rows)")
    if b"\x00" in data:
        raise DatasetError(f"{name}: looks like a binary file, expected a CSV text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if _CONTROL.search(text) or "\ufffd" in text:
        raise DatasetError(f"{name}: looks like a binary file, expected a CSV text file")
    return text


def _raw_from_text(text: str, source: str) -> RawTable:
    reader = csv.reader(io.StringIO(text))
    records = []
    start = 1
    try:
        for row in reader:
            records.append((start, [c.strip() for c in row]))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DatasetError(f"{source}: not a readable CSV file ({err})") from None
    records = [(n, r) for n, r in records if any(r) and not r[0].startswith("#")]
    if not records:
        raise DatasetError(f"{source}: the file is empty (expected a CSV header and data rows)")
    header_line, header = records[0]
    return _build_raw(header, records[1:], source, header_line)


def _build_raw(header, records, source, header_line=1) -> RawTable:
    problems = []
    names, keep = [], []
    for i, name in enumerate(header):
        upper = str(name).strip().upper()
        if not upper:
            if any(i < len(r) and r[i] for _, r in records):
                problems.append(Violation(header_line, None, "error", "empty-header",
                                          f"column {i + 1} has no header name but holds values"))
            continue
        if upper in names:
            problems.append(Violation(header_line, upper, "error", "duplicate-column",
                                      f"column {upper} appears more than once in the header "
                                      "(names are case-insensitive)"))
            continue
        if upper == "LINE":
            problems.append(Violation(header_line, upper, "warning", "reserved-column",
                                      "column LINE is reserved for CSV line numbers; ignored"))
            continue
        names.append(upper)
        keep.append(i)
    width = len(header)
    rows, lines = [], []
    for line, rec in records:
        if len(rec) > width and any(rec[width:]):
            problems.append(Violation(line, None, "error", "field-count",
                                      f"{len(rec)} fields but the header has {width}"))
        rec = rec + [""] * (width - len(rec))
        rows.append([rec[i] for i in keep])
        lines.append(line)
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    if not len(rows):
        frame = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    return RawTable(frame, np.asarray(lines, dtype=np.int64), source, problems)


def _cell_to_str(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value).strip()


def read_raw_table(source) -> RawTable:
    """Read a CSV path or a DataFrame into string cells with line numbers.

    Raises
    ------
    DatasetError
        The file is missing, a directory, empty, binary or not parseable as CSV.
    """
    if isinstance(source, RawTable):
        return source
    if isinstance(source, pd.DataFrame):
        header = [str(c) for c in source.columns]
        records = [
            (i + 2, [_cell_to_str(v) for v in row])
            for i, row in enumerate(source.itertuples(index=False, name=None))
        ]
        return _build_raw(header, records, "<DataFrame>")
    if not isinstance(source, (str, os.PathLike)):
        raise DatasetError(f"expected a CSV path or a pandas DataFrame, got {type(source).__name__}")
    return _raw_from_text(_read_text(source), os.fspath(source))


# --------------------------------------------------------------------------- parsing


def parse_numeric(raw: RawTable):
    """Numeric values of the standard columns, and the violations found parsing them.

    Returns
    -------
    values : dict of str -> numpy.ndarray
        float64 per present numeric standard column; NaN for missing and bad cells.
    missing : dict of str -> numpy.ndarray
        bool, True where the cell was empty or ``.``.
    violations : list of Violation
    """
    values, missing, found = {}, {}, []
    for col in NUMERIC_COLUMNS:
        if col not in raw.frame.columns:
            continue
        cells = raw.frame[col].astype(str)
        miss = cells.str.lower().isin(_MISSING).to_numpy()
        num = np.array(pd.to_numeric(cells.where(~miss, None), errors="coerce"), dtype=np.float64)
        for i in np.flatnonzero(~miss & ~np.isfinite(num)):
            text = cells.iloc[i]
            if np.isnan(num[i]):
                msg = f"{col} value {text!r} is not a number (expected a number, '.' or empty)"
                found.append(Violation(int(raw.lines[i]), col, "error", "non-numeric", msg))
            else:
                msg = f"{col} value {text!r} is not finite"
                found.append(Violation(int(raw.lines[i]), col, "error", "non-finite", msg))
            num[i] = np.nan
        if col in INTEGER_COLUMNS:
            for i in np.flatnonzero(np.isfinite(num) & (num != np.round(num))):
                msg = f"{col} value {cells.iloc[i]!r} is not an integer"
                found.append(Violation(int(raw.lines[i]), col, "error", "non-integer", msg))
                num[i] = np.nan
        values[col], missing[col] = num, miss
    return values, missing, found


def derive_defaults(values: dict, n: int) -> dict:
    """Fill NONMEM defaults: AMT/RATE/II/ADDL/SS 0, derived EVID, MDV, CMT, DVID.

    EVID (when absent or missing) is 1 where AMT > 0 or (SS > 0 and RATE > 0), else 2
    where MDV == 1, else 0. MDV is 0 on EVID 0 rows with DV, else 1. CMT is 1 on dose
    rows (EVID 1/4) and 0 elsewhere; DVID is 1 on observation rows and 0 elsewhere.
    """
    out = {k: np.asarray(v, dtype=np.float64).copy() for k, v in values.items()}

    def col(name):
        return out.get(name, np.full(n, np.nan))

    for name in ("AMT", "RATE", "II", "ADDL", "SS"):
        out[name] = np.nan_to_num(col(name), nan=0.0)
    dv = col("DV")
    mdv = col("MDV")
    evid = col("EVID")
    dose = (out["AMT"] > 0) | ((out["SS"] > 0) & (out["RATE"] > 0))
    derived = np.where(dose, 1.0, np.where(mdv == 1, 2.0, 0.0))
    out["EVID"] = np.where(np.isnan(evid), derived, evid)
    derived_mdv = np.where((out["EVID"] == 0) & ~np.isnan(dv), 0.0, 1.0)
    out["MDV"] = np.where(np.isnan(mdv), derived_mdv, mdv)
    is_dose = np.isin(out["EVID"], (1, 4))
    is_obs = (out["EVID"] == 0) & (out["MDV"] == 0)
    out["CMT"] = np.where(np.isnan(col("CMT")), np.where(is_dose, 1.0, 0.0), col("CMT"))
    out["DVID"] = np.where(np.isnan(col("DVID")), np.where(is_obs, 1.0, 0.0), col("DVID"))
    out["DV"] = dv
    return out


def resolve_units(observation_types, units, molar_mass, time_unit, dose_unit):
    """Normalise the unit arguments; returns (types, declared, factors, violations).

    ``types`` maps DVID -> uppercase type name, ``declared`` type -> unit spelling,
    ``factors`` type -> factor to canonical (missing where the unit is bad).
    """
    found = []
    types = {}
    raw_types = _units.DEFAULT_OBSERVATION_TYPES if observation_types is None else observation_types
    try:
        items = dict(raw_types).items()
    except (TypeError, ValueError):
        raise DatasetError("observation_types must map DVID (int) -> type name") from None
    for key, name in items:
        try:
            types[int(key)] = str(name).strip().upper()
        except (TypeError, ValueError):
            raise DatasetError(f"observation_types: DVID {key!r} is not an integer") from None
    given = {str(k).strip().upper(): v for k, v in dict(units or {}).items()}
    declared, factors = {}, {}
    for name in dict.fromkeys(types.values()):
        unit = given.get(name)
        try:
            declared[name] = _units.normalise_unit(name, unit)
            factors[name] = _units.unit_factor(name, unit, molar_mass)
        except DatasetError as err:
            code = "missing-unit" if "molar_mass" in str(err) or unit is None else "unknown-unit"
            found.append(Violation(None, None, "error", code, str(err)))
    for name in given:
        if name not in declared and name not in {v for v in types.values()}:
            found.append(Violation(None, None, "warning", "unused-unit",
                                   f"a unit is given for {name}, which is not an observation "
                                   f"type of this dataset ({', '.join(declared) or 'none'})"))
    for what, fn, col in (("time", _units.time_factor, "TIME"), ("dose", _units.dose_factor, "AMT")):
        try:
            fn(time_unit if what == "time" else dose_unit)
        except DatasetError as err:
            found.append(Violation(None, col, "error", "unknown-unit", str(err)))
    return types, declared, factors, found


# --------------------------------------------------------------------------- checks


def _fmt(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"


def _row_checks(raw, v, dv_missing, types, compartments, modelled_rates):
    """Row-wise rules on the parsed values ``v``; yields Violations."""
    lines = raw.lines
    evid, mdv, amt, rate = v["EVID"], v["MDV"], v["AMT"], v["RATE"]
    ii, addl, ss, cmt, dvid, dv = v["II"], v["ADDL"], v["SS"], v["CMT"], v["DVID"], v["DV"]
    is_dose = np.isin(evid, (1, 4))
    is_obs = (evid == 0) & (mdv == 0)

    def emit(mask, col, code, message, severity="error"):
        for i in np.flatnonzero(mask):
            yield Violation(int(lines[i]), col, severity, code, message(i))

    yield from emit(~np.isnan(evid) & ~np.isin(evid, (0, 1, 2, 3, 4)), "EVID", "bad-evid",
                    lambda i: f"EVID {_fmt(evid[i])} is not one of 0, 1, 2, 3, 4")
    yield from emit(amt < 0, "AMT", "negative-amt",
                    lambda i: f"AMT {_fmt(amt[i])} is negative (expected AMT >= 0)")
    yield from emit((rate < 0) & ~np.isin(rate, (-1, -2)), "RATE", "negative-rate",
                    lambda i: f"RATE {_fmt(rate[i])} is negative (expected >= 0, or -1/-2 for "
                    "a modelled rate/duration)")
    for col in ("II", "ADDL"):
        yield from emit(v[col] < 0, col, f"negative-{col.lower()}",
                        lambda i, c=col: f"{c} {_fmt(v[c][i])} is negative (expected >= 0)")
    yield from emit(is_dose & ~np.isnan(dv) & (np.nan_to_num(dv) != 0), "DV", "dose-with-dv",
                    lambda i: f"dose record (EVID {_fmt(evid[i])}) has DV {_fmt(dv[i])} "
                    "(expected DV '.' or 0 on dose rows)")
    yield from emit(is_obs & dv_missing, "DV", "obs-without-dv",
                    lambda i: "observation record (EVID 0, MDV 0) has no DV "
                    "(expected a DV value, or MDV 1)")
    yield from emit(is_dose & (amt == 0) & (rate == 0) & (ss == 0), "AMT", "zero-dose",
                    lambda i: "dose of zero: dose record with AMT 0 (or missing) and no RATE",
                    severity="warning")
    if compartments is not None:
        allowed = {int(c) for c in compartments}
        bad = ~np.isnan(cmt) & ~np.isin(cmt, sorted(allowed)) & (is_dose | (cmt != 0))
        shown = ", ".join(str(c) for c in sorted(allowed))
        yield from emit(bad, "CMT", "unknown-cmt",
                        lambda i: f"CMT {_fmt(cmt[i])} is not a compartment of the model "
                        f"(expected one of {shown})")
    else:
        yield from emit(is_dose & ~np.isnan(cmt) & (cmt <= 0), "CMT", "unknown-cmt",
                        lambda i: f"dose into CMT {_fmt(cmt[i])} (expected a positive "
                        "compartment number)")
    known = sorted(types)
    shown = ", ".join(f"{k}={types[k]}" for k in known)
    yield from emit(is_obs & ~np.isnan(dvid) & ~np.isin(dvid, known), "DVID", "unknown-dvid",
                    lambda i: f"DVID {_fmt(dvid[i])} is not a known observation type "
                    f"(expected one of {shown})")
    yield from emit((addl > 0) & (ii <= 0), "II", "addl-without-ii",
                    lambda i: f"ADDL {_fmt(addl[i])} additional doses need II > 0, "
                    f"got II {_fmt(ii[i])}")
    infusion_ss = (rate > 0) & (amt == 0)
    yield from emit(np.isin(ss, (1, 2)) & (ii <= 0) & ~infusion_ss, "II", "ss-without-ii",
                    lambda i: f"steady-state dose (SS {_fmt(ss[i])}) needs II > 0, got II "
                    f"{_fmt(ii[i])} (only a constant infusion, RATE > 0 with AMT 0, may omit II)")
    yield from emit(~np.isnan(ss) & ~np.isin(ss, (0, 1, 2)), "SS", "bad-ss",
                    lambda i: f"SS {_fmt(ss[i])} is not one of 0, 1, 2")
    modelled = {str(m).strip().upper() for m in modelled_rates}
    available = modelled | set(raw.frame.columns)
    for flag, prefix, what in ((-1, "R", "rate"), (-2, "D", "duration")):
        for i in np.flatnonzero(is_dose & (rate == flag)):
            c = _fmt(cmt[i])
            if f"{prefix}{c}" not in available:
                yield Violation(int(lines[i]), "RATE", "error", "modelled-rate-undefined",
                                f"RATE {flag} asks for a modelled infusion {what} in CMT {c}, "
                                f"but {prefix}{c} is neither a modelled parameter nor a column")


def _time_checks(raw, ids, time, evid):
    """TIME non-decreasing within ID (resets at EVID 3/4) and contiguous IDs."""
    lines = raw.lines
    last_time, seen, previous_id, block_end = {}, set(), None, {}
    for i, subject in enumerate(ids):
        line = int(lines[i])
        if subject == "":
            continue
        if subject != previous_id:
            if subject in seen:
                yield Violation(line, "ID", "error", "id-not-contiguous",
                                f"ID {subject} reappears after other IDs (its earlier rows end at "
                                f"line {block_end[subject]}; expected all rows of an ID together)")
            seen.add(subject)
            previous_id = subject
        block_end[subject] = line
        t = time[i]
        if np.isnan(t):
            continue
        prev = last_time.get(subject)
        if prev is not None and t < prev[0] and evid[i] not in (3, 4):
            yield Violation(line, "TIME", "error", "time-decreasing",
                            f"TIME {_fmt(t)} is before the previous TIME {_fmt(prev[0])} of ID "
                            f"{subject} (line {prev[1]}; expected non-decreasing TIME within an "
                            "ID unless EVID 3/4 resets)")
        last_time[subject] = (t, line)


def _duplicate_checks(raw):
    first = {}
    for i, row in enumerate(raw.frame.itertuples(index=False, name=None)):
        line = int(raw.lines[i])
        if row in first:
            yield Violation(line, None, "error", "duplicate-row",
                            f"row duplicates line {first[row]} exactly")
        else:
            first[row] = line


def _unit_checks(v, types, factors, declared):
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0) & ~np.isnan(v["DV"])
    for dvid, name in types.items():
        rules = _UNIT_RULES.get(name)
        if not rules or name not in factors:
            continue
        values = v["DV"][is_obs & (v["DVID"] == dvid)]
        if not values.size:
            continue
        median = float(np.median(values))
        for factor, side, threshold, suggestion in rules:
            if not np.isclose(factors[name], factor):
                continue
            if (side == "above" and median > threshold) or (side == "below" and median < threshold):
                yield Violation(None, "DV", "error", "unit-mismatch",
                                f"median {name} DV is {median:g} but the declared unit is "
                                f"{declared[name]}: values look like {suggestion} "
                                f"(declare units={{'{name}': '{suggestion}'}})")


def _value_checks(v, raw, types):
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0)
    for i in np.flatnonzero(is_obs & (v["DV"] < 0)):
        name = types.get(int(v["DVID"][i])) if np.isfinite(v["DVID"][i]) else None
        if name in _units.COUNT_TYPES:
            yield Violation(int(raw.lines[i]), "DV", "error", "negative-count",
                            f"DV {_fmt(v['DV'][i])} is negative for {name} (expected counts "
                            ">= 0 in linear scale; log-transformed DV is not supported)")
        elif name == "CONC":
            yield Violation(int(raw.lines[i]), "DV", "error", "negative-conc",
                            f"DV {_fmt(v['DV'][i])} is a negative concentration (expected >= 0 "
                            "in linear scale; log-transformed DV is not supported)")


def check_dataset(source, *, time_unit="h", units=None, observation_types=None, dose_unit="mg",
                  molar_mass=None, compartments=None, modelled_rates=()) -> ValidationReport:
    """Check a NONMEM-style dataset and report every violation.

    Parameters
    ----------
    source : str, os.PathLike or pandas.DataFrame
        CSV file or table.
    time_unit, units, observation_types, dose_unit, molar_mass
        As for :func:`pkpd.dataset.read_dataset`.
    compartments : collection of int, optional
        Allowed CMT values; CMT 0 is also allowed on non-dose rows. When ``None``,
        dose rows need a positive CMT.
    modelled_rates : collection of str
        Modelled infusion parameters (``"R1"``, ``"D2"``) that RATE -1/-2 may use.

    Returns
    -------
    ValidationReport

    Raises
    ------
    DatasetError
        Only when the file cannot be read at all (missing, directory, empty, binary).
    """
    raw = read_raw_table(source)
    found = list(raw.problems)
    n = len(raw.frame)
    cols = set(raw.frame.columns)
    hint = ""
    if len(raw.frame.columns) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), (" ", "spaces")):
            if sep in raw.frame.columns[0]:
                hint = f"; the file seems to be separated by {name}, expected commas"
                break
    for col in REQUIRED_COLUMNS:
        if col not in cols:
            found.append(Violation(1, col, "error", "missing-column",
                                   f"required column {col} is missing (header has: "
                                   f"{', '.join(raw.frame.columns) or 'nothing'}){hint}"))
    types, declared, factors, unit_problems = resolve_units(
        observation_types, units, molar_mass, time_unit, dose_unit)
    found += unit_problems
    ids = raw.frame["ID"].astype(str).tolist() if "ID" in cols else [""] * n
    ids = ["" if s.lower() in _MISSING else s for s in ids]
    n_subjects = len({s for s in ids if s})
    if n == 0:
        found.append(Violation(None, None, "error", "no-data",
                               "no data rows (only a header): expected at least one record"))
        return ValidationReport(found, raw.source, 0, 0)
    for col in ("ID", "TIME"):
        if col in cols:
            for i in np.flatnonzero(raw.frame[col].astype(str).str.lower().isin(_MISSING)):
                found.append(Violation(int(raw.lines[i]), col, "error", "missing-value",
                                       f"{col} is missing (expected a value on every row)"))
    values, missing, parse_problems = parse_numeric(raw)
    found += parse_problems
    v = derive_defaults(values, n)
    time = values.get("TIME", np.full(n, np.nan))
    # obs-without-dv only for empty DV cells (bad cells are reported as non-numeric)
    dv_missing = missing.get("DV", np.zeros(n, bool))
    found += _row_checks(raw, v, dv_missing, types, compartments, modelled_rates)
    found += _time_checks(raw, ids, time, v["EVID"])
    found += _duplicate_checks(raw)
    found += _value_checks(v, raw, types)
    found += _unit_checks(v, types, factors, declared)
    return ValidationReport(found, raw.source, n, n_subjects)
