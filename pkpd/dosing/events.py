"""Dosing events with NONMEM semantics, expanded on the host into padded arrays.

A dose record of a NONMEM data set becomes one or more *dose events*:

* the record itself (EVID 1 or 4), with its amount, compartment, rate and SS flag;
* one event per additional dose (``ADDL`` > 0): at ``TIME + j*II``, ``j = 1..ADDL``,
  with the same amount, compartment and rate;
* an ``SS`` record stands for the whole infinite train of earlier identical doses
  every ``II``; it stays one event and the train is summed in closed form by
  :mod:`pkpd.pk`.

Ordering and resets
-------------------
Every event and every evaluation point carries a *key* ``(time, order)``: ``order``
is the record's row position in the data set, so records at the same time act in
file order (a sample before the dose row at time 0 is a pre-dose sample). An
additional (implied) dose is ordered before any record at its time (``order = -1``),
so a sample taken at the time of an implied dose sees it.

EVID 3 (reset), EVID 4 (reset and dose) and ``SS = 1`` (steady state, earlier history
discarded) are *epoch boundaries*: each dose event is active on the window
``[start, end)`` from its own key to the next boundary after it. A reset therefore
zeroes every compartment, stops running infusions and cancels implied doses that
were still to come; ``SS = 2`` adds its train to whatever is there.

For evaluation at an arbitrary time (inside an ODE right-hand side) use
``order = +inf``: a dose at ``t0`` is active for ``t >= t0``, a reset at ``tr`` acts
for ``t >= tr``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..buckets import bucket_size
from ..errors import DatasetError

__all__ = ["DoseEvents", "dose_events", "evaluation_keys"]

#: ``order`` of implied (ADDL) doses: before any record at the same time.
IMPLIED_ORDER = -1.0


class DoseEvents(NamedTuple):
    """Padded dose events, arrays of shape ``[n_subjects, n_doses]`` (numpy).

    Attributes
    ----------
    time : float64
        Record time of the dose (h); the dose arrives at ``time + ALAG``.
    amt : float64
        Amount (before bioavailability ``F``).
    cmt : int32
        Compartment number as in the data (``CMT``).
    rate : float64
        ``RATE``: 0 bolus, > 0 fixed-rate infusion, -1 modelled rate, -2 modelled duration.
    ii : float64
        Interdose interval of an SS train (0 otherwise).
    ss : int32
        0 single dose, 1 or 2 steady-state train (see module docstring).
    ss_infusion : bool
        ``SS`` record with ``AMT = 0`` and ``RATE > 0``: a constant infusion at steady
        state up to the record, stopped there.
    start_time, start_order, end_time, end_order : float64
        Activity window ``[(start_time, start_order), (end_time, end_order))``.
    row : int32
        Row position (in the data set) of the record the event comes from; -1 padding.
    mask : bool
        True for real events.
    """

    time: np.ndarray
    amt: np.ndarray
    cmt: np.ndarray
    rate: np.ndarray
    ii: np.ndarray
    ss: np.ndarray
    ss_infusion: np.ndarray
    start_time: np.ndarray
    start_order: np.ndarray
    end_time: np.ndarray
    end_order: np.ndarray
    row: np.ndarray
    mask: np.ndarray


_FIELDS_FLOAT = ("time", "amt", "rate", "ii", "start_time", "start_order", "end_time", "end_order")


def _subject_events(sub: pd.DataFrame) -> list[dict]:
    """Expand one subject's records (in file order) into dose-event dicts."""
    times = sub["TIME"].to_numpy(float)
    evid = sub["EVID"].to_numpy(int)
    ss = sub["SS"].to_numpy(int)
    positions = sub.index.to_numpy(int)
    # Epoch boundaries: EVID 3/4 and SS=1 dose records, keyed (time, row position).
    is_dose = (evid == 1) | (evid == 4)
    boundary = (evid == 3) | (evid == 4) | (is_dose & (ss == 1))
    bkeys = [(times[i], float(positions[i])) for i in np.flatnonzero(boundary)]

    def next_boundary(key):
        for b in bkeys:
            if b > key:
                return b
        return (np.inf, np.inf)

    events = []
    for i in np.flatnonzero(is_dose):
        rec = sub.iloc[i]
        base = dict(
            amt=float(rec["AMT"]),
            cmt=int(rec["CMT"]),
            rate=float(rec["RATE"]),
            row=int(positions[i]),
        )
        key = (float(times[i]), float(positions[i]))
        end = next_boundary(key)
        ss_i = int(ss[i])
        ii = float(rec["II"])
        ss_inf = ss_i > 0 and base["amt"] == 0.0 and base["rate"] > 0
        events.append(
            dict(base, time=key[0], ii=ii if ss_i else 0.0, ss=ss_i, ss_infusion=ss_inf,
                 start_time=key[0], start_order=key[1], end_time=end[0], end_order=end[1])
        )
        addl = int(rec["ADDL"])
        if addl > 0 and ii > 0:
            for j in range(1, addl + 1):
                t = key[0] + j * ii
                ikey = (t, IMPLIED_ORDER)
                if ikey >= end:  # a reset came first: the implied dose is cancelled
                    break
                events.append(
                    dict(base, time=t, ii=0.0, ss=0, ss_infusion=False, start_time=t,
                         start_order=IMPLIED_ORDER, end_time=end[0], end_order=end[1])
                )
    return events


