"""Dataset validation that reports every violation, with its CSV line and column.

:func:`check_dataset` never stops at the first problem (cf. pharmpy's
``check_dataset``): it reads the raw cells, runs every rule and returns a
:class:`ValidationReport`. Only a file that cannot be read at all (missing, a
directory, empty, binary) raises :class:`~pkpd.errors.DatasetError`.
Line numbers count the header as line 1, so the first data row is line 2.

Rules and their severity
------------------------
An **error** is something pkpd would otherwise have to guess at (silently reinterpret)
or that NONMEM itself refuses; :func:`pkpd.data.dataset.read_dataset` raises on any
error. A **warning** is something NONMEM accepts and pkpd reads in one documented way,
said out loud because it is often a mistake; ``read_dataset`` passes warnings on
through :mod:`warnings`. Codes in brackets.

Structure
    - A row with fewer fields than the header [``field-count``, error, column = the
      first header column the row lacks]: short rows are not padded, because padding
      turns the missing trailing cells (DVID, MDV, ...) into defaults and so into
      another kind of record. A row with more fields whose extra fields hold values
      [``field-count``, error]. Extra fields that are all empty (a spreadsheet's trailing
      commas) are a warning: they hold nothing and are ignored.
    - Empty or duplicate header names, the reserved name LINE.

Cells
    - Text in a numeric column, ``inf``, a fractional value in an integer column
      [``non-numeric``, ``non-finite``, ``non-integer``]; ID or TIME missing.
    - Absurdly large magnitudes [``absurd-value``, error]: TIME or II above 10^6 h
      (114 years), AMT above 10^6 mg (1 kg), RATE above 10^8 mg/h, ADDL above 10^5,
      CMT above 10^4, a concentration above 10^5 in its canonical unit (mg/L, ng/mL,
      IU/L), any other DV or LLOQ above 10^12. Such values (``1e308``) are typing or
      export accidents and overflow the arithmetic downstream.
    - Negative TIME [``negative-time``, error]: NONMEM requires non-negative times
      (NM-TRAN help, TIME data item); put the first record at time 0.

Subjects
    - The same ID written two ways, ``01`` and ``1`` or ``1.0`` [``id-spelling``,
      error, at the first row of the second spelling]: numeric IDs are read as
      numbers, so the two blocks would be merged into one subject.
    - IDs not contiguous, TIME decreasing within an ID (except at EVID 3/4 resets),
      duplicate rows.
    - A covariate with no value at all for some subjects while others have one
      [``covariate-missing``, warning at the subject's first row]: NONMEM reads
      ``.`` as 0; pkpd keeps it missing, so a model that uses the covariate cannot
      be evaluated for that subject (``fit``/``forecast`` refuse it then). It is a
      warning because a column no model uses does no harm.
    - A covariate column that is numeric except for a few text cells
      [``covariate-not-numeric``, warning]: the whole column is then read as text.

Events (NONMEM's data-item rules, NM-TRAN help for AMT, RATE, SS, ADDL, MDV)
    - EVID not 0-4, MDV not 0/1 [``bad-evid``, ``bad-mdv``].
    - MDV 0 on a dose, other-type or reset record (EVID 1-4) [``mdv-evid``, error]:
      MDV 0 declares an observation, EVID says the row is not one.
    - AMT > 0 or RATE (> 0, -1, -2) on a non-dose record (EVID 0, 2, 3)
      [``amt-on-non-dose``, ``rate-on-non-dose``, error]: NONMEM requires AMT 0 there
      and pkpd would silently ignore the dose. SS 1/2 on a non-dose record
      [``ss-on-non-dose``, error]. II or ADDL on a non-dose record
      [``dose-item-on-non-dose``, warning: NONMEM says "should be 0"; ignored].
    - RATE > 0 with AMT 0 on a dose record that is not steady state
      [``rate-without-amt``, error]: an infusion needs an amount (only the SS
      constant infusion, SS 1 with AMT 0, has a rate without an amount).
    - SS 1/2 with AMT 0 and no RATE [``ss-without-dose``, error]: the steady state of
      nothing.
    - A dose record with AMT 0 and no RATE [``zero-dose``, warning]: a dose of zero
      changes nothing, NONMEM would refuse it, pkpd keeps it (a placeholder row).
    - Negative AMT, RATE (other than -1/-2), II, ADDL; SS not 0/1/2; ADDL or SS
      without II; RATE -1/-2 without R<n>/D<n>; DV on a dose row; an observation
      without DV; CMT/DVID not known.

Observations
    - Negative counts or concentrations [``negative-count``, ``negative-conc``].
    - Counts (ANC, PLT, WBC) of exactly 0 that are not censored [``zero-count``,
      warning]: accepted as data, but a log-scale residual error model
      (log-additive/exponential or proportional on the log scale, the error model of
      the myelosuppression cards) cannot take log(0), so ``pkpd fit`` refuses these
      rows; record them as censored (BLQ 1 with the assay's LLOQ) or drop them.
    - Units (counts and haemoglobin, whose plausible ranges do not overlap between
      units) [``unit-mismatch``, error], checked at three levels so that one
      contradiction is reported once: the file's median per type (line ``-``); else
      each subject's median (one error per subject, at its first row of that type:
      one patient's ANC in cells/uL among others in 10^9/L); else single values
      above what the type can reach in its canonical unit (ANC 200, WBC 1000, PLT
      5000 x10^9/L, HGB 30 g/dL) or, for HGB, below 1 g/dL.

Censoring (BLQ/CENS, LLOQ)
    - BLQ/CENS not 0/1 [``bad-cens``, error]: only left censoring (1) exists in pkpd
      (NONMEM's CENS -1, above a limit, is not supported).
    - BLQ and CENS both present and different on a row [``cens-conflict``, error].
    - BLQ/CENS 1 with DV above the LLOQ [``cens-above-lloq``, error]: the flag says
      "below the limit", the values say otherwise.
    - BLQ/CENS 0 (explicit) with DV below the LLOQ [``below-lloq-not-flagged``,
      warning]: pkpd reads it as censored at the LLOQ (the M3 convention), not as the
      value; NONMEM would use the number as given.
    - BLQ/CENS 1 without an LLOQ [``cens-without-lloq``, warning, once per file]:
      the DV is taken as the limit (NONMEM's convention DV = LLOQ on BLQ records).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import units as _units
from ..errors import DatasetError

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
                                      f"{len(rec)} fields but the header has {width} "
                                      "(expected one field per header column)"))
        elif len(rec) > width:
            problems.append(Violation(line, None, "warning", "field-count",
                                      f"{len(rec)} fields but the header has {width}; the "
                                      f"{len(rec) - width} extra fields are empty and ignored"))
        elif len(rec) < width:
            lacking = [str(h).strip().upper() or f"column {i + 1}" for i, h in
                       enumerate(header[len(rec):], start=len(rec))]
            shown = ", ".join(lacking[:4]) + (", ..." if len(lacking) > 4 else "")
            problems.append(Violation(line, lacking[0], "error", "field-count",
                                      f"{len(rec)} fields but the header has {width}: the row "
                                      f"has no {shown} (expected one field per header column; "
                                      "a short row is not padded)"))
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
    try:
        _units.time_factor(time_unit)
    except DatasetError as err:
        found.append(Violation(None, "TIME", "error", "unknown-unit", str(err)))
    try:
        _units.data_dose_units(dose_unit)
    except DatasetError as err:
        found.append(Violation(None, "AMT", "error", "unknown-unit", str(err)))
    return types, declared, factors, found


def dose_row_factors(cmt, dose_unit) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-row amount factors of a dose-unit declaration (:func:`pkpd.units.data_dose_units`).

    Returns ``(stored, to_mg, units)``: the factor taking each row's AMT to the unit the
    dataset stores it in (mg for mass units; umol, IU, unit or cells otherwise: see
    :func:`pkpd.units.stored_amount_unit`), the factor to mg (NaN where the unit is not
    a mass), and the declared unit of every compartment in ``cmt`` (``{CMT: unit}``).
    """
    default, per_cmt = _units.data_dose_units(dose_unit)
    cmt = np.nan_to_num(np.asarray(cmt, dtype=float), nan=0.0).astype(np.int64)
    stored = np.ones(cmt.shape)
    to_mg = np.full(cmt.shape, np.nan)
    declared = {}
    for c in np.unique(cmt):
        unit = per_cmt.get(int(c), default)
        base, factor = _units.stored_amount_unit(unit)
        rows = cmt == c
        stored[rows] = factor
        if base == "mg":
            to_mg[rows] = factor
        declared[int(c)] = unit
    return stored, to_mg, declared


