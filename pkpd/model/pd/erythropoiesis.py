r"""Red cells and haemoglobin: ESA stimulation, chemotherapy-induced anaemia, transfusions.

Two model families (MODELS.md section 4):

* :class:`RedCellLifespan`: the Agoram 2006 darbepoetin model of chemotherapy-induced
  anaemia (section 4.3), optionally with a Friberg-type chemotherapy effect on erythroid
  progenitors and red-cell transfusions;
* :class:`EpoetinErythropoiesis` with :class:`EndogenousEPO`: the epoetin biosimilar model
  of the Metrum ``epo.cpp`` encoding (section 4.5; endogenous EPO cleared by receptors on
  erythroid precursors, precursors -> reticulocytes -> red cells).

Agoram 2006 (:class:`RedCellLifespan`)
--------------------------------------
Progenitors ``PT`` (mean transit time ``RBCPT``) feed a chain of ``n`` red-cell
compartments ``LS1..LSn`` (``n = 4`` in Agoram 2006, each with rate :math:`n/RBCLS`, so the
mean lifespan is ``RBCLS``); haemoglobin is their sum (g/dL). An ESA concentration
:math:`C` stimulates progenitor production:

.. math::

    S(C) &= 1 + S_{max}\,\frac{C}{S_{50} + C}, \qquad R_{in} = Hb_0/RBCLS,
        \quad k_{PT} = 1/RBCPT, \quad k_{LS} = n/RBCLS \\
    \frac{dPT}{dt} &= R_{in}\,S(C)\,P - k_{PT}\,PT \\
    \frac{dLS_1}{dt} &= k_{PT}\,PT - k_{LS}\,LS_1, \qquad
    \frac{dLS_k}{dt} = k_{LS}\,(LS_{k-1} - LS_k), \; k = 2..n \\
    Hb &= \sum_k LS_k + Hb_{unit} \sum_k TX_k

with :math:`P = 1` (Agoram 2006) or, with a chemotherapy effect (``chemo_effect``), a
self-renewing Friberg-type progenitor pool relative to its baseline,

.. math::

    \frac{dP}{dt} = k_{PT}\,P\,\left[(1 - E(C_{chemo}))\left(\frac{Hb_0}{Hb}\right)^{\gamma} - 1\right],

whose proliferation the chemotherapy inhibits (:mod:`pkpd.model.pd.effects`) and low
haemoglobin stimulates (endogenous EPO feedback, exponent ``gamma``), exactly as the
neutrophil model of Friberg 2002 with :math:`Circ \to Hb`; the pool turns over with the
progenitor rate :math:`k_{PT}` (so progenitor pool plus ``PT`` have MTT :math:`2\,RBCPT`).
Both the pool and the Friberg form for red cells are assumptions (MODELS.md has no
published erythroid chemotherapy model with parameters; section 4.6).

**Transfusions** (``transfusion = True``): transfused red cells enter a parallel chain
``TX1..TXn`` counted in *units of red cells* (the data's ``AMT`` of a dose routed to a
``TX`` state, e.g. ``cmt = { TX1 = 20 }``), which ages with the same rate :math:`k_{LS}`:
:math:`dTX_1/dt = -k_{LS} TX_1`, :math:`dTX_k/dt = k_{LS}(TX_{k-1} - TX_k)`. Each unit adds
``Hb_per_unit`` g/dL, so a transfusion of ``u`` units raises Hb at once by exactly
:math:`Hb_{unit}\,u` and the cells then age out through the lifespan chain, not at once.
The chain is linear, so this equals adding the cells to ``LS`` (superposition); keeping
them apart lets the dose be counted in units whatever ``Hb_per_unit`` is. Routed into
``TX1`` the cells get a full new lifespan (mean ``RBCLS``); into ``TXk`` they have
:math:`(n-k+1)/n` of it left (stored donor cells are of mixed age: a card may route to
a later compartment).

Exact steady state
------------------
The states are kept *relative to their baselines* (``P``, ``PT/PT0``, ``LS_k/LS0``, all 1
without drug; ``TX`` in units, 0), so every derivative is a rate times a difference of
quantities that are exactly equal at baseline (``S = 1``, ``E = 0``), and
``Hb = Hb0 * mean(LS/LS0) + Hb_per_unit * sum(TX)`` equals ``Hb0`` exactly; the equations
are those above divided by the baselines :math:`PT_0 = R_{in} RBCPT`,
:math:`LS_0 = Hb_0/n`.

Lifespan: transit chain versus a point lifespan
-----------------------------------------------
A chain of ``n`` compartments gives red cells an Erlang(``n``, :math:`n/RBCLS`) lifespan
(CV :math:`1/\sqrt n`); a point (Krzyzanski-Jusko) lifespan ``TR`` gives every cell
exactly ``TR``. After production stops at :math:`t_0` the surviving fraction of a
steady-state population (uniform age) is

.. math::

    f_{point}(t) = \max(0, 1 - t/TR), \qquad
    f_n(t) = \frac{1}{n}\sum_{j=0}^{n-1} P\!\left[\mathrm{Poisson}(n t/TR) \le j\right].

MODELS.md section 9 case 6, ``TR = 116`` d (tests/test_erythropoiesis.py checks the
chain against :math:`f_n` to 1e-6):

=======  ==============  ======================  =====================
t (d)    point lifespan  10 transits (Wang/PR)   4 transits (Agoram)
=======  ==============  ======================  =====================
29       0.750           0.7500                  0.7511
58       0.500           0.5022                  0.5188
87       0.250           0.2799                  0.3298
116      0               0.1251                  0.1954
150      0               0.0373                  0.0983
=======  ==============  ======================  =====================

References
----------
Agoram B, Heatherington AC, Gastonguay MR. Development and evaluation of a population
pharmacokinetic-pharmacodynamic model of darbepoetin alfa in patients with nonmyeloid
malignancies undergoing multicycle chemotherapy. AAPS J 2006;8(3):E552-E563.
doi:10.1208/aapsj080364
Friberg LE et al. J Clin Oncol 2002;20(24):4713-4721 (the progenitor pool with feedback).
Krzyzanski W, Jusko WJ. Multiple-pool cell lifespan model of hematologic effects of
anticancer agents. J Pharmacokinet Pharmacodyn 2002;29(4):311-337 (lifespan models).
Metrum Research Group, page-2018-mrgsolve ``model/epo.cpp`` (cites PMID 22162538: Yan X
et al. 2012, HX575 epoetin alfa biosimilar; mapping [U], MODELS.md 4.5).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..component import Component
from .effects import DRUG_EFFECTS, drug_effect
from .friberg import CIRC_FLOOR

__all__ = ["RedCellLifespan", "EndogenousEPO", "EpoetinErythropoiesis", "lifespan_fraction_remaining"]


def lifespan_fraction_remaining(t, lifespan, n_transit=None):
    r"""Fraction of a steady-state red-cell population left ``t`` after production stops.

    ``n_transit=None``: point lifespan, :math:`\max(0, 1 - t/TR)`; else the ``n``-compartment
    chain, :math:`\frac1n\sum_{j<n} P[\mathrm{Poisson}(nt/TR) \le j]` (module docstring).
    NumPy/SciPy, for documentation and tests.
    """
    import numpy as np
    from scipy.stats import poisson

    t = np.asarray(t, dtype=float)
    if n_transit is None:
        return np.clip(1.0 - t / lifespan, 0.0, None)
    lam = n_transit * t / lifespan
    return sum(poisson.cdf(j, lam) for j in range(n_transit)) / n_transit


class RedCellLifespan(Component):
    """Agoram 2006 red-cell model with optional chemotherapy effect and transfusions.

    Parameters
    ----------
    n_lifespan : int
        Red-cell lifespan compartments (Agoram 2006: 4).
    esa : bool
        An ESA stimulates progenitor production (input ``ESA``: concentration in the unit
        of ``S50``; parameters ``Smax``, ``S50``).
    chemo_effect : str
        ``"none"`` or a drug effect of :data:`pkpd.model.pd.effects.DRUG_EFFECTS` on a
        self-renewing progenitor pool (input ``chemo``; parameters ``gamma`` and the
        effect's, e.g. ``slope``).
    transfusion : bool
        Transfused red cells (dose targets ``TX1..TXn`` in units; parameter ``Hb_per_unit``).
    output : str
        Name of the haemoglobin signal (``"HGB"``, g/dL).
    name : str

    Parameters read from ``theta``: ``Hb0`` (g/dL), ``RBCPT`` and ``RBCLS`` (h), then
    as above. States: ``Prol`` (with a chemotherapy effect), ``PT``, ``LS1..LSn`` (relative
    to baseline), ``TX1..TXn`` (units).
    """

    n_lifespan: int = eqx.field(static=True, default=4)
    esa: bool = eqx.field(static=True, default=True)
    chemo_effect: str = eqx.field(static=True, default="none")
    transfusion: bool = eqx.field(static=True, default=False)
    output: str = eqx.field(static=True, default="HGB")
    name: str = eqx.field(static=True, default="redcells")

    def __check_init__(self):
        if isinstance(self.n_lifespan, bool) or int(self.n_lifespan) < 1:
            raise ValueError(f"Invalid `n_lifespan`: got `{self.n_lifespan}`, must be >= 1.")
        if self.chemo_effect != "none" and self.chemo_effect not in DRUG_EFFECTS:
            raise ValueError(f"Invalid `chemo_effect`: got `{self.chemo_effect}`, must be 'none' or one of "
                             f"{sorted(DRUG_EFFECTS)}.")

    @property
    def _chemo(self) -> bool:
        return self.chemo_effect != "none"

    @property
    def parameter_names(self):
        names = ["Hb0", "RBCPT", "RBCLS"]
        if self.esa:
            names += ["Smax", "S50"]
        if self._chemo:
            names += ["gamma", *DRUG_EFFECTS[self.chemo_effect]]
        if self.transfusion:
            names.append("Hb_per_unit")
        return tuple(names)

    @property
    def state_names(self):
        n = int(self.n_lifespan)
        head = ("Prol",) if self._chemo else ()
        tx = tuple(f"TX{k}" for k in range(1, n + 1)) if self.transfusion else ()
        return head + ("PT",) + tuple(f"LS{k}" for k in range(1, n + 1)) + tx

    @property
    def inputs(self):
        return (("ESA",) if self.esa else ()) + (("chemo",) if self._chemo else ())

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return tuple(f"TX{k}" for k in range(1, int(self.n_lifespan) + 1)) if self.transfusion else ()

    def initial_state(self, theta):
        n = int(self.n_lifespan)
        dtype = jnp.result_type(theta["Hb0"], float)
        ones = jnp.ones(((1 if self._chemo else 0) + 1 + n,), dtype=dtype)
        return jnp.concatenate([ones, jnp.zeros((n,), dtype=dtype)]) if self.transfusion else ones

    def _split(self, y):
        n = int(self.n_lifespan)
        k = 1 if self._chemo else 0
        prol = y[0] if self._chemo else None
        return prol, y[k], y[k + 1:k + 1 + n], (y[k + 1 + n:k + 1 + 2 * n] if self.transfusion else None)

    def _hb(self, y, theta):
        _, _, ls, tx = self._split(y)
        hb = theta["Hb0"] * (jnp.sum(ls) / ls.shape[0])
        if self.transfusion:
            hb = hb + theta["Hb_per_unit"] * jnp.sum(tx)
        return hb

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: self._hb(y, theta)}

    def vector_field(self, t, y, theta, inputs, ctx):
        n = int(self.n_lifespan)
        k_pt = 1.0 / theta["RBCPT"]
        k_ls = n / theta["RBCLS"]
        prol, pt, ls, tx = self._split(y)
        stim = 1.0
        if self.esa:
            c = jnp.maximum(inputs["ESA"], 0.0)
            stim = 1.0 + theta["Smax"] * c / (theta["S50"] + c)
        parts = []
        if self._chemo:
            hb = self._hb(y, theta)
            feedback = (theta["Hb0"] / jnp.maximum(hb, CIRC_FLOOR)) ** theta["gamma"]
            growth = (1.0 - drug_effect(self.chemo_effect, inputs["chemo"], theta)) * feedback
            parts.append((k_pt * prol * (growth - 1.0))[None])
            production = stim * prol
        else:
            production = stim * jnp.ones_like(pt)
        parts.append((k_pt * (production - pt))[None])
        upstream = jnp.concatenate([pt[None], ls[:-1]])
        parts.append(k_ls * (upstream - ls))
        if self.transfusion:
            parts.append(k_ls * (jnp.concatenate([jnp.zeros((1,), tx.dtype), tx[:-1]]) - tx))
        return jnp.concatenate(parts)


# ----------------------------------------------------------------------------- epoetin (Metrum epo.cpp)


def _receptor_bound(r_tot, c, kd):
    """Occupied receptors ``Rtot * C / (KD + C)`` (one helper, so baseline terms cancel bitwise)."""
    return r_tot * c / (kd + c)


def _stimulation(r_tot, c, theta):
    """Metrum ``SC = SMAX * RC / (SC50 + RC)`` with ``RC = Rtot * C / (KD + C)``."""
    rc = _receptor_bound(r_tot, c, theta["KD"])
    return theta["SMAX"] * rc / (theta["SC50"] + rc)


class EndogenousEPO(Component):
    r"""Serum erythropoietin: endogenous production, SC epoetin, receptor-mediated clearance.

    Metrum ``epo.cpp`` (MODELS.md 4.5, values [T], mapping [U]), amounts in IU, time in h:

    .. math::

        \frac{dA_d}{dt} &= -k_a A_d \\
        V_C \frac{dC}{dt} &= k_{EPO} + k_a A_d - CL\,C - K_{23} V_C C + K_{32} A_T
            - K_{SAI} V_C \frac{R_{tot} C}{K_D + C} \\
        \frac{dA_T}{dt} &= K_{23} V_C C - K_{32} A_T

    with the endogenous production :math:`k_{EPO} = CL\,C_0 + K_{SAI} V_C R_{tot,0}
    C_0/(K_D + C_0)` that holds the baseline :math:`C_0`, and the receptor pool
    :math:`R_{tot}` = the second precursor pool (input ``receptor``; baseline
    :math:`R_{tot,0} = RET_0`, the pool's steady state when all transit times are equal).
    States: ``depot`` (IU; the dose target of SC epoetin, bioavailability ``F<n>`` and a
    zero-order input duration ``D<n>`` from the data's CMT), ``C`` (serum IU/L) and
    ``tissue`` (relative to its baseline :math:`C_0 K_{23}/K_{32}` per V_C): written as
    differences of quantities equal at baseline, so the steady state is exact.

    Parameters ``KA`` (1/h), ``VC`` (L), ``CL`` (L/h), ``K23``, ``K32`` (1/h), ``C0`` (IU/L),
    ``KD`` (IU/L), ``KSAI`` (1/h), ``RET0`` (10^9/L). Signal ``EPO`` (IU/L = mIU/mL).
    """

    #: Data CMT of the SC doses: when > 0 the bioavailability ``F<cmt>`` and the zero-order
    #: input duration ``D<cmt>`` (data ``RATE = -2``) are parameters (Metrum ``F1``, ``D1``).
    dose_cmt: int = eqx.field(static=True, default=0)
    name: str = eqx.field(static=True, default="epo")

    @property
    def parameter_names(self):
        dose = (f"F{int(self.dose_cmt)}", f"D{int(self.dose_cmt)}") if int(self.dose_cmt) > 0 else ()
        return ("KA", "VC", "CL", "K23", "K32", "C0", "KD", "KSAI", "RET0") + dose

    @property
    def state_names(self):
        return ("depot", "C", "tissue")

    @property
    def inputs(self):
        return ("receptor",)

    @property
    def signals(self):
        return ("EPO",)

    @property
    def dose_targets(self):
        return ("depot",)

    def initial_state(self, theta):
        c0 = jnp.asarray(theta["C0"], dtype=float)
        return jnp.stack([jnp.zeros_like(c0), c0, jnp.ones_like(c0)])

    def signal(self, t, order, y, theta, inputs, ctx):
        return {"EPO": y[1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        depot, c, tissue = y[0], y[1], y[2]
        c0, vc, kd = theta["C0"], theta["VC"], theta["KD"]
        absorbed = theta["KA"] * depot
        # K32*A_T = K23*VC*C0*tissue (A_T = VC*C0*K23/K32*tissue), so the exchange is
        # K23*VC*(C0*tissue - C); receptor clearance relative to its baseline value.
        receptor = _receptor_bound(inputs["receptor"], c, kd) - _receptor_bound(theta["RET0"], c0, kd)
        d_c = (absorbed / vc + (theta["CL"] / vc) * (c0 - c) + theta["K23"] * (c0 * tissue - c)
               - theta["KSAI"] * receptor)
        d_tissue = theta["K32"] * (c / c0 - tissue)
        return jnp.stack([-absorbed, d_c, d_tissue])


class EpoetinErythropoiesis(Component):
    r"""Precursors -> reticulocytes -> red cells driven by EPO (Metrum ``epo.cpp``; MODELS.md 4.5).

    .. math::

        SC &= S_{MAX} \frac{RC}{SC_{50} + RC}, \qquad RC = R_{tot}\frac{C}{K_D + C},
            \qquad R_{tot} = P_2 \\
        \frac{dP_1}{dt} &= k_{in} - SC\,P_1/T_P, \qquad
        \frac{dP_2}{dt} = 2^5\,SC\,P_1/T_P - P_2/T_P, \qquad
        \frac{dP_3}{dt} = (P_2 - P_3)/T_P \\
        \frac{dRET}{dt} &= (P_3 - RET)/T_P, \qquad
        \frac{dRBC}{dt} = \frac{RET}{1000\,T_P} - \frac{RBC}{T_B} \\
        Hb &= MCH\,(RBC + RET/1000)/10

    (Metrum's four transit times TP1 = TP2 = TP3 = TR all equal ``TP``.) Baselines from the
    parameters: :math:`P_2 = P_3 = RET = RET_0`, :math:`RBC = RBC_0 - RET_0/1000`,
    :math:`P_1 = RET_0/(2^5 SC_0)` with :math:`SC_0 = SC(C_0, RET_0)`,
    :math:`k_{in} = RET_0/(2^5 T_P)`, red-cell lifespan
    :math:`T_B = (RBC_0 - RET_0/1000)\,1000\,T_P/RET_0`. States are relative to these
    baselines (exact steady state). Units: ``RET0`` 10^9/L, ``RBC0`` 10^12/L, ``MCH`` pg,
    ``TP`` h, ``C`` IU/L. Input ``EPO``; signals ``HGB`` (g/dL), ``RET`` (10^9/L),
    ``RBC`` (10^12/L, reticulocytes included) and ``Rtot`` (the receptor pool ``P2``).
    """

    name: str = eqx.field(static=True, default="erythroid")

    @property
    def parameter_names(self):
        return ("RET0", "TP", "SC50", "SMAX", "KD", "C0", "RBC0", "MCH")

    @property
    def state_names(self):
        return ("P1", "P2", "P3", "RET", "RBC")

    @property
    def inputs(self):
        return ("EPO",)

    @property
    def signals(self):
        return ("HGB", "RET", "RBC", "Rtot")

    def initial_state(self, theta):
        return jnp.ones((5,), dtype=jnp.result_type(theta["RET0"], float))

    def signal(self, t, order, y, theta, inputs, ctx):
        ret0 = theta["RET0"]
        ret = ret0 * y[3]
        rbc = (theta["RBC0"] - ret0 / 1000.0) * y[4] + ret / 1000.0
        return {"HGB": theta["MCH"] * rbc / 10.0, "RET": ret, "RBC": rbc, "Rtot": ret0 * y[1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        ret0, tp = theta["RET0"], theta["TP"]
        p1, p2, p3, ret, rbc = y[0], y[1], y[2], y[3], y[4]
        sc0 = _stimulation(ret0, theta["C0"], theta)
        ratio = _stimulation(ret0 * p2, jnp.maximum(inputs["EPO"], 0.0), theta) / sc0
        tb = (theta["RBC0"] - ret0 / 1000.0) * 1000.0 * tp / ret0
        flux = ratio * p1
        return jnp.stack([(sc0 / tp) * (1.0 - flux), (flux - p2) / tp, (p2 - p3) / tp, (p3 - ret) / tp,
                          (ret - rbc) / tb])
