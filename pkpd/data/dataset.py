"""NONMEM-style datasets: :func:`read_dataset` and the immutable :class:`Dataset`.

The canonical frame holds TIME in hours, AMT in mg (RATE in mg/h), concentrations in
mg/L, blood counts in 10^9/L and haemoglobin in g/dL (see :mod:`pkpd.units`), plus a
``LINE`` column with each row's CSV line number (header = line 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import units as _units
from ..buckets import bucket_size
from ..errors import DatasetError
from .validation import (
    STANDARD_COLUMNS,
    RawTable,
    canonical_ids,
    check_dataset,
    derive_defaults,
    dose_row_factors,
    parse_numeric,
    read_raw_table,
    resolve_units,
)

#: Column order of the canonical frame (covariates follow, then LINE).
CANONICAL_COLUMNS = (
    "ID", "TIME", "DV", "AMT", "RATE", "II", "ADDL", "SS", "EVID", "MDV", "CMT", "DVID",
    "LLOQ", "CENS",
)  # fmt: skip
_MODEL_DEPENDENT = frozenset({"modelled-rate-undefined"})


class ObservationArrays(NamedTuple):
    """Observations padded to bucketed shapes ``[S, N]`` (numpy arrays).

    Attributes
    ----------
    time : float64 [S, N]
        Hours; padding repeats the subject's last observation time (0 if none).
    value : float64 [S, N]
        Canonical units; 0 where padded.
    dvid : int64 [S, N]
        Index into :attr:`Dataset.observation_type_names`; 0 where padded.
    cens : bool [S, N]
        Left-censored (below LLOQ); False where padded.
    lloq : float64 [S, N]
        LLOQ in canonical units; 0 where missing or padded.
    mask : bool [S, N]
        True for real observations (EVID 0 and MDV 0).
    row : int64 [S, N]
        Position of the row in :attr:`Dataset.df`; -1 where padded.
    subject_mask : bool [S]
        True for real subjects.
    """

    time: np.ndarray
    value: np.ndarray
    dvid: np.ndarray
    cens: np.ndarray
    lloq: np.ndarray
    mask: np.ndarray
    row: np.ndarray
    subject_mask: np.ndarray


def _ids(raw_ids: list) -> list:
    """Integer IDs when every ID is an integer, else the text (see ``canonical_ids``)."""
    return canonical_ids(raw_ids)


def _plain(values) -> list:
    """NumPy scalars as Python numbers, for messages (``1``, not ``np.int64(1)``)."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _covariate(cells: pd.Series) -> pd.Series:
    text = cells.astype(str)
    miss = text.str.lower().isin({"", ".", "na", "nan"})
    num = pd.to_numeric(text.where(~miss, None), errors="coerce")
    if bool((num.notna() | miss).all()):
        return num.astype(np.float64)
    return text.where(~miss, None).astype(object)