def canonical_ids(raw_ids) -> list:
    """Subject IDs as :func:`~pkpd.data.dataset.read_dataset` keys them.

    When every ID is an integer (``7``, ``07``, ``7.0``, ``7e0``) all become Python
    ``int`` (so ``07`` and ``7`` are one subject, which :func:`check_dataset` reports as
    ``id-spelling``); otherwise every ID stays the stripped text. Integers are taken
    from the text itself, never through a float, so long numeric IDs keep every digit;
    numbers beyond the int64 range, or non-integral ones, make all IDs text.
    """
    texts = [str(s).strip() for s in raw_ids]
    out = []
    for s in texts:
        try:
            value = int(s)
        except ValueError:
            try:
                x = float(s)
            except ValueError:
                return texts
            if not (np.isfinite(x) and x.is_integer() and abs(x) < 2.0**53):
                return texts
            value = int(x)
        if not -(2**63) <= value < 2**63:
            return texts
        out.append(value)
    return out


# --------------------------------------------------------------------------- checks

#: Largest plausible magnitudes (canonical units); beyond them a value is an accident.
MAX_TIME_H = 1e6  # 114 years
MAX_AMT_MG = 1e6  # 1 kg
MAX_RATE_MG_H = 1e8
MAX_ADDL = 1e5
MAX_CMT = 1e4
MAX_CONCENTRATION = 1e5  # mg/L, ng/mL or IU/L
MAX_DV = 1e12
#: Highest value each type can reach in its canonical unit (above: another unit).
_PLAUSIBLE_MAX = {"ANC": 200.0, "WBC": 1000.0, "PLT": 5000.0, "HGB": 30.0}
_PLAUSIBLE_MIN = {"HGB": 1.0}
_CENS_COLUMNS = ("BLQ", "CENS")


