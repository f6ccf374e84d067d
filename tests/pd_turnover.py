"""A PD system that is not part of pkpd, used to show that a new system is one module + one card.

Indirect-response (turnover) model with inhibition of production:
``dR/dt = kin * (1 - Imax*C/(IC50 + C)) - kout * R``, ``kin = BASE * kout``, ``R(0) = BASE``.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from pkpd.model.pd.base import PDSystem


class Turnover(PDSystem):
    output: str = eqx.field(static=True, default="PLT")

    @property
    def parameter_names(self):
        return ("BASE", "KOUT", "Imax", "IC50")

    @property
    def state_names(self):
        return ("R",)

    @property
    def outputs(self):
        return (self.output,)

    def initial_state(self, theta):
        return jnp.asarray(theta["BASE"])[None]

    def vector_field(self, t, y, theta, conc, dose_input):
        c = jnp.maximum(conc, 0.0)
        inhibition = theta["Imax"] * c / (theta["IC50"] + c)
        return theta["KOUT"] * (theta["BASE"] * (1.0 - inhibition) - y)

    def observe(self, y, theta):
        return {self.output: y[..., 0]}
