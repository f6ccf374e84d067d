"""PK components without ODE states: concentrations in closed form or from data.

These components (:class:`pkpd.model.component.Component`) produce the signal
``conc`` and integrate nothing: closed-form PK is evaluated inside the vector field
(and, in a fixed-grid solve, for every stage at once before the time loop). Use them
whenever nothing feeds back into the PK; drugs cleared by the cells they stimulate
need the ODE components of :mod:`pkpd.model.pk.compartmental`.

Components
----------
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

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ...buckets import bucket_size
from ..component import Component
from .closed_form import _STRUCTURAL, INFUSION, SS_INFUSION, central_concentration, pk_modes

__all__ = ["ClosedFormPK", "ConcentrationColumn", "KPD"]


def _dose_jumps(doses):
    """Arrival and infusion-end times of active doses (``+inf`` for padding)."""
    real = doses.start_time < jnp.inf
    arrival = jnp.where(real, doses.arrival, jnp.inf)
    is_inf = (doses.kind == INFUSION) | (doses.kind == SS_INFUSION)
    end = jnp.where(real & is_inf, doses.arrival + doses.duration, jnp.inf)
    return jnp.concatenate([arrival, end])


class ClosedFormPK(Component):
    """Linear PK in closed form (see :mod:`pkpd.model.pk.closed_form` for the equations).

    Signal ``conc``: amount in the central compartment / V1, in the dose unit per L.

    Parameters
    ----------
    model : {"1cmt", "2cmt", "3cmt"}
    absorption : bool
        First-order absorption from a depot (``KA``; local compartment 1 is the depot).
    dose_parameters : tuple of str
        Per-compartment dose quantities estimated as parameters (``F1``, ``ALAG1``,
        ``R1``, ``D1``...; numbered by the data's CMT).
    steady_state : bool
        Evaluate SS dose trains (the model turns this off for data without ``SS``).
    name : str
        Component name (the drug).
    """

    model: str = eqx.field(static=True, default="1cmt")
    absorption: bool = eqx.field(static=True, default=False)
    dose_parameters: tuple = eqx.field(static=True, default=())
    steady_state: bool = eqx.field(static=True, default=True)
    name: str = eqx.field(static=True, default="pk")

    @property
    def parameter_names(self):
        names = _STRUCTURAL[self.model] + (("KA",) if self.absorption else ())
        return names + tuple(self.dose_parameters)

    @property
    def signals(self):
        return ("conc",)

    @property
    def dose_targets(self):
        n = {"1cmt": 1, "2cmt": 2, "3cmt": 3}[self.model]
        return (("depot",) if self.absorption else ()) + ("central",) + tuple(f"peripheral{j}" for j in range(1, n))

    @property
    def receives_doses(self):
        return True

    @property
    def time_only(self):
        return True

    @property
    def is_pk(self):
        return True

    def setup(self, data, doses, theta):
        return doses, pk_modes(theta, self.model, self.absorption)

    def signal(self, t, order, y, theta, inputs, ctx):
        doses, modes = ctx
        c = central_concentration(jnp.reshape(t, (1,)), jnp.reshape(order, (1,)), doses, modes,
                                  steady_state=self.steady_state)
        return {"conc": c[0]}

    def signal_many(self, ts, orders, theta, ctx):
        doses, modes = ctx
        return {"conc": central_concentration(ts, orders, doses, modes, steady_state=self.steady_state)}

    def jump_times(self, ctx):
        return _dose_jumps(ctx[0])


class KPD(Component):
    """K-PD: signal ``conc`` is the amount in a virtual compartment eliminated with ``KDE`` (1/h).

    Equivalent to a 1-compartment model with ``V = 1`` and ``CL = KDE``.

    References
    ----------
    Jacqmin P, Snoeck E, van Schaick EA, et al. Modelling response time profiles in the
    absence of drug concentrations: definition and performance evaluation of the K-PD
    model. J Pharmacokinet Pharmacodyn 2007;34(1):57-85.
    """

    dose_parameters: tuple = eqx.field(static=True, default=())
    steady_state: bool = eqx.field(static=True, default=True)
    name: str = eqx.field(static=True, default="pk")

    @property
    def parameter_names(self):
        return ("KDE",) + tuple(self.dose_parameters)

    @property
    def signals(self):
        return ("conc",)

    @property
    def dose_targets(self):
        return ("central",)

    @property
    def receives_doses(self):
        return True

    @property
    def time_only(self):
        return True

    @property
    def is_pk(self):
        return True

    def _inner(self):
        return ClosedFormPK("1cmt", False, self.dose_parameters, self.steady_state, self.name)

    def setup(self, data, doses, theta):
        virtual = dict(theta, CL=theta["KDE"], V1=jnp.ones_like(theta["KDE"]))
        return self._inner().setup(data, doses, virtual)

    def signal(self, t, order, y, theta, inputs, ctx):
        return self._inner().signal(t, order, y, theta, inputs, ctx)

    def signal_many(self, ts, orders, theta, ctx):
        return self._inner().signal_many(ts, orders, theta, ctx)

    def jump_times(self, ctx):
        return self._inner().jump_times(ctx)


class ConcentrationColumn(Component):
    """Signal ``conc`` read from a data column and interpolated.

    Parameters
    ----------
    column : str
        Column holding the concentration (in the card's PK concentration unit); rows
        where it is missing are ignored.
    interpolation : {"linear", "locf", "nocb"}
        ``locf``: last observation carried forward; ``nocb``: next observation carried
        backward (NONMEM applies a time-varying data item over the interval that ends at
        its record); ``linear``: linear between records. Constant beyond the ends.
    name : str
        Component name (the drug).
    """

    column: str = eqx.field(static=True, default="CONC")
    interpolation: str = eqx.field(static=True, default="linear")
    name: str = eqx.field(static=True, default="pk")

    def __check_init__(self):
        if self.interpolation not in ("linear", "locf", "nocb"):
            raise ValueError(
                f"Invalid `interpolation`: got `{self.interpolation}`, must be 'linear', 'locf' or 'nocb'."
            )

    @property
    def parameter_names(self):
        return ()

    @property
    def signals(self):
        return ("conc",)

    @property
    def time_only(self):
        return True

    @property
    def is_pk(self):
        return True

    @property
    def dose_targets(self):  # doses are accepted and ignored: the column holds the concentration
        return ("central",)

    @property
    def receives_doses(self):
        return True

    def prepare(self, df, ids, n_subjects):
        from ...errors import ModelError

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
        return {"conc_time": times, "conc_value": vals,
                "conc_n": np.array([len(p[0]) for p in per] + [1] * (n_subjects - len(per)))}

    def setup(self, data, doses, theta):
        return data["conc_time"], data["conc_value"], data["conc_n"]

    def signal(self, t, order, y, theta, inputs, ctx):
        xp, fp, n = ctx
        t = jnp.asarray(t)
        if self.interpolation == "linear":
            return {"conc": jnp.interp(t, xp, fp)}
        if self.interpolation == "locf":
            idx = jnp.clip(jnp.searchsorted(xp, t, side="right") - 1, 0, xp.shape[0] - 1)
        else:
            idx = jnp.clip(jnp.searchsorted(xp, t, side="left"), 0, n - 1)
        return {"conc": fp[idx]}

    def jump_times(self, ctx):
        xp, _, n = ctx
        if self.interpolation == "linear":  # continuous: no jumps to announce
            return jnp.full((1,), jnp.inf, dtype=xp.dtype)
        return jnp.where(jnp.arange(xp.shape[0]) < n, xp, jnp.inf)