def _fmt(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"


def _kind(name):
    """"count", "concentration", "haemoglobin" or None (``pkpd.units.observation_kind``)."""
    try:
        return _units.observation_kind(name)
    except Exception:  # pragma: no cover - a type name units cannot read
        return None


def _event_name(evid) -> str:
    names = {0: "an observation record (EVID 0)", 2: "an other-type event record (EVID 2)",
             3: "a reset record (EVID 3)"}
    return names.get(int(evid), f"an EVID {_fmt(evid)} record") if np.isfinite(evid) else "a record"


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
    yield from emit(is_dose & (amt == 0) & np.isin(rate, (0, -1, -2)) & (ss == 0), "AMT", "zero-dose",
                    lambda i: "dose of zero: dose record with AMT 0 (or missing) and no RATE",
                    severity="warning")
    yield from emit(is_dose & (amt == 0) & (rate > 0) & (ss == 0), "RATE", "rate-without-amt",
                    lambda i: f"RATE {_fmt(rate[i])} with AMT 0 on a dose record: an infusion needs "
                    "an amount (expected AMT > 0; only a steady-state constant infusion, SS 1 with "
                    "AMT 0, has a RATE without an AMT)")
    yield from emit(is_dose & np.isin(ss, (1, 2)) & (amt == 0) & ~(rate > 0), "SS", "ss-without-dose",
                    lambda i: f"steady-state record (SS {_fmt(ss[i])}) with AMT 0 and no RATE doses "
                    "nothing (expected AMT > 0, or RATE > 0 with AMT 0 for a constant infusion)")
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


def _event_checks(raw, values, v):
    """MDV against EVID, and dose items on records that are not doses (NONMEM's rules)."""
    lines = raw.lines
    evid, amt, rate, ss = v["EVID"], v["AMT"], v["RATE"], v["SS"]
    given_mdv = values.get("MDV")
    if given_mdv is not None:
        for i in np.flatnonzero(np.isfinite(given_mdv) & ~np.isin(given_mdv, (0, 1))):
            yield Violation(int(lines[i]), "MDV", "error", "bad-mdv",
                            f"MDV {_fmt(given_mdv[i])} is not 0 or 1")
        for i in np.flatnonzero((given_mdv == 0) & np.isin(evid, (1, 2, 3, 4))):
            kind = {1: "a dose", 2: "an other-type event", 3: "a reset", 4: "a reset-and-dose"}[int(evid[i])]
            yield Violation(int(lines[i]), "MDV", "error", "mdv-evid",
                            f"MDV 0 marks an observation, but EVID {_fmt(evid[i])} makes the row "
                            f"{kind} record (expected MDV 1 on EVID 1-4 records; an observation "
                            "needs a row of its own with EVID 0)")
    non_dose = np.isin(evid, (0, 2, 3))
    for i in np.flatnonzero(non_dose & (amt > 0)):
        yield Violation(int(lines[i]), "AMT", "error", "amt-on-non-dose",
                        f"AMT {_fmt(amt[i])} on {_event_name(evid[i])}: the dose would be ignored "
                        "(expected AMT 0 or '.'; a dose needs EVID 1, or 4 to reset and dose)")
    for i in np.flatnonzero(non_dose & ((rate > 0) | np.isin(rate, (-1, -2)))):
        yield Violation(int(lines[i]), "RATE", "error", "rate-on-non-dose",
                        f"RATE {_fmt(rate[i])} on {_event_name(evid[i])}: an infusion rate belongs "
                        "on a dose record (expected RATE 0 or '.')")
    for i in np.flatnonzero(non_dose & np.isin(ss, (1, 2))):
        yield Violation(int(lines[i]), "SS", "error", "ss-on-non-dose",
                        f"SS {_fmt(ss[i])} on {_event_name(evid[i])}: a steady state needs a dose "
                        "(expected SS 0 or '.', or AMT/RATE and EVID 1 for a steady-state dose)")
    for col in ("II", "ADDL"):
        for i in np.flatnonzero(non_dose & (v[col] > 0)):
            yield Violation(int(lines[i]), col, "warning", "dose-item-on-non-dose",
                            f"{col} {_fmt(v[col][i])} on {_event_name(evid[i])} is ignored "
                            "(NONMEM expects 0 there)")


def _range_checks(raw, values, v, types, factors, t_factor, d_factor):
    """Negative TIME and absurdly large magnitudes (canonical units)."""
    lines = raw.lines
    time = values.get("TIME")
    if time is not None:
        for i in np.flatnonzero(time < 0):
            yield Violation(int(lines[i]), "TIME", "error", "negative-time",
                            f"TIME {_fmt(time[i])} is negative (expected TIME >= 0, as NONMEM "
                            "requires: put the first record at time 0)")
    limits = []
    if t_factor is not None:
        limits += [("TIME", t_factor, MAX_TIME_H, "h", "114 years"), ("II", t_factor, MAX_TIME_H, "h", "114 years")]
    if d_factor is not None:
        limits.append(("AMT", d_factor, MAX_AMT_MG, "mg", "1 kg"))
        if t_factor is not None:
            limits.append(("RATE", d_factor / t_factor, MAX_RATE_MG_H, "mg/h", None))
    limits += [("ADDL", 1.0, MAX_ADDL, "", None), ("CMT", 1.0, MAX_CMT, "", None)]
    for col, factor, limit, unit, words in limits:
        x = values.get(col)
        if x is None:
            continue
        for i in np.flatnonzero(np.abs(x) * factor > limit):
            what = f" ({words})" if words else ""
            yield Violation(int(lines[i]), col, "error", "absurd-value",
                            f"{col} {_fmt(x[i])} is absurdly large (expected at most {limit:g}"
                            f"{' ' + unit if unit else ''}{what})")
    for col in ("DV", "LLOQ"):
        x = values.get(col)
        if x is None:
            continue
        for dvid, name in types.items():
            limit = MAX_CONCENTRATION if _kind(name) == "concentration" else MAX_DV
            factor = factors.get(name, 1.0)
            rows = np.flatnonzero((v["DVID"] == dvid) & (np.abs(x) * factor > limit))
            for i in rows:
                yield Violation(int(lines[i]), col, "error", "absurd-value",
                                f"{col} {_fmt(x[i])} is absurdly large for {name} (expected at "
                                f"most {limit:g} in {_units.canonical_unit(name) or 'its unit'})")


def _time_checks(raw, ids, time, evid):
    """TIME non-decreasing within ID (resets at EVID 3/4) and contiguous IDs.

    ``ids`` are the canonical IDs (``""`` where missing), so rows that read as one
    subject are checked as one.
    """
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


def _id_checks(raw, texts, ids):
    """The same numeric ID written in two ways (``01`` and ``1``) would merge two subjects."""
    first = {}
    reported = set()
    for i, (text, key) in enumerate(zip(texts, ids)):
        if text == "" or not isinstance(key, int):
            continue
        if key not in first:
            first[key] = (text, int(raw.lines[i]))
            continue
        spelling, line = first[key]
        if text != spelling and (key, text) not in reported:
            reported.add((key, text))
            yield Violation(int(raw.lines[i]), "ID", "error", "id-spelling",
                            f"ID {text!r} is the same number as ID {spelling!r} (line {line}): both "
                            f"would be read as subject {key} (expected each subject's ID written one "
                            "way, and different numbers for different subjects)")


def _duplicate_checks(raw):
    first = {}
    for i, row in enumerate(raw.frame.itertuples(index=False, name=None)):
        line = int(raw.lines[i])
        if row in first:
            yield Violation(line, None, "error", "duplicate-row",
                            f"row duplicates line {first[row]} exactly")
        else:
            first[row] = line


def _unit_checks(raw, v, ids, types, factors, declared, skip):
    """Units that contradict the values: the file's median, each subject's, each value.

    One contradiction is reported once: a type whose file median is off is not checked
    per subject, and a subject whose median is off is not checked per value.
    """
    lines = raw.lines
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0) & np.isfinite(v["DV"]) & ~skip
    ids = np.asarray(ids, dtype=object)
    for dvid, name in types.items():
        if name not in factors:
            continue
        rows = np.flatnonzero(is_obs & (v["DVID"] == dvid))
        if not rows.size:
            continue
        rules = [r for r in _UNIT_RULES.get(name, ()) if np.isclose(factors[name], r[0])]

        def off(values):
            median = float(np.median(values))
            for _, side, threshold, suggestion in rules:
                if (side == "above" and median > threshold) or (side == "below" and median < threshold):
                    return median, suggestion
            return None

        values = v["DV"][rows]
        hit = off(values)
        if hit is not None:
            yield Violation(None, "DV", "error", "unit-mismatch",
                            f"median {name} DV is {hit[0]:g} but the declared unit is "
                            f"{declared[name]}: values look like {hit[1]} "
                            f"(declare units={{'{name}': '{hit[1]}'}})")
            continue
        file_median = float(np.median(values))
        flagged = set()
        groups = pd.Series(ids[rows], dtype=object).groupby(ids[rows], sort=False).indices
        for subject, positions in groups.items():
            if subject == "":
                continue
            mine = rows[np.sort(positions)]
            hit = off(v["DV"][mine])
            if hit is not None:
                flagged.add(subject)
                yield Violation(int(lines[mine[0]]), "DV", "error", "unit-mismatch",
                                f"ID {subject}: median {name} DV is {hit[0]:g} while the file's "
                                f"median is {file_median:g} and the declared unit is "
                                f"{declared[name]}: this subject's values look like {hit[1]} "
                                "(expected one unit for every subject: convert them)")
        high, low = _PLAUSIBLE_MAX.get(name), _PLAUSIBLE_MIN.get(name)
        canonical = _units.canonical_unit(name)
        for i in rows:
            if ids[i] in flagged or v["DV"][i] < 0:  # negative values have their own error
                continue
            value = v["DV"][i] * factors[name]
            if (high is not None and value > high) or (low is not None and value < low):
                bound = f"at most {high:g}" if high is not None and value > high else f"at least {low:g}"
                conv = "" if np.isclose(factors[name], 1.0) else f" ({value:g} {canonical})"
                yield Violation(int(lines[i]), "DV", "error", "unit-mismatch",
                                f"{name} DV {_fmt(v['DV'][i])} {declared[name]}{conv} is impossible "
                                f"for {name} (expected {bound} {canonical}): is this value in another "
                                "unit than the rest?")


