"""``predict_pk``: closed-form drug concentrations for a NONMEM-style data set.

The host expands dose records (:mod:`pkpd.events`), resolves parameters that name data
columns, and pads everything to bucketed shapes; one jitted, subject-vmapped function
(:func:`pk_predictor`) evaluates the sums of exponentials (:mod:`pkpd.pk`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ...errors import ModelError
from ...dosing.events import DoseEvents, dose_events, evaluation_keys
from .closed_form import PK_MODELS, _dose_quantity, canonical_pk_params, central_concentration, pk_modes, resolve_doses

__all__ = ["predict_pk", "pk_predictor", "PKInputs", "prepare_pk"]

_DEFAULTS = {"F": 1.0, "ALAG": 0.0, "R": 0.0, "D": 0.0}


def _n_inputs(model: str, absorption: bool) -> int:
    return PK_MODELS[model] + int(absorption)


class PKInputs(dict):
    """Host-prepared arrays for :func:`pk_predictor` (a dict pytree).

    Keys: ``events`` (DoseEvents of jnp arrays, ``[S, D]``), ``structural`` (dict of
    ``[S]`` arrays, canonical names), ``dose`` (dict ``F/ALAG/R/D`` of ``[S, D]`` per-dose
    arrays from data columns, NaN where the parameter is not column-valued).
    """


def _as_dataset(data):
    from ...data.dataset import Dataset, read_dataset

    if isinstance(data, Dataset):
        return data
    return read_dataset(data)


def _check_doses(df, events, names, model, absorption, n_in):
    """Dose compartments must exist; modelled rate/duration need their R<n>/D<n>."""
    line = df["LINE"] if "LINE" in df else pd.Series(np.arange(len(df)) + 2)
    rows = events.row[events.mask]
    cmts = events.cmt[events.mask]
    rates = events.rate[events.mask]
    given = set(names.values())
    for r, c, rate in zip(rows, cmts, rates):
        where = f"line {int(line.iloc[r])}"
        if not 1 <= c <= n_in:
            raise ModelError(
                f"{where}: dose into CMT {c}, but {model!r} {'with' if absorption else 'without'} "
                f"absorption has compartments 1..{n_in}"
            )
        for code, prefix, what in ((-1, "R", "modelled rate"), (-2, "D", "modelled duration")):
            if rate == code and f"{prefix}{c}" not in given:
                raise ModelError(f"{where}: RATE {code} ({what}) but no parameter {prefix}{c} is given")


def _domain(canon: str):
    """(description, test) of the values a PK parameter may take.

    Clearances, volumes, KA, modelled rates ``R<n>`` and durations ``D<n>`` are positive;
    bioavailability ``F<n>`` and lag time ``ALAG<n>`` are non-negative. Values outside
    (``CL = -4``) would give meaningless, often astronomically large, concentrations.
    """
    q = _dose_quantity(canon)
    if q is not None and q[0] in ("F", "ALAG"):
        return "a finite number >= 0", lambda x: np.isfinite(x) & (x >= 0)
    return "a finite number > 0", lambda x: np.isfinite(x) & (x > 0)


def _plain(x):
    """A NumPy scalar as a Python number (for messages)."""
    x = x.item() if isinstance(x, np.generic) else x
    return int(x) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else x


def _check_values(user, canon, arr, ids):
    """Scalar or per-subject values of ``user`` must lie in the parameter's domain."""
    what, ok = _domain(canon)
    bad = np.flatnonzero(~ok(np.atleast_1d(arr)))
    if not bad.size:
        return
    k = int(bad[0])
    value = _plain(np.atleast_1d(arr)[k])
    where = f" for subject {_plain(ids[k])}" if np.ndim(arr) == 1 else ""
    more = f" (and {bad.size - 1} more subjects)" if bad.size > 1 else ""
    raise ModelError(f"parameter {user} = {value}{where}{more} is outside its domain: expected {what}")