def dose_events(df: pd.DataFrame, ids=None, *, min_doses: int = 1, n_subjects: int | None = None) -> DoseEvents:
    """Expand the dose records of a canonical data frame into padded :class:`DoseEvents`.

    Parameters
    ----------
    df : pandas.DataFrame
        Canonical data (``Dataset.df``): columns ``ID, TIME, AMT, EVID, CMT, RATE, II,
        ADDL, SS``; the row position is the record's order.
    ids : sequence, optional
        Subjects in the order of the output's first axis (default: order of appearance).
    min_doses : int
        Lower bound on the padded number of doses.
    n_subjects : int, optional
        Padded number of subjects (default: ``bucket_size(len(ids))``).

    Returns
    -------
    DoseEvents
        Arrays ``[n_subjects, bucket_size(max events per subject)]``.
    """
    df = df.reset_index(drop=True)
    if ids is None:
        ids = list(pd.unique(df["ID"]))
    groups = {k: g for k, g in df.groupby("ID", sort=False)}
    per_subject = []
    for sid in ids:
        if sid not in groups:
            raise DatasetError(f"unknown subject ID {sid!r}")
        per_subject.append(_subject_events(groups[sid]))
    n_sub = n_subjects or bucket_size(len(ids))
    n_dose = bucket_size(max([len(e) for e in per_subject] + [min_doses]))
    out = {f: np.zeros((n_sub, n_dose)) for f in _FIELDS_FLOAT}
    out["end_time"][:] = np.inf
    out["end_order"][:] = np.inf
    out["start_time"][:] = np.inf  # padding never becomes active
    out["cmt"] = np.ones((n_sub, n_dose), dtype=np.int32)
    out["ss"] = np.zeros((n_sub, n_dose), dtype=np.int32)
    out["ss_infusion"] = np.zeros((n_sub, n_dose), dtype=bool)
    out["row"] = np.full((n_sub, n_dose), -1, dtype=np.int32)
    out["mask"] = np.zeros((n_sub, n_dose), dtype=bool)
    for s, events in enumerate(per_subject):
        for d, ev in enumerate(events):
            for key, value in ev.items():
                out[key][s, d] = value
            out["mask"][s, d] = True
    return DoseEvents(**out)


def evaluation_keys(df: pd.DataFrame, rows, ids=None, *, n_subjects=None, min_points: int = 1):
    """Padded evaluation keys ``(time, order)`` for the given rows of ``df``.

    Returns ``(time, order, row, mask)``, arrays ``[n_subjects, n_points]`` where
    ``row`` is the row position (-1 padding). Rows keep file order within a subject;
    padding repeats the subject's last time (so sorted times stay sorted for solvers).
    """
    df = df.reset_index(drop=True)
    if ids is None:
        ids = list(pd.unique(df["ID"]))
    rows = np.asarray(rows, dtype=int)
    sel = df.iloc[rows]
    per = [rows[(sel["ID"] == sid).to_numpy()] for sid in ids]
    n_sub = n_subjects or bucket_size(len(ids))
    n_pt = bucket_size(max([len(r) for r in per] + [min_points]))
    time = np.zeros((n_sub, n_pt))
    order = np.zeros((n_sub, n_pt))
    row = np.full((n_sub, n_pt), -1, dtype=np.int32)
    mask = np.zeros((n_sub, n_pt), dtype=bool)
    tcol = df["TIME"].to_numpy(float)
    for s, r in enumerate(per):
        time[s, : len(r)] = tcol[r]
        time[s, len(r):] = tcol[r[-1]] if len(r) else 0.0
        order[s, : len(r)] = r
        row[s, : len(r)] = r
        mask[s, : len(r)] = True
    return time, order, row, mask