def _value_checks(v, raw, types, cens):
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0)
    for i in np.flatnonzero(is_obs & (v["DV"] <= 0)):
        name = types.get(int(v["DVID"][i])) if np.isfinite(v["DVID"][i]) else None
        kind = _kind(name) if name else None
        dv = v["DV"][i]
        if dv < 0 and kind in ("count", "haemoglobin"):
            yield Violation(int(raw.lines[i]), "DV", "error", "negative-count",
                            f"DV {_fmt(dv)} is negative for {name} (expected counts "
                            ">= 0 in linear scale; log-transformed DV is not supported)")
        elif dv < 0 and kind == "concentration":
            yield Violation(int(raw.lines[i]), "DV", "error", "negative-conc",
                            f"DV {_fmt(dv)} is a negative concentration (expected >= 0 "
                            "in linear scale; log-transformed DV is not supported)")
        elif dv == 0 and kind == "count" and not cens[i]:
            yield Violation(int(raw.lines[i]), "DV", "warning", "zero-count",
                            f"{name} DV 0: a count of exactly 0 cannot enter a log-scale residual "
                            "error model (log(0)), the error model of the myelosuppression cards, so "
                            "`pkpd fit` will refuse this row; record it as censored (BLQ 1 with the "
                            "assay's LLOQ) or remove it")


