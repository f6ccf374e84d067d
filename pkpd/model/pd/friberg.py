r"""Friberg semi-mechanistic myelosuppression model and its variants.

.. math::

    k_{tr} &= (n+1)/\mathrm{MTT}, \qquad FB = \left(\frac{Circ_0}{\max(Circ, \epsilon)}\right)^{\gamma} \\
    \frac{dProl}{dt} &= k_{prol}\,Prol\,(1 - E(C))\,FB - k_{tr}\,Prol \\
    \frac{dT_i}{dt} &= k_{tr}\,(T_{i-1} - T_i), \quad i = 1..n, \; T_0 = Prol \\
    \frac{dCirc}{dt} &= k_{tr}\,T_n - k_{circ}\,Circ

with :math:`k_{prol} = k_{tr}` and, by default, :math:`k_{circ} = k_{tr}`; at steady state
every compartment equals :math:`Circ_0` (with a separate :math:`k_{circ}`, used for
platelets, :math:`Prol = T_i = Circ_0 k_{circ}/k_{tr}`).

Options
-------
``separate_kcirc``
    circulating elimination rate ``kcirc`` (1/h) as its own parameter.
``stem_cell`` (Henrich et al. 2017)
    a self-renewing stem-cell compartment feeding the proliferating pool, which lets
    cumulative toxicity build up over cycles:
    :math:`k_{stem} = (1-f_{tr})k_{tr}`, :math:`k_{prol} = f_{tr}k_{tr}`,
    :math:`dStem/dt = k_{stem} Stem (1-E) FB - k_{stem} Stem`,
    :math:`dProl/dt = k_{prol} Prol (1-E) FB - k_{tr} Prol + k_{stem} Stem`.
``gcsf_stimulation`` (exogenous G-CSF, after Melhem et al. 2018 / Harrold et al. 2020)
    input ``occupancy`` (receptor occupancy of a G-CSF PK component) stimulates
    proliferation and speeds maturation:
    :math:`dProl/dt = k_{tr} Prol [(1-E) FB\,ST_1 - ST_2]`, transit rates
    :math:`k_{tr} ST_2`, with :math:`ST_k = 1 + STM_k \cdot occupancy`.
``dexamethasone`` (Ozawa et al. 2007)
    each dose brings a dexamethasone-induced input of neutrophils that decays with
    :math:`k_{in} = 1/\mathrm{MIT}`:
    :math:`dCirc/dt \mathrel{+}= k_{in}\,IP_0 \sum_{d} e^{-k_{in}(t - t_d)}`. Ozawa's
    single-cycle ``Input(0) = IP0`` is this term for one dose; triggering it per dose
    keeps the no-drug steady state exact.

References
----------
Friberg LE, Henningsson A, Maas H, Nguyen L, Karlsson MO. Model of chemotherapy-induced
myelosuppression with parameter consistency across drugs. J Clin Oncol
2002;20(24):4713-4721. doi:10.1200/JCO.2002.02.140

Henrich A, Joerger M, Kraff S, et al. Semimechanistic bone marrow exhaustion
pharmacokinetic/pharmacodynamic model for chemotherapy-induced cumulative
neutropenia. J Pharmacol Exp Ther 2017;362(2):347-358. doi:10.1124/jpet.117.240309

Ozawa K, Minami H, Sato H. Population pharmacokinetic and pharmacodynamic analysis for
time courses of docetaxel-induced neutropenia in Japanese cancer patients. Cancer Sci
2007;98(12):1985-1992. doi:10.1111/j.1349-7006.2007.00615.x
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..component import Component
from .effects import DRUG_EFFECTS, drug_effect

#: Floor on Circ inside the feedback term (10^9/L), keeps (Circ0/Circ)^gamma finite.
CIRC_FLOOR = 1e-6


class Friberg(Component):
    """Friberg 2002 myelosuppression model (see module docstring for the equations).

    Parameters
    ----------
    n_transit : int
        Number of transit compartments (default 3); ``MTT = (n_transit + 1) / ktr``.
    drug_effect : str
        One of :data:`pkpd.pd.effects.DRUG_EFFECTS`.
    output : str
        Name of the circulating-cell signal (``"ANC"``, ``"WBC"``, ``"PLT"``).
    separate_kcirc, stem_cell, dexamethasone : bool
        Structural options (module docstring).
    name : str
        Component name.

    Input ``drug``: the drug concentration in the unit the drug-effect parameters expect.
    """

    n_transit: int = eqx.field(static=True, default=3)
    drug_effect: str = eqx.field(static=True, default="linear")
    output: str = eqx.field(static=True, default="ANC")
    separate_kcirc: bool = eqx.field(static=True, default=False)
    stem_cell: bool = eqx.field(static=True, default=False)
    dexamethasone: bool = eqx.field(static=True, default=False)
    gcsf_stimulation: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="pd")

    def __check_init__(self):
        if int(self.n_transit) < 1:
            raise ValueError(f"Invalid `n_transit`: got `{self.n_transit}`, must be >= 1.")
        if self.drug_effect not in DRUG_EFFECTS:
            raise ValueError(
                f"Invalid `drug_effect`: got `{self.drug_effect}`, must be one of {sorted(DRUG_EFFECTS)}."
            )

    @property
    def parameter_names(self):
        names = ["Circ0", "MTT", "gamma", *DRUG_EFFECTS[self.drug_effect]]
        if self.separate_kcirc:
            names.append("kcirc")
        if self.stem_cell:
            names.append("ftr")
        if self.dexamethasone:
            names += ["IP0", "MIT"]
        if self.gcsf_stimulation:
            names += ["STM1", "STM2"]
        return tuple(names)

    @property
    def state_names(self):
        head = ("Stem",) if self.stem_cell else ()
        return head + ("Prol",) + tuple(f"Transit{i}" for i in range(1, self.n_transit + 1)) + ("Circ",)

    @property
    def signals(self):
        return (self.output,)

    @property
    def outputs(self):
        return (self.output,)

    @property
    def inputs(self):
        return ("drug", "occupancy") if self.gcsf_stimulation else ("drug",)

    @property
    def receives_doses(self):
        return self.dexamethasone

    @property
    def dose_targets(self):
        return ("Circ",)

    def _rates(self, theta):
        ktr = (self.n_transit + 1) / theta["MTT"]
        kcirc = theta["kcirc"] if self.separate_kcirc else ktr
        return ktr, kcirc

    def initial_state(self, theta):
        ktr, kcirc = self._rates(theta)
        circ0 = jnp.asarray(theta["Circ0"])
        pool = circ0 * kcirc / ktr if self.separate_kcirc else circ0
        n_pool = len(self.state_names) - 1
        return jnp.concatenate([jnp.full((n_pool,), pool), circ0[None]])

    def setup(self, data, doses, theta):
        return None if doses is None else jnp.where(doses.start_time < jnp.inf, doses.arrival, jnp.inf)

    def signal(self, t, order, y, theta, inputs, ctx):
        return {self.output: y[-1]}

    def vector_field(self, t, y, theta, inputs, ctx):
        conc = inputs["drug"]
        ktr, kcirc = self._rates(theta)
        circ = y[-1]
        feedback = (theta["Circ0"] / jnp.maximum(circ, CIRC_FLOOR)) ** theta["gamma"]
        # growth - 1 is exactly 0 with no drug at baseline; writing the rates as
        # k * x * (growth - 1) (not k*x*growth - k*x, which XLA may contract into an FMA
        # that leaves a rounding residue) keeps the steady state exact.
        growth = (1.0 - drug_effect(self.drug_effect, conc, theta)) * feedback
        offset = 1 if self.stem_cell else 0
        prol = y[offset]
        if self.gcsf_stimulation:
            # Exogenous G-CSF (receptor occupancy) stimulates proliferation (ST1) and speeds
            # maturation (ST2); both are exactly 1 without drug.
            occ = inputs["occupancy"]
            st1 = 1.0 + theta["STM1"] * occ
            st2 = 1.0 + theta["STM2"] * occ
            growth_term = growth * st1 - st2
        else:
            st2 = 1.0
            growth_term = growth - 1.0
        if self.stem_cell:
            ftr = theta["ftr"]
            stem = y[0]
            d_stem = (1.0 - ftr) * ktr * stem * (growth - 1.0)
            d_prol = ktr * (ftr * prol * growth_term + (1.0 - ftr) * (stem - prol))
            head = [d_stem[None], d_prol[None]]
        else:
            d_prol = ktr * prol * growth_term
            head = [d_prol[None]]
        chain = y[offset : offset + self.n_transit + 1]  # Prol, T1..Tn
        d_transit = ktr * st2 * (chain[:-1] - chain[1:])
        if self.separate_kcirc:
            d_circ = ktr * st2 * chain[-1] - kcirc * circ
        elif self.gcsf_stimulation:
            d_circ = ktr * (st2 * chain[-1] - circ)
        else:
            d_circ = ktr * (chain[-1] - circ)
        if self.dexamethasone:
            kin = 1.0 / theta["MIT"]
            since = t - ctx
            given = since >= 0
            per_dose = jnp.sum(jnp.where(given, jnp.exp(-kin * jnp.where(given, since, 0.0)), 0.0))
            d_circ = d_circ + kin * theta["IP0"] * per_dose
        return jnp.concatenate(head + [d_transit, d_circ[None]])

