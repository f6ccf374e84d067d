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

from .errors import ModelError
from .events import DoseEvents, dose_events, evaluation_keys
from .pk import PK_MODELS, _dose_quantity, canonical_pk_params, central_concentration, pk_modes, resolve_doses

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
    from .dataset import Dataset, read_dataset

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


def prepare_pk(dataset, model: str, params: dict, *, ids=None, n_subjects=None):
    """Split ``params`` into traced values and column-valued inputs; expand doses.

    Returns ``(static, inputs, values)``: ``static`` is a hashable tuple for
    :func:`pk_predictor`, ``inputs`` the padded data arrays, ``values`` the numeric
    parameters (dict of scalars or ``[S]`` arrays).
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
                dose_cols[canon] = arr
            else:  # per-subject value from the subject's first record
                per = np.ones(n_sub)
                per[: len(ids)] = first_rows.loc[ids, value].to_numpy(float)
                structural[canon] = per
        else:
            arr = np.asarray(value, dtype=float)
            if arr.ndim == 1:
                if arr.shape[0] != len(ids):
                    raise ModelError(f"parameter {user}: {arr.shape[0]} values for {len(ids)} subjects")
                arr = np.concatenate([arr, np.ones(n_sub - len(ids))])
            elif arr.ndim > 1:
                raise ModelError(f"parameter {user}: expected a scalar or one value per subject")
            values[canon] = arr
    bad = ~np.isfinite(np.concatenate([np.ravel(v) for v in list(values.values()) + list(structural.values())]))
    if bad.any():
        raise ModelError("PK parameters must be finite numbers")
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