def _censoring_checks(raw, values, missing, v):
    """BLQ/CENS flags against DV and LLOQ; returns (violations, censored mask)."""
    lines = raw.lines
    n = len(lines)
    found = []
    present = [c for c in _CENS_COLUMNS if c in values]
    flag = np.zeros(n, dtype=bool)
    explicit_zero = np.zeros(n, dtype=bool)
    for col in present:
        x = values[col]
        for i in np.flatnonzero(np.isfinite(x) & ~np.isin(x, (0, 1))):
            found.append(Violation(int(lines[i]), col, "error", "bad-cens",
                                   f"{col} {_fmt(x[i])} is not 0 or 1 (1 = below the LLOQ; "
                                   f"{col} -1, above an upper limit, is not supported)"))
        flag |= x == 1
        explicit_zero |= x == 0
    if len(present) == 2:
        a, b = values["BLQ"], values["CENS"]
        for i in np.flatnonzero(np.isfinite(a) & np.isfinite(b) & (a != b)):
            found.append(Violation(int(lines[i]), "CENS", "error", "cens-conflict",
                                   f"BLQ {_fmt(a[i])} and CENS {_fmt(b[i])} disagree (expected the "
                                   "same flag in both columns, or only one of them)"))
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0)
    dv = v["DV"]
    lloq = values.get("LLOQ", np.full(n, np.nan))
    for i in np.flatnonzero(lloq < 0):
        found.append(Violation(int(lines[i]), "LLOQ", "error", "negative-lloq",
                               f"LLOQ {_fmt(lloq[i])} is negative (expected a limit >= 0)"))
    both = is_obs & np.isfinite(dv) & np.isfinite(lloq)
    col_of = lambda i: next((c for c in present if values[c][i] == 1), present[0] if present else "CENS")  # noqa: E731
    for i in np.flatnonzero(both & flag & (dv > lloq)):
        c = col_of(i)
        found.append(Violation(int(lines[i]), c, "error", "cens-above-lloq",
                               f"{c} 1 marks DV as below the LLOQ, but DV {_fmt(dv[i])} is above the "
                               f"LLOQ {_fmt(lloq[i])} (expected DV <= LLOQ on a censored row, or {c} 0)"))
    for i in np.flatnonzero(both & ~flag & explicit_zero & (dv < lloq)):
        c = next(c for c in present if values[c][i] == 0)
        found.append(Violation(int(lines[i]), "DV", "warning", "below-lloq-not-flagged",
                               f"DV {_fmt(dv[i])} is below the LLOQ {_fmt(lloq[i])} but {c} is 0: "
                               "the observation is read as censored at the LLOQ (M3), not as the "
                               "value given"))
    no_limit = np.flatnonzero(is_obs & flag & ~np.isfinite(lloq) & np.isfinite(dv))
    if no_limit.size:
        more = f" (and {no_limit.size - 1} more rows)" if no_limit.size > 1 else ""
        found.append(Violation(int(lines[no_limit[0]]), "LLOQ", "warning", "cens-without-lloq",
                               f"censored observation without an LLOQ{more}: its DV "
                               f"({_fmt(dv[no_limit[0]])}) is taken as the limit (NONMEM's "
                               "convention DV = LLOQ on BLQ records)"))
    censored = flag.copy()
    with np.errstate(invalid="ignore"):
        censored |= is_obs & (dv < lloq)
    return found, censored


