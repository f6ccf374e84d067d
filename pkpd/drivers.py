"""PK drivers: what gives the PD system its drug concentration ``C(t)``.

A driver is an :class:`equinox.Module` with host-side :meth:`PKDriver.prepare` (pads the
data it needs into arrays, once per data set) and pure JAX per-subject methods
(:meth:`setup`, :meth:`concentration`, :meth:`jump_times`) that the solver calls under
``vmap``. Only the PD states are integrated: closed-form PK is evaluated inside the
vector field.

Drivers
-------
:class:`ClosedFormPK`
    linear 1/2/3-compartment PK (:mod:`pkpd.pk`), with population parameters or, for the
    sequential "PK first, then PD" approach (Friberg 2002, DDMoRe 186), individual PK
    parameters read from data columns (the model card marks them ``column = ...``).
:class:`ConcentrationColumn`
    a concentration column of the data, interpolated (linear, LOCF or NOCB, NONMEM's
    convention for time-varying data items).
:class:`KPD`
    K-PD (Jacqmin et al. 2007): no PK data; a virtual amount in a compartment eliminated
    with rate ``KDE`` drives the effect (``C(t)`` is that amount).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .buckets import bucket_size
from .pk import INFUSION, SS_INFUSION, central_concentration
from .predict import subject_doses

__all__ = ["PKDriver", "ClosedFormPK", "ConcentrationColumn", "KPD"]


class PKDriver(eqx.Module):
    """Abstract PK driver."""

    @property
    @abc.abstractmethod
    def parameter_names(self) -> tuple[str, ...]:
        """Parameters (in ``theta``) the driver uses."""

    def prepare(self, df: pd.DataFrame, ids, n_subjects: int) -> dict:
        """Host-side padded arrays (``[S, ...]`` numpy) the driver needs from the data."""
        return {}

    @abc.abstractmethod
    def setup(self, data: dict, events, theta: dict):
        """Per-subject precomputation (JAX, under vmap): returns a pytree ``state``."""

    @abc.abstractmethod
    def concentration(self, state, t, order):
        """Concentrations ``[N]`` at times ``t`` ``[N]`` (``order`` as in :mod:`pkpd.events`)."""

    @abc.abstractmethod
    def jump_times(self, state):
        """Times ``[J]`` where ``C(t)`` is discontinuous (``+inf`` padding)."""

    @abc.abstractmethod
    def dose_times(self, state):
        """Arrival times ``[D]`` of the doses given (``+inf`` padding)."""


def _dose_jumps(doses, mask):
    arrival = jnp.where(mask, doses.arrival, jnp.inf)
    is_inf = (doses.kind == INFUSION) | (doses.kind == SS_INFUSION)
    end = jnp.where(mask & is_inf, doses.arrival + doses.duration, jnp.inf)
    return jnp.concatenate([arrival, end])


class ClosedFormPK(PKDriver):
    """Linear PK in closed form (see :mod:`pkpd.pk` for equations and compartment numbers).

    Parameters
    ----------
    model : {"1cmt", "2cmt", "3cmt"}
    absorption : bool
        First-order absorption from a depot (``KA``; doses into ``CMT 1``).
    dose_parameters : tuple of str
        Per-compartment dose quantities estimated as parameters (``F1``, ``ALAG1``,
        ``R1``, ``D1``...).
    steady_state : bool
        Evaluate SS dose trains (the model turns this off for data without ``SS``).
    """

    model: str = eqx.field(static=True, default="1cmt")
    absorption: bool = eqx.field(static=True, default=False)
    dose_parameters: tuple = eqx.field(static=True, default=())
    steady_state: bool = eqx.field(static=True, default=True)

    @property
    def parameter_names(self):
        from .pk import _STRUCTURAL

        names = _STRUCTURAL[self.model] + (("KA",) if self.absorption else ())
        return names + tuple(self.dose_parameters)

    def setup(self, data, events, theta):
        static = (self.model, self.absorption, self.steady_state, ())
        doses, modes = subject_doses(static, events, {}, theta)
        return doses, modes, events.mask

    def concentration(self, state, t, order):
        doses, modes, _ = state
        return central_concentration(t, order, doses, modes, steady_state=self.steady_state)

    def jump_times(self, state):
        doses, _, mask = state
        return _dose_jumps(doses, mask)

    def dose_times(self, state):
        doses, _, mask = state
        return jnp.where(mask, doses.arrival, jnp.inf)


class KPD(PKDriver):
    """K-PD driver: ``C(t)`` is the amount in a virtual compartment eliminated with ``KDE`` (1/h).

    Equivalent to a 1-compartment model with ``V = 1`` and ``CL = KDE`` (delegates to
    :class:`ClosedFormPK`).

    References
    ----------
    Jacqmin P, Snoeck E, van Schaick EA, et al. Modelling response time profiles in the
    absence of drug concentrations: definition and performance evaluation of the K-PD
    model. J Pharmacokinet Pharmacodyn 2007;34(1):57-85.
    """

    dose_parameters: tuple = eqx.field(static=True, default=())
    steady_state: bool = eqx.field(static=True, default=True)

    @property
    def parameter_names(self):
        return ("KDE",) + tuple(self.dose_parameters)

    def _inner(self):
        return ClosedFormPK("1cmt", False, self.dose_parameters, self.steady_state)

    def setup(self, data, events, theta):
        virtual = dict(theta, CL=theta["KDE"], V1=jnp.ones_like(theta["KDE"]))
        return self._inner().setup(data, events, virtual)

    def concentration(self, state, t, order):
        return self._inner().concentration(state, t, order)

    def jump_times(self, state):
        return self._inner().jump_times(state)

    def dose_times(self, state):
        return self._inner().dose_times(state)


class ConcentrationColumn(PKDriver):
    """Concentrations read from a data column and interpolated.

    Parameters
    ----------
    column : str
        Column holding the concentration (in the card's PK concentration unit); rows
        where it is missing are ignored.
    interpolation : {"linear", "locf", "nocb"}
        ``locf``: last observation carried forward; ``nocb``: next observation carried
        backward (NONMEM applies a time-varying data item over the interval that ends at
        its record); ``linear``: linear between records. Constant beyond the ends.
    """

    column: str = eqx.field(static=True, default="CONC")
    interpolation: str = eqx.field(static=True, default="linear")

    def __check_init__(self):
        if self.interpolation not in ("linear", "locf", "nocb"):
            raise ValueError(
                f"Invalid `interpolation`: got `{self.interpolation}`, must be 'linear', 'locf' or 'nocb'."
            )

    @property
    def parameter_names(self):
        return ()

    def prepare(self, df, ids, n_subjects):
        from .errors import ModelError

        if self.column not in df.columns:
            raise ModelError(f"the concentration column {self.column!r} is not in the data set")
        values = pd.to_numeric(df[self.column], errors="coerce")
        per = []
        for sid in ids:
            sel = (df["ID"] == sid).to_numpy() & values.notna().to_numpy()
            per.append((df["TIME"].to_numpy(float)[sel], values.to_numpy(float)[sel]))
        k = bucket_size(max([len(p[0]) for p in per] + [1]))
        times = np.zeros((n_subjects, k))
        vals = np.zeros((n_subjects, k))
        for s, (tt, vv) in enumerate(per):
            if len(tt) == 0:
                tt, vv = np.zeros(1), np.zeros(1)
            pad = k - len(tt)
            times[s] = np.concatenate([tt, tt[-1] + 1.0e6 * np.arange(1, pad + 1)])
            vals[s] = np.concatenate([vv, np.full(pad, vv[-1])])
        return {"conc_time": times, "conc_value": vals, "conc_n": np.array([len(p[0]) for p in per] + [1] * (n_subjects - len(per)))}

    def setup(self, data, events, theta):
        return data["conc_time"], data["conc_value"], data["conc_n"], events

    def concentration(self, state, t, order):
        xp, fp, n, _ = state
        t = jnp.asarray(t)
        if self.interpolation == "linear":
            return jnp.interp(t, xp, fp)
        if self.interpolation == "locf":
            idx = jnp.clip(jnp.searchsorted(xp, t, side="right") - 1, 0, xp.shape[0] - 1)
        else:
            idx = jnp.clip(jnp.searchsorted(xp, t, side="left"), 0, n - 1)
        return fp[idx]

    def jump_times(self, state):
        xp, _, n, _ = state
        if self.interpolation == "linear":  # continuous: no jumps to announce
            return jnp.full((1,), jnp.inf, dtype=xp.dtype)
        return jnp.where(jnp.arange(xp.shape[0]) < n, xp, jnp.inf)

    def dose_times(self, state):
        events = state[3]
        return jnp.where(events.mask, events.time, jnp.inf)
