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

__all__ = ["GCSFFeedbackNeutrophils", "EndogenousGCSF"]


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
        d_circ = ktr * fb_tr * chain[-1] - theta["kcirc"] * y[-1]
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