def _check_column(user, canon, value, col, rows, line):
    """Values of a data column used as ``user`` (at the given rows) must lie in the domain."""
    what, ok = _domain(canon)
    bad = [r for r in rows if not ok(np.asarray(col[r]))]
    if bad:
        r = bad[0]
        shown = "missing" if np.isnan(col[r]) else _plain(col[r])
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise ModelError(f"parameter {user} = column {value!r}: line {_plain(line.iloc[r])} has {shown}{more}, "
                         f"outside the parameter's domain: expected {what}")


def prepare_pk(dataset, model: str, params: dict, *, ids=None, n_subjects=None):
    """Split ``params`` into traced values and column-valued inputs; expand doses.

    Returns ``(static, inputs, values)``: ``static`` is a hashable tuple for
    :func:`pk_predictor`, ``inputs`` the padded data arrays, ``values`` the numeric
    parameters (dict of scalars or ``[S]`` arrays).

    Raises
    ------
    ModelError
        A parameter outside its domain (clearances, volumes, KA, ``R<n>``, ``D<n>``
        must be > 0; ``F<n>``, ``ALAG<n>`` >= 0; all finite), naming the parameter
        and, for a data column, the line.
    """
    df = dataset.df if hasattr(dataset, "df") else dataset
    df = df.reset_index(drop=True)
    ids = list(pd.unique(df["ID"])) if ids is None else list(ids)
    names = canonical_pk_params(model, params.keys())
    absorption = "KA" in names.values()
    n_in = _n_inputs(model, absorption)
    events = dose_events(df, ids, n_subjects=n_subjects)
    _check_doses(df, events, names, model, absorption, n_in)
    n_sub = events.time.shape[0]
    line = df["LINE"] if "LINE" in df else pd.Series(np.arange(len(df)) + 2)
    first_rows = df.groupby("ID", sort=False).head(1).set_index("ID")
    structural, dose_cols, values = {}, {}, {}
    for user, canon in names.items():
        value = params[user]
        q = _dose_quantity(canon)
        if q is not None and not 1 <= q[1] <= n_in:
            raise ModelError(f"parameter {user}: compartment {q[1]} does not exist in {model!r} "
                             f"{'with' if absorption else 'without'} absorption (1..{n_in})")
        if isinstance(value, str):
            if value not in df.columns:
                raise ModelError(f"parameter {user} names column {value!r}, which the data set lacks")
            col = pd.to_numeric(df[value], errors="coerce").to_numpy(float)
            if q is not None:  # read from each dose record
                arr = np.full(events.row.shape, np.nan)
                ok = events.row >= 0
                arr[ok] = col[events.row[ok]]
                used = events.mask & (events.cmt == q[1])
                if q[0] in ("R", "D"):
                    used &= events.rate == (-1.0 if q[0] == "R" else -2.0)
                _check_column(user, canon, value, col, sorted(set(events.row[used].tolist())), line)
                dose_cols[canon] = arr
            else:  # per-subject value from the subject's first record
                first = first_rows.loc[ids]
                first_pos = df.index.to_series().groupby(df["ID"], sort=False).first()
                positions = [int(first_pos.loc[s]) for s in ids]
                _check_column(user, canon, value, col, positions, line)
                per = np.ones(n_sub)
                per[: len(ids)] = pd.to_numeric(first[value], errors="coerce").to_numpy(float)
                structural[canon] = per
        else:
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ModelError(f"parameter {user}: expected a number, one number per subject or a "
                                 f"column name, got {value!r}") from None
            if arr.ndim == 1:
                if arr.shape[0] != len(ids):
                    raise ModelError(f"parameter {user}: {arr.shape[0]} values for {len(ids)} subjects")
                _check_values(user, canon, arr, ids)
                arr = np.concatenate([arr, np.ones(n_sub - len(ids))])
            elif arr.ndim > 1:
                raise ModelError(f"parameter {user}: expected a scalar or one value per subject")
            else:
                _check_values(user, canon, arr, ids)
            values[canon] = arr
    static = (model, absorption, bool(np.any(events.ss[events.mask] > 0)), tuple(sorted(dose_cols)))
    inputs = {
        "events": DoseEvents(*[jnp.asarray(x) for x in events]),
        "structural": {k: jnp.asarray(v) for k, v in structural.items()},
        "dose": {k: jnp.asarray(v) for k, v in dose_cols.items()},
    }
    return static, inputs, values


