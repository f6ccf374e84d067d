r"""Compartmental PK integrated as ODE states: linear, Michaelis-Menten, target-mediated.

Use these when something feeds back into the PK (a drug cleared by the cells it
stimulates) or elimination is nonlinear; linear PK with nothing feeding back is
faster and exact in closed form (:mod:`pkpd.model.pk.drivers`).

States (amounts): optional ``depot`` (SC/oral, first-order absorption ``KA``), then
``central`` (the *total* amount in the central volume ``V1``, free plus bound with
target-mediated disposition) and ``peripheral1..`` (``Q2, V2``, ``Q3, V3``).

.. math::

    \frac{dA_d}{dt} &= -k_a A_d \\
    \frac{dA_c}{dt} &= k_a A_d - CL\,C - \frac{V_{max} C}{K_m + C}
        - k_{int}\,(C_{tot} - C)\,V_1 - \sum_j Q_j (C - A_j/V_j) \\
    \frac{dA_j}{dt} &= Q_j (C - A_j/V_j)

with :math:`C_{tot} = A_c/V_1` and the free concentration :math:`C` equal to
:math:`C_{tot}` without binding, or, for target-mediated disposition in its
quasi-equilibrium form (Gibiansky et al. 2008), the root of the binding quadratic with
a receptor pool :math:`R_{tot} = \xi \cdot X` proportional to a coupled cell count
:math:`X` (input ``receptor``: neutrophils for filgrastim, platelets for romiplostim):

.. math::

    C = \tfrac12\left[(C_{tot} - R_{tot} - K_D)
        + \sqrt{(C_{tot} - R_{tot} - K_D)^2 + 4 K_D C_{tot}}\right],

receptor occupancy :math:`C/(K_D + C)`. Zero-order and sequential zero/first-order
absorption come from the dose records (an infusion into ``depot`` or ``central``; a
modelled duration ``D<n>`` with ``RATE = -2``), bioavailability and lag from ``F<n>``
and ``ALAG<n>`` (named by the data's CMT, as in NONMEM).

Signals: ``conc`` (free concentration), ``total`` (total concentration),
``occupancy`` (bound fraction of the receptor pool; 0 without binding).

Dual sequential first-order absorption (Gibiansky et al. 2011 eltrombopag; Farrell et
al. 2014), option ``dual_absorption``: the depot is absorbed with rate ``KA`` (the
papers' ka1) until ``TSWITCH`` hours after the most recent dose into the depot, and
with ``KA2`` after that,

.. math::

    k_a(t) = \begin{cases} k_{a1} & t - t_{dose} < T_{switch} \\
                            k_{a2} & t - t_{dose} \ge T_{switch} \end{cases}

with :math:`t_{dose}` the record time of the latest dose into the depot at or before
:math:`t` (the nominal time, before the lag ``ALAG<n>``, which delays the dose's
arrival in the depot). This is the interpretation of the nlmixr2lib encoding of
Farrell 2014 (``ka_now <- ka1; if (tad() >= tswitch) ka_now <- ka2``; ``tad`` resets
at each dose, so the switch applies to everything left in the depot). With a lag
``ALAG < TSWITCH`` each dose is absorbed at ``ka1`` from ``t_dose + ALAG`` to
``t_dose + TSWITCH``, then at ``ka2``. The switch times are passed to the integrator
as discontinuities. Model cards select it with ``absorption = "dual_sequential"``.

References
----------
Gibiansky L, Gibiansky E, Kakkar T, Ma P. Approximations of the target-mediated drug
disposition model and identifiability of model parameters. J Pharmacokinet
Pharmacodyn 2008;35(5):573-591.
Harrold JM, et al. Clin Transl Sci 2020;13(4):807-817 (filgrastim, quasi-equilibrium
binding to neutrophil receptors, after Melhem et al. Br J Clin Pharmacol 2018).
Wang YC, et al. AAPS J 2010;12(4):729-740 (romiplostim, receptor pool on platelets).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..component import Component

__all__ = ["CompartmentalPK", "free_concentration"]

_STRUCTURAL = {1: ("CL", "V1"), 2: ("CL", "V1", "Q2", "V2"), 3: ("CL", "V1", "Q2", "V2", "Q3", "V3")}


def free_concentration(c_total, r_total, kd):
    r"""Free ligand concentration at quasi-equilibrium binding (the quadratic's positive root).

    Written in the cancellation-free form :math:`2 K_D C_{tot}/(\sqrt{b^2 + 4K_D C_{tot}} - b)`
    when :math:`b = C_{tot} - R_{tot} - K_D < 0` (ligand mostly bound), and
    :math:`(b + \sqrt{b^2 + 4K_D C_{tot}})/2` otherwise.
    """
    b = c_total - r_total - kd
    disc = jnp.sqrt(b * b + 4.0 * kd * c_total)
    neg = b < 0
    denom = jnp.where(neg, disc - b, 1.0)
    return jnp.where(neg, 2.0 * kd * c_total / jnp.where(denom > 0, denom, 1.0), 0.5 * (b + disc))


class CompartmentalPK(Component):
    """ODE PK component (see the module docstring).

    Parameters
    ----------
    n_compartments : {1, 2, 3}
        Disposition compartments.
    absorption : bool
        An extravascular depot with first-order absorption ``KA``.
    elimination : {"linear", "michaelis_menten", "linear+michaelis_menten"}
        Linear (``CL``), saturable (``VMAX`` amount/h, ``KM`` concentration), or both.
    binding : {"none", "tmdd_qe"}
        Target-mediated disposition, quasi-equilibrium (``KD``, ``KINT``, ``XI``;
        input ``receptor``).
    parameters : tuple of (local, global) pairs
        Renames: e.g. ``(("CL", "CLD"), ("V1", "VD"), ("KA", "KSC"))`` reads the card's
        ``CLD`` where the equations say ``CL``.
    name : str
        The drug.
    dose_parameters : tuple of str
        Dose quantities estimated as parameters (``F2``, ``ALAG2``, ``D2``...; numbered by
        the data's CMT), applied by the system to the doses routed here.
    dual_absorption : bool
        Dual sequential first-order absorption (``KA`` then ``KA2`` from ``TSWITCH`` h
        after each dose into the depot; module docstring). Needs ``absorption``.
    """

    n_compartments: int = eqx.field(static=True, default=1)
    absorption: bool = eqx.field(static=True, default=False)
    elimination: str = eqx.field(static=True, default="linear")
    binding: str = eqx.field(static=True, default="none")
    parameters: tuple = eqx.field(static=True, default=())
    name: str = eqx.field(static=True, default="pk")
    dose_parameters: tuple = eqx.field(static=True, default=())
    dual_absorption: bool = eqx.field(static=True, default=False)

    @property
    def _dual(self) -> bool:
        return bool(self.dual_absorption)

    def __check_init__(self):
        if self._dual and not self.absorption:
            raise ValueError("Dual sequential absorption (`dual_absorption`) needs `absorption=True` (a depot).")
        if self.n_compartments not in _STRUCTURAL:
            raise ValueError(f"Invalid `n_compartments`: got `{self.n_compartments}`, must be 1, 2 or 3.")
        if self.elimination not in ("linear", "michaelis_menten", "linear+michaelis_menten"):
            raise ValueError(f"Invalid `elimination`: got `{self.elimination}`, must be 'linear', "
                             "'michaelis_menten' or 'linear+michaelis_menten'.")
        if self.binding not in ("none", "tmdd_qe"):
            raise ValueError(f"Invalid `binding`: got `{self.binding}`, must be 'none' or 'tmdd_qe'.")

    def _local_names(self) -> tuple[str, ...]:
        names = list(_STRUCTURAL[self.n_compartments])
        if self.elimination == "michaelis_menten":
            names.remove("CL")
        if "michaelis_menten" in self.elimination:
            names += ["VMAX", "KM"]
        if self.absorption:
            names.append("KA")
        if self._dual:
            names += ["KA2", "TSWITCH"]
        if self.binding == "tmdd_qe":
            names += ["KD", "KINT", "XI"]
        return tuple(names)

    def _g(self, local: str) -> str:
        return dict(self.parameters).get(local, local)

    @property
    def parameter_names(self):
        return tuple(self._g(n) for n in self._local_names()) + tuple(self.dose_parameters)

    @property
    def state_names(self):
        head = ("depot",) if self.absorption else ()
        return head + ("central",) + tuple(f"peripheral{j}" for j in range(1, self.n_compartments))

    @property
    def dose_targets(self):
        return self.state_names

    @property
    def inputs(self):
        return ("receptor",) if self.binding == "tmdd_qe" else ()

    @property
    def signal_inputs(self):
        return self.inputs

    @property
    def signals(self):
        return ("conc", "total", "occupancy")

    @property
    def is_pk(self):
        return True

    @property
    def receives_doses(self):
        return self._dual

    def setup(self, data, doses, theta):
        if not self._dual or doses is None:
            return None
        # Record times of the doses into the depot (local dose target 1); +inf padding.
        into_depot = (doses.start_time < jnp.inf) & (doses.cmt == 1)
        times = jnp.where(into_depot, doses.time, jnp.inf)
        return {"dose_time": times, "switch": times + theta[self._g("TSWITCH")]}

    def jump_times(self, ctx):
        if ctx is None:
            return jnp.full((1,), jnp.inf)
        return ctx["switch"]

    def absorption_rate(self, t, theta, ctx):
        """First-order absorption rate constant at time ``t`` (``KA``, or ``KA``/``KA2``)."""
        ka = theta[self._g("KA")]
        if not self._dual:
            return ka
        given = ctx["dose_time"] <= t
        latest = jnp.max(jnp.where(given, ctx["dose_time"], -jnp.inf))
        switched = jnp.any(given) & (t - latest >= theta[self._g("TSWITCH")])
        return jnp.where(switched, theta[self._g("KA2")], ka)

    def initial_state(self, theta):
        return jnp.zeros((len(self.state_names),), dtype=jnp.result_type(theta[self._g("V1")], float))

    def _free(self, y, theta, inputs):
        k = 1 if self.absorption else 0
        c_tot = y[k] / theta[self._g("V1")]
        if self.binding == "tmdd_qe":
            r_tot = theta[self._g("XI")] * jnp.maximum(inputs["receptor"], 0.0)
            c = free_concentration(jnp.maximum(c_tot, 0.0), r_tot, theta[self._g("KD")])
            return c, c_tot, c / (theta[self._g("KD")] + c)
        return c_tot, c_tot, jnp.zeros_like(c_tot)

    def signal(self, t, order, y, theta, inputs, ctx):
        c, c_tot, occ = self._free(y, theta, inputs)
        return {"conc": c, "total": c_tot, "occupancy": occ}

    def vector_field(self, t, y, theta, inputs, ctx):
        p = lambda n: theta[self._g(n)]  # noqa: E731
        k = 1 if self.absorption else 0
        c, c_tot, _ = self._free(y, theta, inputs)
        v1 = p("V1")
        out = []
        d_central = jnp.zeros_like(c)
        if self.absorption:
            absorbed = self.absorption_rate(t, theta, ctx) * y[0]
            out.append(-absorbed)
            d_central = d_central + absorbed
        if self.elimination != "michaelis_menten":
            d_central = d_central - p("CL") * c
        if "michaelis_menten" in self.elimination:
            d_central = d_central - p("VMAX") * c / (p("KM") + c)
        if self.binding == "tmdd_qe":
            d_central = d_central - p("KINT") * (c_tot - c) * v1
        periph = []
        for j in range(2, self.n_compartments + 1):
            flow = p(f"Q{j}") * (c - y[k + j - 1] / p(f"V{j}"))
            d_central = d_central - flow
            periph.append(flow)
        out.append(d_central)
        out += periph
        return jnp.stack(out)