def _covariate_checks(raw, ids):
    """Covariates with no value for some subjects, or text among numbers."""
    lines = raw.lines
    ids = np.asarray(ids, dtype=object)
    real = ids != ""
    for col in raw.frame.columns:
        if col in STANDARD_COLUMNS:
            continue
        cells = raw.frame[col].astype(str)
        miss = cells.str.lower().isin(_MISSING).to_numpy()
        has = pd.Series(~miss[real]).groupby(pd.Series(ids[real]).to_numpy(), sort=False).any()
        if has.any() and not has.all():
            for subject in has.index[~has.to_numpy()]:
                rows = np.flatnonzero(ids == subject)
                yield Violation(int(lines[rows[0]]), col, "warning", "covariate-missing",
                                f"covariate {col} has no value for ID {subject} (lines "
                                f"{int(lines[rows[0]])}-{int(lines[rows[-1]])}) while other "
                                f"subjects have one: a model that uses {col} cannot be evaluated "
                                "for this subject (NONMEM would read '.' as 0)")
        numeric = pd.to_numeric(cells.where(~miss, None), errors="coerce").notna().to_numpy()
        text = ~miss & ~numeric
        if numeric.sum() > text.sum() > 0:
            bad = np.flatnonzero(text)
            more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
            yield Violation(int(lines[bad[0]]), col, "warning", "covariate-not-numeric",
                            f"covariate {col} is numeric except {cells.iloc[bad[0]]!r}{more}: the "
                            "whole column is read as text (expected a number or '.')")


