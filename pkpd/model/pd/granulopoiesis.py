r"""Granulopoiesis with G-CSF: endogenous G-CSF feedback (Quartino 2014).

Neutrophil chain with G-CSF feedback on proliferation and maturation
(:class:`GCSFFeedbackNeutrophils`) coupled to endogenous G-CSF cleared by neutrophils
(:class:`EndogenousGCSF`): two components joined by a PD -> PD coupling each way
(``neutrophils.GCSF <- gcsf.GCSF``, ``gcsf.ANC <- neutrophils.ANC``).

.. math::

    k_{tr} &= (n+1)/\mathrm{MTT}, \quad FB_{prol} = (G/G_0)^{\gamma}, \quad FB_{tr} = (G/G_0)^{\beta} \\
    \frac{dProl}{dt} &= k_{tr}\,Prol\,\left[(1 - E(C))\,FB_{prol} - FB_{tr}\right] \\
    \frac{dT_i}{dt} &= k_{tr}\,FB_{tr}\,(T_{i-1} - T_i), \quad i = 1..n, \; T_0 = Prol \\
    \frac{dCirc}{dt} &= k_{tr}\,FB_{tr}\,T_n - k_{circ}\,Circ \\
    \frac{dG}{dt} &= k_{in} - (k_e + k_{ANC}\,Circ)\,G, \qquad k_{in} = (k_e + k_{ANC}\,Circ_0)\,G_0

Steady state without drug: :math:`Circ = Circ_0`, :math:`G = G_0`,
:math:`Prol = T_i = k_{circ} Circ_0 / k_{tr}`; the rates are written so that every
derivative is exactly zero there (differences of equal quantities, no contracted
products). The G-CSF production :math:`k_{in}` is derived from the steady state, so
:math:`G_0` (baseline G-CSF, in the unit of the ``GCSF`` output), :math:`k_e`
(non-neutrophil elimination, 1/h) and :math:`k_{ANC}` (elimination per unit
neutrophil count, 1/h per 10^9/L) are the parameters.

The system is stiff: with the published values the baseline G-CSF elimination rate is
:math:`k_e + k_{ANC} Circ_0 \approx 20.5` 1/h (half-life about 2 minutes, MODELS.md 2.1), so
use an implicit solver (``SolverOptions(solver="kvaerno5")``); explicit Tsit5 works but
needs about 10^4 steps over 60 days.

Exogenous G-CSF (filgrastim, pegfilgrastim; MODELS.md 2.2-2.5): the drug's PK is a
:class:`~pkpd.model.pk.compartmental.CompartmentalPK` with quasi-equilibrium receptor
binding (``tmdd_qe``) on a receptor pool proportional to a neutrophil count, and the cells
are :class:`MelhemGranulopoiesis` (Melhem 2018 / Harrold 2020: production ``KP ST1``,
maturation ``KTR ST2``), :class:`KrzyzanskiGranulopoiesis` (Krzyzanski 2010 as encoded by
Metrum) or :class:`FribergGCSF` (Friberg/Kloft chemotherapy model joined with Melhem's
bounded stimulation). :class:`ObservedGCSF` gives the observed serum G-CSF (free drug +
endogenous baseline ``BSLD``).

References
----------
Quartino AL, Karlsson MO, Lindman H, Friberg LE. Characterization of endogenous G-CSF
and the inverse correlation to chemotherapy-induced neutropenia in patients with
breast cancer using population modeling. Pharm Res 2014;31:3390-3403.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..component import Component
from .effects import DRUG_EFFECTS, drug_effect
from .friberg import CIRC_FLOOR

__all__ = ["GCSFFeedbackNeutrophils", "EndogenousGCSF", "MelhemGranulopoiesis", "FribergGCSF",
           "KrzyzanskiGranulopoiesis", "ObservedGCSF"]


class GCSFFeedbackNeutrophils(Component):
    """Neutrophil chain with G-CSF feedback (Quartino 2014; module docstring).

    Parameters: ``Circ0``, ``MTT``, ``gamma`` (proliferation), ``beta`` (maturation),
    ``kcirc`` (1/h; Quartino fixes the blood half-life at 7 h), ``G0`` and the drug
    effect's. Inputs ``drug`` (concentration) and ``GCSF``; signal ``ANC`` (or
    ``output``).
    """

    n_transit: int = eqx.field(static=True, default=4)
    drug_effect: str = eqx.field(static=True, default="linear")
    output: str = eqx.field(static=True, default="ANC")
    name: str = eqx.field(static=True, default="neutrophils")

    def __check_init__(self):
        if int(self.n_transit) < 1:
            raise ValueError(f"Invalid `n_transit`: got `{self.n_transit}`, must be >= 1.")
        if self.drug_effect not in DRUG_EFFECTS:
            raise ValueError(f"Invalid `drug_effect`: got `{self.drug_effect}`, must be one of {sorted(DRUG_EFFECTS)}.")

    @property
    def parameter_names(self):
        return ("Circ0", "MTT", "gamma", "beta", "kcirc", "G0", *DRUG_EFFECTS[self.drug_effect])

    @property
    def state_names(self):
        return ("Prol",) + tuple(f"Transit{i}" for i in range(1, self.n_transit + 1)) + ("Circ",)

    @property
    def inputs(self):
        return ("drug", "GCSF")

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return ("Circ",)

    def initial_state(self, theta):
        ktr = (self.n_transit + 1) / theta["MTT"]
        circ0 = jnp.asarray(theta["Circ0"], dtype=float)
        pool = theta["kcirc"] * circ0 / ktr
        return jnp.concatenate([jnp.full((self.n_transit + 1,), pool), circ0[None]])

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: y[-1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        ktr = (self.n_transit + 1) / theta["MTT"]
        ratio = jnp.maximum(inputs["GCSF"], CIRC_FLOOR) / theta["G0"]
        fb_prol = ratio ** theta["gamma"]
        fb_tr = ratio ** theta["beta"]
        kill = drug_effect(self.drug_effect, inputs["drug"], theta)
        chain = y[:-1]
        d_prol = ktr * chain[0] * ((1.0 - kill) * fb_prol - fb_tr)
        d_transit = ktr * fb_tr * (chain[:-1] - chain[1:])
        # ktr fb T_n - kcirc Circ, written with pool0 = kcirc Circ0 / ktr (the initial state) as a sum of
        # differences that are exactly zero at rest (ktr * pool0 need not round to kcirc * Circ0)
        pool0 = theta["kcirc"] * theta["Circ0"] / ktr
        d_circ = ktr * fb_tr * (chain[-1] - pool0) + theta["kcirc"] * (fb_tr * theta["Circ0"] - y[-1])
        return jnp.concatenate([d_prol[None], d_transit, d_circ[None]])


class EndogenousGCSF(Component):
    """Endogenous G-CSF cleared by neutrophils (Quartino 2014; module docstring).

    Parameters ``G0``, ``ke``, ``kANC`` and the neutrophil baseline ``Circ0``; input
    ``ANC``; signal ``GCSF``; state ``G`` (also a dose target, for exogenous G-CSF
    given in the same unit).
    """

    name: str = eqx.field(static=True, default="gcsf")

    @property
    def parameter_names(self):
        return ("G0", "ke", "kANC", "Circ0")

    @property
    def state_names(self):
        return ("G",)

    @property
    def inputs(self):
        return ("ANC",)

    @property
    def signals(self):
        return ("GCSF",)

    @property
    def dose_targets(self):
        return ("G",)

    def initial_state(self, theta):
        return jnp.asarray(theta["G0"], dtype=float)[None]

    def signal(self, t, order, y, theta, inputs, ctx):
        return {"GCSF": y[0]}

    def vector_field(self, t, y, theta, inputs, ctx):
        g, g0, circ0 = y[0], theta["G0"], theta["Circ0"]
        anc = inputs["ANC"]
        # k_in - (ke + kANC*ANC)*G with k_in = (ke + kANC*Circ0)*G0, regrouped so that both
        # brackets are exactly zero at the steady state.
        d_g = theta["ke"] * (g0 - g) + theta["kANC"] * (circ0 * (g0 - g) + g * (circ0 - anc))
        return d_g[None]


# ---------------------------------------------------------------------------- exogenous G-CSF
# The components below take a G-CSF drug's receptor occupancy (bound fraction of the receptor
# pool: signal ``occupancy`` of a CompartmentalPK with binding = "tmdd_qe") or its free
# concentration as inputs. The PK component holds the drug, its receptor-mediated
# (internalisation) clearance by the cell count it is coupled to and the quasi-equilibrium
# binding; these components hold the cells.


def _combined_occupancy(inputs, n):
    """Occupancy of one or several G-CSF drugs: :math:`1 - \\prod_k (1 - occ_k)` (exact for one drug)."""
    occ = inputs["occupancy"]
    for k in range(2, n + 1):
        other = inputs[f"occupancy{k}"]
        occ = occ + other - occ * other
    return occ


def _occupancy_names(n):
    return ("occupancy",) + tuple(f"occupancy{k}" for k in range(2, n + 1))


class MelhemGranulopoiesis(Component):
    r"""Filgrastim granulopoiesis of Melhem et al. 2018 (as used by Harrold et al. 2020).

    Five pools in receptor-concentration units (nM): stem/mitotic ``SM``, ``MT``,
    precursors ``PM1``, ``PM2`` and blood neutrophils ``RB``:

    .. math::

        ST_1 &= 1 + STM_1\,\frac{rdc}{trc}, \qquad ST_2 = 1 + STM_2\,\frac{rdc}{trc} \\
        \frac{dSM}{dt} &= K_P\,ST_1 - K_{TR}\,ST_2\,SM \\
        \frac{dMT}{dt} &= K_{TR}\,ST_2\,(SM - MT), \quad
        \frac{dPM_1}{dt} = K_{TR}\,ST_2\,(MT - PM_1), \quad
        \frac{dPM_2}{dt} = K_{TR}\,ST_2\,(PM_1 - PM_2) \\
        \frac{dRB}{dt} &= K_{TR}\,ST_2\,PM_2 - K_C\,RB \\
        ANC &= 1000\,RB/SR \ \text{cells/uL} = RB/SR \ \times 10^9/\mathrm{L}

    with :math:`rdc/trc` the bound fraction of the receptor pool :math:`trc = RB`
    (input ``occupancy``; at quasi-equilibrium :math:`rdc/trc = fdc/(K_D + fdc)`).
    The receptor pool of the PK component is :math:`\xi \cdot ANC` with
    :math:`\xi = SR`, i.e. exactly :math:`RB`. The signal ``ANC`` is in 10^9/L (the
    pkpd ANC unit: Melhem's cells/uL divided by 1000). Initial state (no drug):
    :math:`SM = MT = PM_1 = PM_2 = K_P/K_{TR}`, :math:`RB = K_P/K_C`; the rates are
    written as :math:`K_{TR}(SM_0 ST_1 - ST_2 SM)` and
    :math:`K_C(RB_0 ST_2 PM_2/PM_{2,0} - RB)` so that every derivative is exactly zero
    there. Melhem's endogenous G-CSF (BSLD) only adds to the observed concentration
    (:class:`ObservedGCSF`); it does not drive the cells.

    Parameters ``KP`` (nM/h), ``KTR`` (1/h), ``KC`` (1/h), ``SR`` (nM per 10^9/L),
    ``STM1``, ``STM2``. Option ``n_gcsf``: number of G-CSF drugs (inputs
    ``occupancy``, ``occupancy2``...; combined as :math:`1 - \prod(1 - occ_k)`, which
    ignores competition for the receptor and is exact when one drug is given).

    References
    ----------
    Melhem M, Delor I, Perez-Ruixo JJ, et al. Pharmacokinetic-pharmacodynamic modelling of
    neutrophil response to G-CSF in healthy subjects and patients with chemotherapy-induced
    neutropenia. Br J Clin Pharmacol 2018;84:911-925. doi:10.1111/bcp.13504
    Harrold JM, Olsson Gisleskog P, Perez-Ruixo JJ, et al. Prediction of survival benefit of
    filgrastim in adult and pediatric patients with acute radiation syndrome. Clin Transl Sci
    2020;13(4):807-817 (Table 2; supplement Table S2). doi:10.1111/cts.12777
    """

    n_gcsf: int = eqx.field(static=True, default=1)
    output: str = eqx.field(static=True, default="ANC")
    name: str = eqx.field(static=True, default="neutrophils")

    def __check_init__(self):
        if int(self.n_gcsf) < 1:
            raise ValueError(f"Invalid `n_gcsf`: got `{self.n_gcsf}`, must be >= 1.")

    @property
    def parameter_names(self):
        return ("KP", "KTR", "KC", "SR", "STM1", "STM2")

    @property
    def state_names(self):
        return ("SM", "MT", "PM1", "PM2", "RB")

    @property
    def inputs(self):
        return _occupancy_names(int(self.n_gcsf))

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return ("RB",)

    def _baseline(self, theta):
        kp = jnp.asarray(theta["KP"], dtype=float)
        return kp / theta["KTR"], kp / theta["KC"]

    def initial_state(self, theta):
        pool, rb0 = self._baseline(theta)
        return jnp.stack([pool, pool, pool, pool, rb0])

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: y[4] / theta["SR"]}

    def vector_field(self, t, y, theta, inputs, ctx):
        occ = _combined_occupancy(inputs, int(self.n_gcsf))
        st1 = 1.0 + theta["STM1"] * occ
        st2 = 1.0 + theta["STM2"] * occ
        ktr = theta["KTR"]
        pool0, rb0 = self._baseline(theta)
        sm, mt, pm1, pm2, rb = y[0], y[1], y[2], y[3], y[4]
        d_sm = ktr * (pool0 * st1 - st2 * sm)
        d_mt = ktr * st2 * (sm - mt)
        d_pm1 = ktr * st2 * (mt - pm1)
        d_pm2 = ktr * st2 * (pm1 - pm2)
        d_rb = theta["KC"] * (rb0 * st2 * (pm2 / pool0) - rb)
        return jnp.stack([d_sm, d_mt, d_pm1, d_pm2, d_rb])


class FribergGCSF(Component):
    r"""Friberg chemotherapy myelosuppression joined with Melhem's bounded G-CSF stimulation.

    The chain of :class:`pkpd.model.pd.friberg.Friberg` (self-renewing ``Prol`` with a
    feedback, drug kill :math:`E(C)` on ``Prol``, ``n`` transits, ``Circ``), with
    exogenous G-CSF acting as in Melhem 2018:

    .. math::

        ST_1 &= 1 + STM_1\,occ, \qquad ST_2 = 1 + STM_2\,occ, \qquad k_{tr} = (n+1)/\mathrm{MTT} \\
        FB &= \left(\frac{Circ_0\,ST_1}{Circ}\right)^{\gamma} \ \text{(``feedback = "setpoint"``)}
        \quad\text{or}\quad \left(\frac{Circ_0}{Circ}\right)^{\gamma} \ \text{(``"count"``)} \\
        \frac{dProl}{dt} &= k_{tr}\,Prol\,[(1 - E(C))\,FB - 1] \\
        \frac{dT_1}{dt} &= k_{tr}\,(ST_1\,Prol - ST_2\,T_1) \\
        \frac{dT_i}{dt} &= k_{tr}\,ST_2\,(T_{i-1} - T_i), \quad i = 2..n \\
        \frac{dCirc}{dt} &= k_{tr}\,(ST_2\,T_n - Circ)

    G-CSF multiplies the *output* of the proliferating pool by :math:`ST_1` (extra
    amplifying divisions: Melhem's production :math:`K_P ST_1`) and speeds maturation
    and release by :math:`ST_2`; it does not stimulate the self-renewal of ``Prol``
    directly. Under a constant occupancy the circulating count settles at
    :math:`ST_1\,Circ_0` (Melhem's steady state :math:`RB = K_P ST_1/K_C`), so the
    response is bounded by :math:`1 + STM_1`. Stimulating the self-renewal instead
    (:math:`k_{prol}\,ST_1`, the ``gcsf_stimulation`` option of
    :class:`~pkpd.model.pd.friberg.Friberg`) makes the count grow without bound under
    repeated filgrastim.

    The feedback compares the count with the set point :math:`Circ_0 ST_1` that the
    current stimulation implies (default ``"setpoint"``). With the plain Friberg
    feedback (``"count"``) a filgrastim-raised count shuts down ``Prol`` renewal: ten
    daily doses without chemotherapy then leave a rebound neutropenia (about 23% of
    baseline a week after the last dose with the Kloft/Melhem values), which healthy
    volunteers do not show. Without G-CSF both are Friberg's feedback. Without drug
    every derivative is exactly zero at :math:`Prol = T_i = Circ = Circ_0`.

    Parameters ``Circ0``, ``MTT``, ``gamma``, the drug effect's, ``STM1``, ``STM2``.
    Inputs ``drug`` and ``occupancy`` (``occupancy2``... with ``n_gcsf > 1``, combined
    as :math:`1 - \prod(1 - occ_k)`).

    References
    ----------
    Friberg LE et al. J Clin Oncol 2002;20(24):4713-4721. Kloft C et al. Clin Cancer Res
    2006;12(18):5481-5490. Melhem M et al. Br J Clin Pharmacol 2018;84:911-925.
    """

    n_transit: int = eqx.field(static=True, default=3)
    drug_effect: str = eqx.field(static=True, default="linear")
    n_gcsf: int = eqx.field(static=True, default=1)
    feedback: str = eqx.field(static=True, default="setpoint")
    output: str = eqx.field(static=True, default="ANC")
    name: str = eqx.field(static=True, default="neutrophils")

    def __check_init__(self):
        if self.feedback not in ("setpoint", "count"):
            raise ValueError(f"Invalid `feedback`: got `{self.feedback}`, must be 'setpoint' or 'count'.")
        if int(self.n_transit) < 1:
            raise ValueError(f"Invalid `n_transit`: got `{self.n_transit}`, must be >= 1.")
        if int(self.n_gcsf) < 1:
            raise ValueError(f"Invalid `n_gcsf`: got `{self.n_gcsf}`, must be >= 1.")
        if self.drug_effect not in DRUG_EFFECTS:
            raise ValueError(f"Invalid `drug_effect`: got `{self.drug_effect}`, must be one of {sorted(DRUG_EFFECTS)}.")

    @property
    def parameter_names(self):
        return ("Circ0", "MTT", "gamma", *DRUG_EFFECTS[self.drug_effect], "STM1", "STM2")

    @property
    def state_names(self):
        return ("Prol",) + tuple(f"Transit{i}" for i in range(1, self.n_transit + 1)) + ("Circ",)

    @property
    def inputs(self):
        return ("drug",) + _occupancy_names(int(self.n_gcsf))

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return ("Circ",)

    def initial_state(self, theta):
        circ0 = jnp.asarray(theta["Circ0"], dtype=float)
        return jnp.full((self.n_transit + 2,), circ0)

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: y[-1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        ktr = (self.n_transit + 1) / theta["MTT"]
        occ = _combined_occupancy(inputs, int(self.n_gcsf))
        st1 = 1.0 + theta["STM1"] * occ
        st2 = 1.0 + theta["STM2"] * occ
        circ = y[-1]
        setpoint = theta["Circ0"] * st1 if self.feedback == "setpoint" else theta["Circ0"]
        feedback = (setpoint / jnp.maximum(circ, CIRC_FLOOR)) ** theta["gamma"]
        growth = (1.0 - drug_effect(self.drug_effect, inputs["drug"], theta)) * feedback
        prol = y[0]
        d_prol = ktr * prol * (growth - 1.0)
        d_t1 = ktr * (st1 * prol - st2 * y[1])
        chain = y[1 : self.n_transit + 1]  # T1..Tn
        d_rest = ktr * st2 * (chain[:-1] - chain[1:])
        d_circ = ktr * (st2 * chain[-1] - circ)
        return jnp.concatenate([d_prol[None], d_t1[None], d_rest, d_circ[None]])


class KrzyzanskiGranulopoiesis(Component):
    r"""Filgrastim bone-marrow chain of Krzyzanski et al. 2010 (as encoded by Metrum, [U] mapping).

    Nine marrow stages ``B1..B9`` and blood neutrophils ``NB`` (10^9/L), stimulated by the
    free filgrastim concentration :math:`C` (input ``conc``, ng/mL):

    .. math::

        H_k &= 1 + SM_k\,\frac{C}{SC_1 + C}, \quad k = 1, 2 \\
        \frac{dB_1}{dt} &= K_{TT}\,B_1\,(H_1 - H_2) \\
        \frac{dB_i}{dt} &= K_{TT}\,H_2\,(B_{i-1} - B_i), \quad i = 2..9 \\
        \frac{dNB}{dt} &= K_{TT}\,H_2\,B_9 - K_{MT}\,NB

    which is the Metrum ``gcsf.cpp`` encoding (MODELS.md 2.2) with
    :math:`K_{INB} = K_{TT} B_{1,0}` substituted and the terms of :math:`K_{BB1} = 0` and
    :math:`SM_3 = 0` dropped. Steady state: :math:`B_i = NB_0 K_{MT}/K_{TT}`,
    :math:`NB = NB_0`; :math:`dNB/dt` is written :math:`K_{MT}(NB_0 H_2 B_9/B_0 - NB)`.
    Signals ``ANC`` (= NB) and ``NT`` (marrow + blood neutrophils, the receptor pool of the
    PK: :math:`R_{tot} = KSI \cdot NT`).

    References
    ----------
    Krzyzanski W, Wiczling P, Lowe P, et al. Population modeling of filgrastim PK-PD in
    healthy adults following intravenous and subcutaneous administrations. J Clin Pharmacol
    2010;50(9 Suppl):101S-112S. doi:10.1177/0091270010376966
    """

    n_stages: int = eqx.field(static=True, default=9)
    name: str = eqx.field(static=True, default="neutrophils")

    @property
    def parameter_names(self):
        return ("NB0", "KTT", "KMT", "SM1", "SM2", "SC1")

    @property
    def state_names(self):
        return tuple(f"B{i}" for i in range(1, self.n_stages + 1)) + ("NB",)

    @property
    def inputs(self):
        return ("conc",)

    @property
    def signals(self):
        return ("ANC", "NT")

    def _b0(self, theta):
        return jnp.asarray(theta["NB0"], dtype=float) * theta["KMT"] / theta["KTT"]

    def initial_state(self, theta):
        b0 = self._b0(theta)
        return jnp.concatenate([jnp.full((self.n_stages,), b0), jnp.asarray(theta["NB0"], dtype=float)[None]])

    def signal(self, t, order, y, theta, inputs, ctx):
        return {"ANC": y[-1], "NT": jnp.sum(y)}

    def vector_field(self, t, y, theta, inputs, ctx):
        c = jnp.maximum(inputs["conc"], 0.0)
        frac = c / (theta["SC1"] + c)
        h1 = 1.0 + theta["SM1"] * frac
        h2 = 1.0 + theta["SM2"] * frac
        ktt = theta["KTT"]
        b = y[:-1]
        d_b1 = ktt * b[0] * (h1 - h2)
        d_b = ktt * h2 * (b[:-1] - b[1:])
        d_nb = theta["KMT"] * (theta["NB0"] * h2 * (b[-1] / self._b0(theta)) - y[-1])
        return jnp.concatenate([d_b1[None], d_b, d_nb[None]])


class ObservedGCSF(Component):
    r"""Observed serum G-CSF: free exogenous G-CSF plus the endogenous baseline.

    :math:`GCSF = \sum_k C_{free,k} + BSLD` (Melhem 2018: ``Cobs = fdc + BSLD``), a
    stateless component. Inputs ``conc`` (``conc2``... with ``n_drugs > 1``), coupled to
    the free concentration of each G-CSF drug *in the unit of BSLD* (a coupling ``unit``
    converts it, e.g. nM -> ng/mL with the drug's molar mass); parameter ``BSLD``.
    """

    n_drugs: int = eqx.field(static=True, default=1)
    name: str = eqx.field(static=True, default="gcsf")

    def __check_init__(self):
        if int(self.n_drugs) < 1:
            raise ValueError(f"Invalid `n_drugs`: got `{self.n_drugs}`, must be >= 1.")

    @property
    def parameter_names(self):
        return ("BSLD",)

    @property
    def inputs(self):
        return ("conc",) + tuple(f"conc{k}" for k in range(2, int(self.n_drugs) + 1))

    @property
    def signal_inputs(self):
        return self.inputs

    @property
    def signals(self):
        return ("GCSF",)

    def signal(self, t, order, y, theta, inputs, ctx):
        total = theta["BSLD"] + jnp.maximum(inputs["conc"], 0.0)
        for k in range(2, int(self.n_drugs) + 1):
            total = total + jnp.maximum(inputs[f"conc{k}"], 0.0)
        return {"GCSF": total}