class Dataset:
    """An immutable NONMEM-style dataset in canonical units.

    Build one with :func:`read_dataset`. Attributes cannot be set; :attr:`df` returns
    a copy, so changing it leaves the dataset unchanged.
    """

    __slots__ = (
        "_df", "_time_unit", "_units", "_observation_types", "_dose_unit", "_molar_mass",
        "_source", "_hash", "_dose_units",
    )  # fmt: skip

    def __init__(self, df, *, time_unit, units, observation_types, dose_unit, molar_mass, source, dose_units=None):
        df = df.reset_index(drop=True).copy()
        set_ = object.__setattr__
        set_(self, "_df", df)
        set_(self, "_time_unit", str(time_unit))
        set_(self, "_units", dict(units))
        set_(self, "_observation_types", dict(sorted(observation_types.items())))
        set_(self, "_dose_unit", dict(dose_unit) if isinstance(dose_unit, dict) else str(dose_unit))
        set_(self, "_dose_units", {int(c): str(u) for c, u in sorted((dose_units or {}).items())})
        set_(self, "_molar_mass", None if molar_mass is None else float(molar_mass))
        set_(self, "_source", str(source))
        set_(self, "_hash", None)

    def __setattr__(self, name, value):
        raise AttributeError(f"Dataset is immutable: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"Dataset is immutable: cannot delete {name!r}")

    def __repr__(self) -> str:
        return (f"Dataset(source={self._source!r}, rows={len(self._df)}, "
                f"subjects={self.n_subjects}, types={list(self._observation_types.values())})")

    @property
    def df(self) -> pd.DataFrame:
        """Canonical frame (a copy): standard columns, covariates and LINE."""
        return self._df.copy()

    @property
    def time_unit(self) -> str:
        """Declared time unit of the source (the frame is in hours)."""
        return self._time_unit

    @property
    def units(self) -> dict:
        """Declared unit per observation type (the frame is in canonical units)."""
        return dict(self._units)

    @property
    def observation_types(self) -> dict:
        """DVID -> observation type name."""
        return dict(self._observation_types)

    @property
    def observation_type_names(self) -> tuple:
        """Observation type names sorted by DVID (indexed by ``ObservationArrays.dvid``)."""
        return tuple(self._observation_types.values())

    @property
    def dose_unit(self) -> str | dict:
        """Declared dose unit of the source: one unit, or ``{CMT: unit}``."""
        return dict(self._dose_unit) if isinstance(self._dose_unit, dict) else self._dose_unit

    @property
    def dose_units(self) -> dict:
        """Declared amount unit of each dosed compartment, ``{CMT: unit}``.

        The frame stores each compartment's AMT and RATE in the base unit of that
        unit's dimension (:func:`pkpd.units.stored_amount_unit`: mg for mass units,
        umol, IU, unit or cells otherwise); :meth:`pkpd.model.model.Model.prepare`
        converts them to each drug's dose unit.
        """
        return dict(self._dose_units)

    @property
    def stored_dose_units(self) -> dict:
        """Unit of the frame's AMT per dosed compartment, ``{CMT: "mg" | "umol" | "IU" | ...}``."""
        return {c: _units.stored_amount_unit(u)[0] for c, u in self._dose_units.items()}

    @property
    def molar_mass(self) -> float | None:
        """Molar mass in g/mol used for umol/L concentrations, if any."""
        return self._molar_mass

    @property
    def source(self) -> str:
        """Path of the CSV file, or ``"<DataFrame>"``."""
        return self._source

    @property
    def ids(self) -> list:
        """Subject IDs in order of first appearance."""
        return self._df["ID"].drop_duplicates().tolist()

    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return int(self._df["ID"].nunique())

    @property
    def covariate_names(self) -> tuple:
        """Names of the non-standard columns, in file order."""
        return tuple(c for c in self._df.columns if c not in CANONICAL_COLUMNS and c != "LINE")

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical data (without LINE) and the unit metadata."""
        if self._hash is None:
            payload = self._df.drop(columns="LINE").to_csv(index=False, na_rep=".").encode()
            meta = json.dumps(
                {"time_unit": self._time_unit, "units": self._units,
                 "dose_unit": ({str(c): u for c, u in self._dose_unit.items()}
                               if isinstance(self._dose_unit, dict) else self._dose_unit),
                 "observation_types": {str(k): v for k, v in self._observation_types.items()},
                 "molar_mass": self._molar_mass},
                sort_keys=True,
            ).encode()
            object.__setattr__(self, "_hash", hashlib.sha256(payload + b"\n" + meta).hexdigest())
        return self._hash

    def _replace(self, df) -> Dataset:
        return Dataset(df, time_unit=self._time_unit, units=self._units,
                       observation_types=self._observation_types, dose_unit=self._dose_unit,
                       molar_mass=self._molar_mass, source=self._source, dose_units=self._dose_units)

    def until(self, time_h: float) -> Dataset:
        """New dataset with the records at ``TIME <= time_h`` (hours): the data so far."""
        t = float(time_h)
        if not np.isfinite(t):
            raise DatasetError(f"until: expected a finite time in hours, got {time_h!r}")
        kept = self._df[self._df["TIME"] <= t + 1e-9]
        if kept.empty:
            raise DatasetError(f"until: no record at or before {t:g} h")
        return self._replace(kept)

    def subset(self, ids) -> Dataset:
        """New dataset with the rows of the subjects ``ids`` (file order kept).

        Raises
        ------
        DatasetError
            An ID that is not in the dataset.
        """
        wanted = list(ids)
        known = set(self.ids)
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise DatasetError(f"subset: unknown subject IDs {_plain(unknown)} "
                               f"(the dataset has {_plain(self.ids)})")
        return self._replace(self._df[self._df["ID"].isin(wanted)])

    def to_csv(self, path) -> None:
        """Write the canonical data as a NONMEM CSV (missing as ``.``, CENS as 0/1).

        Values are in canonical units, so ``read_dataset(path)`` with the default
        units (and the same ``observation_types``) reads them back unchanged. The file
        is written atomically (:func:`pkpd.io.atomic_path`).
        """
        from ..io import atomic_path

        out = self._df.drop(columns="LINE").copy()
        out["CENS"] = out["CENS"].astype(int)
        with atomic_path(os.fspath(path), ".csv") as tmp:  # never a half-written file
            out.to_csv(tmp, index=False, na_rep=".")

    def observation_arrays(self, min_obs: int = 1, min_subjects: int = 1) -> ObservationArrays:
        """Observations (EVID 0, MDV 0) padded to ``[S, N]`` bucketed shapes.

        Parameters
        ----------
        min_obs, min_subjects : int
            Lower bounds on N and S before bucketing.

        Returns
        -------
        ObservationArrays
            Subjects in :attr:`ids` order, observations in file order.
        """
        df = self._df
        obs = (df["EVID"].to_numpy() == 0) & (df["MDV"].to_numpy() == 0)
        index = {d: k for k, d in enumerate(self._observation_types)}
        unknown = sorted(set(df.loc[obs, "DVID"]) - set(index))
        if unknown:
            raise DatasetError(f"observations with unknown DVID {_plain(unknown)} "
                               f"(observation types: {self._observation_types})")
        ids = self.ids
        pos = {s: k for k, s in enumerate(ids)}
        subj = df["ID"].map(pos).to_numpy()
        obs_rows = np.flatnonzero(obs)
        obs_rows = obs_rows[np.argsort(subj[obs_rows], kind="stable")]
        counts = np.bincount(subj[obs_rows], minlength=len(ids))
        rows_of = np.split(obs_rows, np.cumsum(counts)[:-1]) if len(ids) else []
        n_max = max((len(r) for r in rows_of), default=0)
        S = bucket_size(len(ids), min_subjects)
        N = bucket_size(n_max, min_obs)
        time = np.zeros((S, N))
        value = np.zeros((S, N))
        dvid = np.zeros((S, N), dtype=np.int64)
        cens = np.zeros((S, N), dtype=bool)
        lloq = np.zeros((S, N))
        mask = np.zeros((S, N), dtype=bool)
        row = np.full((S, N), -1, dtype=np.int64)
        t_all, dv_all = df["TIME"].to_numpy(float), df["DV"].to_numpy(float)
        lloq_all = np.nan_to_num(df["LLOQ"].to_numpy(float), nan=0.0)
        cens_all, dvid_all = df["CENS"].to_numpy(bool), df["DVID"].to_numpy()
        for k, r in enumerate(rows_of):
            m = len(r)
            time[k, :m], value[k, :m] = t_all[r], dv_all[r]
            time[k, m:] = t_all[r[-1]] if m else 0.0
            dvid[k, :m] = [index[d] for d in dvid_all[r]]
            cens[k, :m], lloq[k, :m] = cens_all[r], lloq_all[r]
            mask[k, :m], row[k, :m] = True, r
        subject_mask = np.arange(S) < len(ids)
        return ObservationArrays(time, value, dvid, cens, lloq, mask, row, subject_mask)

    def covariate_table(self) -> pd.DataFrame:
        """One row per subject (index ``ID``, :attr:`ids` order): first non-missing value of
        each covariate (baseline covariates)."""
        cols = list(self.covariate_names)
        table = self._df.groupby("ID", sort=False)[cols].first() if cols else None
        if table is None:
            table = pd.DataFrame(index=pd.Index(self.ids, name="ID"))
        return table.reindex(pd.Index(self.ids, name="ID"))


def _canonical_frame(raw: RawTable, types, factors, t_factor, dose_unit) -> tuple[pd.DataFrame, dict]:
    n = len(raw.frame)
    values, _, _ = parse_numeric(raw)
    v = derive_defaults(values, n)
    d_factor, _, dose_units = dose_row_factors(v["CMT"], dose_unit)
    is_obs = (v["EVID"] == 0) & (v["MDV"] == 0)
    out = {"ID": _ids(raw.frame["ID"].astype(str).tolist())}
    out["TIME"] = v["TIME"] if "TIME" in v else np.full(n, np.nan)
    out["TIME"] = out["TIME"] * t_factor
    row_factor = np.full(n, np.nan)
    for dvid, name in types.items():
        if name in factors:
            row_factor[v["DVID"] == dvid] = factors[name]
    out["DV"] = np.where(is_obs, v["DV"] * row_factor, np.nan)
    out["AMT"] = v["AMT"] * d_factor
    rate = v["RATE"]
    out["RATE"] = np.where(rate > 0, rate * d_factor / t_factor, rate)
    out["II"] = v["II"] * t_factor
    for col in ("ADDL", "SS", "EVID", "MDV", "CMT", "DVID"):
        out[col] = np.nan_to_num(v[col], nan=0.0).astype(np.int64)
    lloq = values.get("LLOQ", np.full(n, np.nan)) * row_factor
    flag = np.zeros(n, dtype=bool)
    for col in ("CENS", "BLQ"):
        if col in values:
            flag |= np.nan_to_num(values[col], nan=0.0) == 1
    # A censored observation without an LLOQ: its DV is the limit (NONMEM's convention
    # DV = LLOQ on BLQ records; check_dataset warns "cens-without-lloq").
    lloq = np.where(flag & is_obs & np.isnan(lloq), out["DV"], lloq)
    out["LLOQ"] = lloq
    with np.errstate(invalid="ignore"):
        flag |= is_obs & (out["DV"] < lloq)
    out["CENS"] = flag
    frame = pd.DataFrame(out, columns=list(CANONICAL_COLUMNS))
    for col in raw.frame.columns:
        if col not in STANDARD_COLUMNS:
            frame[col] = _covariate(raw.frame[col]).to_numpy()
    frame["LINE"] = raw.lines.astype(np.int64)
    is_dose = np.isin(out["EVID"], (1, 4))
    dosed = {int(c) for c in np.unique(out["CMT"][is_dose])}
    return frame, {c: u for c, u in dose_units.items() if c in dosed}


def _time_name(time_unit) -> str:
    """Canonical spelling of the declared time unit (``"h"``, ``"d"``, ...)."""
    normalise = getattr(_units, "normalise_time_unit", None)
    if normalise is not None:
        return normalise(time_unit)
    return "d" if _units.time_factor(time_unit) == 24.0 else "h"


def read_dataset(source, *, time_unit="h", units=None, observation_types=None, dose_unit="mg",
                 molar_mass=None, validate=True) -> Dataset:
    """Read a NONMEM-style CSV (or DataFrame) into a :class:`Dataset` in canonical units.

    Parameters
    ----------
    source : str, os.PathLike or pandas.DataFrame
        Columns ID, TIME, DV (required), AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, DVID,
        LLOQ, BLQ, CENS (optional; matched case-insensitively); other columns are
        covariates. ``.`` or an empty cell means missing.
    time_unit : {"h", "d"}
        Unit of TIME and II (RATE is per this unit).
    units : dict, optional
        Observation type name -> unit, e.g. ``{"ANC": "cells/uL", "CONC": "ug/L"}``;
        canonical units by default.
    observation_types : dict, optional
        DVID -> type name; default ``{1: "CONC", 2: "ANC", 3: "PLT", 4: "HGB", 5: "WBC"}``.
    dose_unit : str or dict
        Unit of AMT (and of RATE's amount): one amount unit of :mod:`pkpd.units` for
        every dose (``"mg"``, ``"ug"``, ``"IU"``, ``"pmol"``, ``"unit"``...), or a
        mapping ``{CMT: unit}`` (unlisted compartments take mg), or that mapping as text
        (``"1=mg,3=IU"``). Mass amounts are stored in mg; molar, IU, product and cell
        amounts in umol, IU, unit or cells, and the model converts each compartment's
        amounts to its drug's dose unit (:attr:`Dataset.dose_units`).
    molar_mass : float, optional
        g/mol, required when a concentration unit is umol/L.
    validate : bool
        Run :func:`pkpd.data.validation.check_dataset` first: errors raise, warnings
        warn (the rules, and why each is an error or a warning, are listed in
        :mod:`pkpd.data.validation`). RATE -1/-2 records are not checked here (whether
        R<c>/D<c> exist depends on the model); check them with
        ``check_dataset(..., modelled_rates=...)``.

    Notes
    -----
    Numeric IDs are read as integers from their text (``07`` and ``7`` are one subject,
    which validation reports; long IDs keep every digit). A censored observation
    (BLQ/CENS 1) without an LLOQ takes its DV as the limit (NONMEM's convention
    DV = LLOQ on BLQ records).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unreadable file, bad unit arguments, or (``validate=True``) any validation error;
        ``.violations`` lists them.
    """
    raw = read_raw_table(source)
    if validate:
        report = check_dataset(raw, time_unit=time_unit, units=units,
                               observation_types=observation_types, dose_unit=dose_unit,
                               molar_mass=molar_mass)
        # RATE -1/-2 depend on the model (R1/D1 parameters), unknown here: the model
        # code checks them with check_dataset(..., modelled_rates=...).
        errors = [v for v in report.errors if v.code not in _MODEL_DEPENDENT]
        if errors:
            n = len(errors)
            raise DatasetError(
                f"{report.source}: {n} error{'s' if n != 1 else ''} in the dataset\n"
                + report.render(errors),
                errors,
            )
        for w in report.warnings:
            where = f"line {w.line}: " if w.line is not None else ""
            warnings.warn(f"{report.source}: {where}{w.message} [{w.code}]", stacklevel=2)
    types, declared, factors, problems = resolve_units(observation_types, units, molar_mass,
                                                       time_unit, dose_unit)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError("; ".join(p.message for p in errors), errors)
    missing = [c for c in ("ID", "TIME", "DV") if c not in raw.frame.columns]
    if missing:
        raise DatasetError(f"{raw.source}: required columns missing: {', '.join(missing)}")
    frame, dose_units = _canonical_frame(raw, types, factors, _units.time_factor(time_unit), dose_unit)
    t_name = _time_name(time_unit)
    default, per_cmt = _units.data_dose_units(dose_unit)
    return Dataset(frame, time_unit=t_name, units=declared, observation_types=types,
                   dose_unit=per_cmt or default, molar_mass=molar_mass, source=raw.source,
                   dose_units=dose_units)
