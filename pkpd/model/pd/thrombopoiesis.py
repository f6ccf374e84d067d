r"""Thrombopoiesis: chemotherapy-induced thrombocytopenia and thrombopoietin-receptor agonists.

Two component families (MODELS.md section 3):

:class:`FribergPlatelets` (Pérez-Ruixo 2016, oxaliplatin HIPEC; MODELS.md 3.1)
    a Friberg chain for platelets with its own random destruction rate :math:`k_s`, a
    drug effect on proliferation (any form of :mod:`pkpd.model.pd.effects`, the
    published one is the power form :math:`\alpha C^\beta`) and a surgery stimulus
    that multiplies :math:`k_{prol}` and decays with half-life :math:`t_{1/2,surg}`:

    .. math::

        FB &= (PLT_0 / \max(Circ, \epsilon))^{\gamma}, \qquad
        F_{surg} = 1 + (SURG - 1)\,S \\
        \frac{dProl}{dt} &= k_{tr}\,Prol\,\left[(1 - E(C))\,FB\,F_{surg} - 1\right] \\
        \frac{dT_i}{dt} &= k_{tr}\,(T_{i-1} - T_i), \quad i = 1..n, \; T_0 = Prol \\
        \frac{dCirc}{dt} &= k_{tr}\,T_n - k_s\,Circ \\
        \frac{dS}{dt} &= -\frac{\ln 2}{t_{1/2,surg}}\,S

    (:math:`k_{prol} = k_{tr}`). Option ``stimulation`` (default ``"none"``, the published
    model) adds a second input ``stim`` (a thrombopoietin-receptor agonist's free concentration)
    with stimulation :math:`S = S_{max} C/(SC_{50} + C)` (``emax``, Wang 2010's form) or
    :math:`S = SLOP\cdot C` (``linear``), joined to the Friberg chain as Wang 2010 applies it to
    the precursor production (:math:`k_{in}(1 + S)`): the flux out of ``Prol`` into the
    maturation chain is amplified, the published feedback and self-renewal unchanged:

    .. math::

        \frac{dProl}{dt} = k_{tr}\,Prol\,[(1 - E)\,FB\,F_{surg} - 1], \qquad
        \frac{dT_1}{dt} = k_{tr}\,[(1 + S)\,Prol - T_1]

    A step in :math:`S` multiplies the flux into the chain at once by :math:`1 + S` (12.2
    saturating, as Wang's production), and the count rises after the transit delay; the
    feedback then lowers ``Prol``, so a constant :math:`S` returns the count to :math:`PLT_0`
    in the long run (``Prol`` settles at :math:`PLT_0 k_s/(k_{tr}(1 + S))`). Two alternatives
    were tried and rejected (romiplostim 3 ug/kg weekly x 4 from day 1 after oxaliplatin HIPEC,
    typical patient): multiplying the self-renewal :math:`k_{prol}` by :math:`1 + S` (as the
    surgery stimulus does) lets ``Prol`` grow at :math:`k_{tr} S` while drug is present (peak of
    order 10^4 x 10^9/L); a set-point feedback :math:`(PLT_0 (1 + S)/Circ)^\gamma` (Wang's steady
    state :math:`(1 + S) PLT_0`) still overshoots to about 2 x 10^3 x 10^9/L. The join is an
    assumption (``models/oxaliplatin_romiplostim_platelets.toml``).
    The surgery state :math:`S` is 0 at baseline and is a
    dose target: a record of amount 1 into ``Surgery`` at the time of surgery makes
    :math:`k_{prol}` jump by the factor ``SURG`` (2.09 published), which then decays
    back to 1 with half-life ``THSURG`` (8.42 d). Steady state without drug or surgery:
    :math:`Circ = PLT_0`, :math:`Prol = T_i = PLT_0 k_s / k_{tr}`. The published
    parameters are ``ktr`` and ``ks`` (1/h); this component uses them directly
    (:math:`\mathrm{MTT} = (n+1)/k_{tr}`).

:class:`PlateletLifespan` (Wang 2010 romiplostim, Farrell 2014 eltrombopag; MODELS.md 3.2, 3.4)
    a drug-stimulated production of megakaryocyte precursors, a chain of
    :math:`N_P` precursor compartments and a chain of :math:`N_L` platelet
    compartments (a transit approximation of the lifespan model); the platelet count is
    the sum of the platelet compartments:

    .. math::

        \frac{dP_1}{dt} &= k_{in}\,(1 + S(C)) - k_P\,P_1, \qquad
        \frac{dP_i}{dt} = k_P\,(P_{i-1} - P_i), \quad i = 2..N_P \\
        \frac{dL_1}{dt} &= k_P\,P_{N_P} - k_L\,L_1, \qquad
        \frac{dL_j}{dt} = k_L\,(L_{j-1} - L_j), \quad j = 2..N_L \\
        PLT &= \textstyle\sum_j L_j

    with stimulation :math:`S = S_{max} C/(SC_{50} + C)` (``emax``) or
    :math:`S = SLOP\cdot C` (``linear``). Two parameterisations:

    * ``lifespan`` (Wang 2010): ``PLT0``, ``TP`` (precursor lifespan, h), ``TPLT``
      (platelet lifespan, h); :math:`k_{in} = PLT_0/TPLT`, :math:`k_P = N_P/TP`,
      :math:`k_L = N_L/TPLT`. Steady state :math:`P_i = PLT_0\,TP/(N_P\,TPLT)`,
      :math:`L_j = PLT_0/N_L` (MODELS.md 9 case 4).
    * ``production`` (Farrell 2014): ``KIN`` (10^9/L/h), ``KT`` (1/h), ``PLT0``;
      :math:`k_{in} = KIN`, :math:`k_P = KT`, :math:`k_L = N_L\,KIN/PLT_0` (with
      :math:`N_L = 1`, Farrell's :math:`k_{deg} = KIN/PLT_0`). Steady state
      :math:`P_i = KIN/KT`, :math:`L_j = PLT_0/N_L`.

    Derivatives are written as deviations from the steady state,
    :math:`dP_1/dt = k_{in}S - k_P (P_1 - P^0)` and
    :math:`dL_1/dt = k_P (P_{N_P} - P^0) - k_L (L_1 - L^0)`, which equal the equations
    above because :math:`k_P P^0 = k_L L^0 = k_{in}` analytically, and are exactly zero
    in floating point at the steady state.

    **Transfusions.** Every platelet compartment ``L1..LNL`` is a dose target, in
    10^9/L. A transfusion into any of them raises :math:`PLT` by exactly the dose;
    the compartment decides how long the transfused platelets survive: into ``L1``
    (the youngest) they get the full mean lifespan :math:`TPLT`, into ``Lk`` the mean
    residual :math:`(N_L - k + 1)/N_L \cdot TPLT`. The shipped cards route transfusions
    to ``L1`` (simplest, and the convention of the Friberg cards, where a transfusion
    enters ``Circ``); stored donor platelets are of mixed age and survive a few days
    (not in MODELS.md, so not encoded), which an ``Lk`` further down the chain
    approximates.

References
----------
Pérez-Ruixo C, Valenzuela B, Peris JE, et al. Population pharmacokinetic-pharmacodynamic
modelling of oxaliplatin-induced thrombocytopenia in patients with peritoneal
carcinomatosis treated with HIPEC. AAPS J 2016;18(1). doi:10.1208/s12248-015-9839-0

Wang YC, Krzyzanski W, Doshi S, Xiao JJ, Pérez-Ruixo JJ, Chow AT. Pharmacodynamics-mediated
drug disposition (PDMDD) and precursor pool lifespan model for single dose of
romiplostim in healthy subjects. AAPS J 2010;12(4):729-740. doi:10.1208/s12248-010-9234-9

Farrell C, Hayes S, Wire M, Zhang J. Population pharmacokinetic/pharmacodynamic modelling
of eltrombopag in healthy volunteers and subjects with chronic liver disease. Br J Clin
Pharmacol 2014;77(5):717-728. doi:10.1111/bcp.12244
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..component import Component
from .effects import DRUG_EFFECTS, drug_effect
from .friberg import CIRC_FLOOR

__all__ = ["FribergPlatelets", "PlateletLifespan", "STIMULATIONS"]

#: Stimulation forms of :class:`PlateletLifespan` and their parameters.
STIMULATIONS = {"emax": ("Smax", "SC50"), "linear": ("SLOP",), "none": ()}


def _stimulus(kind, conc, theta):
    """TPO-receptor agonist stimulation :math:`S(C)` of the given ``kind`` (0 at ``C <= 0``)."""
    c = jnp.maximum(conc, 0.0)
    if kind == "emax":
        return theta["Smax"] * c / (theta["SC50"] + c)
    if kind == "linear":
        return theta["SLOP"] * c
    return jnp.zeros_like(c)


class FribergPlatelets(Component):
    """Friberg platelet chain with random destruction ``ks`` and a surgery stimulus
    (Pérez-Ruixo 2016; module docstring).

    Parameters
    ----------
    n_transit : int
        Transit compartments (default 3).
    drug_effect : str
        One of :data:`pkpd.model.pd.effects.DRUG_EFFECTS` (``"power"`` published).
    surgery : bool
        Include the surgery stimulus state ``Surgery`` (parameters ``SURG``, ``THSURG``).
    stimulation : {"none", "emax", "linear"}
        A TPO-receptor agonist amplifying the output of ``Prol`` by ``1 + S``
        (input ``stim``; parameters ``Smax``, ``SC50`` or ``SLOP``; module docstring);
        ``"none"`` (default) is the published model.
    output : str
        Name of the count signal (default ``"PLT"``).
    name : str

    Parameters read: ``PLT0`` (10^9/L), ``ktr``, ``ks`` (1/h), ``gamma``, the drug
    effect's, and with ``surgery`` ``SURG`` (factor on kprol at surgery) and ``THSURG``
    (h), with ``stimulation`` ``Smax, SC50`` or ``SLOP``. Input ``drug`` (and ``stim`` with
    ``stimulation``); signal ``PLT``; dose targets ``Circ`` (transfusion, 10^9/L) and
    ``Surgery`` (amount 1 at the time of surgery).
    """

    n_transit: int = eqx.field(static=True, default=3)
    drug_effect: str = eqx.field(static=True, default="power")
    surgery: bool = eqx.field(static=True, default=True)
    output: str = eqx.field(static=True, default="PLT")
    name: str = eqx.field(static=True, default="platelets")
    stimulation: str = eqx.field(static=True, default="none")

    def __check_init__(self):
        if int(self.n_transit) < 1:
            raise ValueError(f"Invalid `n_transit`: got `{self.n_transit}`, must be >= 1.")
        if self.drug_effect not in DRUG_EFFECTS:
            raise ValueError(f"Invalid `drug_effect`: got `{self.drug_effect}`, must be one of {sorted(DRUG_EFFECTS)}.")
        if self.stimulation not in STIMULATIONS:
            raise ValueError(f"Invalid `stimulation`: got `{self.stimulation}`, must be one of {sorted(STIMULATIONS)}.")

    @property
    def parameter_names(self):
        names = ("PLT0", "ktr", "ks", "gamma", *DRUG_EFFECTS[self.drug_effect])
        return names + (("SURG", "THSURG") if self.surgery else ()) + STIMULATIONS[self.stimulation]

    @property
    def state_names(self):
        chain = ("Prol",) + tuple(f"Transit{i}" for i in range(1, self.n_transit + 1)) + ("Circ",)
        return chain + (("Surgery",) if self.surgery else ())

    @property
    def inputs(self):
        return ("drug",) if self.stimulation == "none" else ("drug", "stim")

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return ("Circ", "Surgery") if self.surgery else ("Circ",)

    def stimulus(self, conc, theta):
        """:math:`S(C)` of the TPO-receptor agonist (0 without drug or without ``stimulation``)."""
        return _stimulus(self.stimulation, conc, theta)

    def _pool(self, theta):
        return jnp.asarray(theta["PLT0"], dtype=float) * theta["ks"] / theta["ktr"]

    def initial_state(self, theta):
        plt0 = jnp.asarray(theta["PLT0"], dtype=float)
        parts = [jnp.full((self.n_transit + 1,), self._pool(theta)), plt0[None]]
        if self.surgery:
            parts.append(jnp.zeros((1,), dtype=plt0.dtype))
        return jnp.concatenate(parts)

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: y[self.n_transit + 1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        ktr, ks, plt0 = theta["ktr"], theta["ks"], theta["PLT0"]
        n = self.n_transit
        chain = y[: n + 1]
        circ = y[n + 1]
        # Stimulation factor 1 + S (exactly 1 without a TPO-RA or without drug).
        amplify = 1.0 + self.stimulus(inputs["stim"], theta) if self.stimulation != "none" else 1.0
        feedback = (plt0 / jnp.maximum(circ, CIRC_FLOOR)) ** theta["gamma"]
        growth = (1.0 - drug_effect(self.drug_effect, inputs["drug"], theta)) * feedback
        if self.surgery:
            s = y[n + 2]
            growth = growth * (1.0 + (theta["SURG"] - 1.0) * s)
        d_prol = ktr * chain[0] * (growth - 1.0)
        upstream = chain[:-1].at[0].multiply(amplify) if self.stimulation != "none" else chain[:-1]
        d_transit = ktr * (upstream - chain[1:])
        # ktr*Tn - ks*Circ, written as deviations from the steady state (ktr*pool = ks*PLT0).
        d_circ = ktr * (chain[-1] - self._pool(theta)) - ks * (circ - plt0)
        parts = [d_prol[None], d_transit, d_circ[None]]
        if self.surgery:
            parts.append((-jnp.log(2.0) / theta["THSURG"] * s)[None])
        return jnp.concatenate(parts)


class PlateletLifespan(Component):
    """Stimulated precursor production with precursor and platelet lifespan chains
    (Wang 2010 romiplostim, Farrell 2014 eltrombopag; module docstring).

    Parameters
    ----------
    n_precursor, n_platelet : int
        Compartments :math:`N_P` and :math:`N_L` (Wang 2010: 10 and 10; Farrell 2014: 3 and 1).
    stimulation : {"emax", "linear", "none"}
        :math:`S_{max} C/(SC_{50}+C)` (``Smax``, ``SC50``) or :math:`SLOP\\cdot C` (``SLOP``).
    parameterization : {"lifespan", "production"}
        ``PLT0, TP, TPLT`` (Wang 2010) or ``KIN, KT, PLT0`` (Farrell 2014).
    output : str
        Name of the count signal (default ``"PLT"``).
    name : str

    Input ``drug`` (the free concentration in the unit of ``SC50``/``SLOP``); signal
    ``PLT``; dose targets ``L1..LNL`` (transfusions, 10^9/L). :meth:`rates` and
    :meth:`stimulus` give the production :math:`k_{in}(1 + S(C))`.
    """

    n_precursor: int = eqx.field(static=True, default=10)
    n_platelet: int = eqx.field(static=True, default=10)
    stimulation: str = eqx.field(static=True, default="emax")
    parameterization: str = eqx.field(static=True, default="lifespan")
    output: str = eqx.field(static=True, default="PLT")
    name: str = eqx.field(static=True, default="platelets")

    def __check_init__(self):
        if int(self.n_precursor) < 1 or int(self.n_platelet) < 1:
            raise ValueError(f"Invalid chain lengths: got n_precursor={self.n_precursor}, "
                             f"n_platelet={self.n_platelet}, both must be >= 1.")
        if self.stimulation not in STIMULATIONS:
            raise ValueError(f"Invalid `stimulation`: got `{self.stimulation}`, must be one of {sorted(STIMULATIONS)}.")
        if self.parameterization not in ("lifespan", "production"):
            raise ValueError(f"Invalid `parameterization`: got `{self.parameterization}`, "
                             "must be 'lifespan' or 'production'.")

    @property
    def parameter_names(self):
        base = ("PLT0", "TP", "TPLT") if self.parameterization == "lifespan" else ("KIN", "KT", "PLT0")
        return base + STIMULATIONS[self.stimulation]

    @property
    def state_names(self):
        return (tuple(f"P{i}" for i in range(1, self.n_precursor + 1))
                + tuple(f"L{j}" for j in range(1, self.n_platelet + 1)))

    @property
    def inputs(self):
        return ("drug",)

    @property
    def signals(self):
        return (self.output,)

    @property
    def dose_targets(self):
        return tuple(f"L{j}" for j in range(1, self.n_platelet + 1))

    def rates(self, theta):
        """``(kin, kP, kL, P0, L0)``: production, transit rates and steady-state compartments."""
        plt0 = jnp.asarray(theta["PLT0"], dtype=float)
        if self.parameterization == "lifespan":
            kin = plt0 / theta["TPLT"]
            k_p = self.n_precursor / theta["TP"]
            k_l = self.n_platelet / theta["TPLT"]
            p0 = plt0 * theta["TP"] / (self.n_precursor * theta["TPLT"])
        else:
            kin = jnp.asarray(theta["KIN"], dtype=float)
            k_p = theta["KT"]
            k_l = self.n_platelet * kin / plt0
            p0 = kin / k_p
        return kin, k_p, k_l, p0, plt0 / self.n_platelet

    def stimulus(self, conc, theta):
        """:math:`S(C)` (0 without drug)."""
        return _stimulus(self.stimulation, conc, theta)

    def initial_state(self, theta):
        _, _, _, p0, l0 = self.rates(theta)
        return jnp.concatenate([jnp.full((self.n_precursor,), p0), jnp.full((self.n_platelet,), l0)])

    def signal(self, t, order, y, theta, inputs, ctx):
        # No signal inputs: the count may feed a TMDD PK (romiplostim) without an algebraic cycle.
        return {self.output: jnp.sum(y[self.n_precursor:])}

    def vector_field(self, t, y, theta, inputs, ctx):
        kin, k_p, k_l, p0, l0 = self.rates(theta)
        p = y[: self.n_precursor]
        lc = y[self.n_precursor:]
        d_p1 = kin * self.stimulus(inputs["drug"], theta) - k_p * (p[0] - p0)
        d_p = k_p * (p[:-1] - p[1:])
        d_l1 = k_p * (p[-1] - p0) - k_l * (lc[0] - l0)
        d_l = k_l * (lc[:-1] - lc[1:])
        return jnp.concatenate([d_p1[None], d_p, d_l1[None], d_l])