def subject_doses(static, events, dose_cols, theta):
    """Per-subject :class:`pkpd.pk.DoseInputs` and :class:`pkpd.pk.PKModes` (call under vmap).

    ``theta``: canonical parameters for this subject (scalars); column-valued dose
    quantities come from ``dose_cols`` ([D] arrays).
    """
    model, absorption, _, _ = static
    n_in = _n_inputs(model, absorption)
    quantities = {}
    for prefix, default in _DEFAULTS.items():
        per_dose = jnp.full(events.time.shape, default, dtype=events.time.dtype)
        for c in range(1, n_in + 1):
            name = f"{prefix}{c}"
            if name in dose_cols:
                per_dose = jnp.where(events.cmt == c, dose_cols[name], per_dose)
            elif name in theta:
                per_dose = jnp.where(events.cmt == c, theta[name], per_dose)
        quantities[prefix] = per_dose
    doses = resolve_doses(events, quantities["F"], quantities["ALAG"], quantities["R"], quantities["D"])
    modes = pk_modes(theta, model, absorption)
    return doses, modes


@partial(jax.jit, static_argnums=0)
def pk_predictor(static, inputs, values, t, order):
    """Concentrations ``[S, N]`` at padded evaluation keys (jitted per bucketed shape)."""
    n_sub = inputs["events"].time.shape[0]
    per_subject = {k: jnp.broadcast_to(jnp.asarray(v, t.dtype), (n_sub,)) for k, v in values.items()}
    per_subject.update(inputs["structural"])

    def one(events, dose_cols, theta, t_s, o_s):
        doses, modes = subject_doses(static, events, dose_cols, theta)
        return central_concentration(t_s, o_s, doses, modes, steady_state=static[2])

    return jax.vmap(one)(inputs["events"], inputs["dose"], per_subject, t, order)


def predict_pk(data, model: str, params: dict) -> np.ndarray:
    """Predicted central concentrations (amount / central volume) at every observation row.

    Parameters
    ----------
    data : Dataset, str or pandas.DataFrame
        A :class:`pkpd.Dataset`, or a path / data frame read with :func:`pkpd.read_dataset`.
    model : {"1cmt", "2cmt", "3cmt"}
        Disposition model. With ``KA`` in ``params`` doses into ``CMT 1`` go to an
        absorption depot (then 2 = central); otherwise ``CMT 1`` is central.
    params : dict
        NONMEM names: ``CL, V`` (1-cmt); ``CL, V1, Q, V2`` (2-cmt); ``CL, V1, Q2, V2, Q3,
        V3`` (3-cmt); optional ``KA``; per-compartment ``F<n>``, ``ALAG<n>``, ``R<n>``
        (modelled rate, RATE = -1), ``D<n>`` (modelled duration, RATE = -2). Values are
        scalars, arrays with one value per subject (order of ``Dataset.ids``), or the
        name of a data column (dose quantities are read from each dose record,
        structural parameters from each subject's first record).

    Returns
    -------
    numpy.ndarray
        One value per observation row (``EVID == 0``), in the file's row order, in the
        dose unit per volume unit (mg and L give mg/L).

    Examples
    --------
    >>> conc = pkpd.predict_pk("data/example.csv", "3cmt",
    ...                        {"CL": 38.5, "V1": 7.4, "Q2": 7.8, "V2": 5.2, "Q3": 9.3, "V3": 111})
    """
    dataset = _as_dataset(data)
    df = dataset.df.reset_index(drop=True)
    ids = list(dataset.ids)
    static, inputs, values = prepare_pk(dataset, model, params, ids=ids)
    rows = np.flatnonzero(df["EVID"].to_numpy(int) == 0)
    n_sub = inputs["events"].time.shape[0]
    t, order, row, mask = evaluation_keys(df, rows, ids, n_subjects=n_sub)
    conc = np.asarray(pk_predictor(static, inputs, values, jnp.asarray(t), jnp.asarray(order)))
    out = pd.Series(conc[mask], index=row[mask]).reindex(rows)
    return out.to_numpy(float)