def check_dataset(source, *, time_unit="h", units=None, observation_types=None, dose_unit="mg",
                  molar_mass=None, compartments=None, modelled_rates=()) -> ValidationReport:
    """Check a NONMEM-style dataset and report every violation.

    The rules, and why each is an error or a warning, are listed in the module
    docstring (:mod:`pkpd.data.validation`).

    Parameters
    ----------
    source : str, os.PathLike or pandas.DataFrame
        CSV file or table.
    time_unit, units, observation_types, dose_unit, molar_mass
        As for :func:`pkpd.data.dataset.read_dataset`.
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
    texts = raw.frame["ID"].astype(str).str.strip().tolist() if "ID" in cols else [""] * n
    texts = ["" if s.lower() in _MISSING else s for s in texts]
    present_ids = [s for s in texts if s]
    keys = dict(zip(present_ids, canonical_ids(present_ids)))
    ids = [keys[s] if s else "" for s in texts]
    n_subjects = len({s for s in ids if s != ""})
    if n == 0:
        found.append(Violation(None, None, "error", "no-data",
                               "no data rows (only a header): expected at least one record"))
        return ValidationReport(found, raw.source, 0, 0)
    for col in ("ID", "TIME"):
        if col in cols:
            for i in np.flatnonzero(raw.frame[col].astype(str).str.strip().str.lower().isin(_MISSING)):
                found.append(Violation(int(raw.lines[i]), col, "error", "missing-value",
                                       f"{col} is missing (expected a value on every row)"))
    values, missing, parse_problems = parse_numeric(raw)
    found += parse_problems
    v = derive_defaults(values, n)
    time = values.get("TIME", np.full(n, np.nan))
    # obs-without-dv only for empty DV cells (bad cells are reported as non-numeric)
    dv_missing = missing.get("DV", np.zeros(n, bool))
    t_factor = _safe_factor(_units.time_factor, time_unit)
    try:
        d_factor = dose_row_factors(v["CMT"], dose_unit)[1]
    except DatasetError:
        d_factor = None
    range_problems = list(_range_checks(raw, values, v, types, factors, t_factor, d_factor))
    absurd = np.isin(raw.lines, [p.line for p in range_problems if p.column == "DV"])
    censoring_problems, censored = _censoring_checks(raw, values, missing, v)
    found += _row_checks(raw, v, dv_missing, types, compartments, modelled_rates)
    found += _event_checks(raw, values, v)
    found += range_problems
    found += _id_checks(raw, texts, ids)
    found += _time_checks(raw, ids, time, v["EVID"])
    found += _duplicate_checks(raw)
    found += _value_checks(v, raw, types, censored)
    found += censoring_problems
    found += _unit_checks(raw, v, ids, types, factors, declared, absurd | censored)
    found += _covariate_checks(raw, ids)
    return ValidationReport(found, raw.source, n, n_subjects)


def _safe_factor(fn, unit):
    try:
        return fn(unit)
    except DatasetError:
        return None
