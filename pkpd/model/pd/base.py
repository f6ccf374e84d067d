"""The single-drug pharmacodynamic-system interface (plug-in PD models), and its adapter.

A :class:`PDSystem` is an ODE in its own states driven by one drug concentration;
:class:`PDSystemComponent` makes any such system a component of a coupled model
(:mod:`pkpd.model.system`). New models with several inputs are written directly as
:class:`pkpd.model.component.Component` subclasses. We use abstract/final
:class:`equinox.Module` classes (STYLE.md habit 2) rather than bare functions because a
system carries *structure* (number of transit compartments, drug-effect form,
options) that must be static under ``jit``, while the parameters stay a plain dict
pytree ``theta`` (one subject's values) so that ``vmap`` over subjects and ``grad``
with respect to parameters need no special handling. A new lineage or growth-factor
model is one new final subclass in its own module: the solver, simulation and
inference code only use the methods below.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from ..component import Component


class PDSystem(eqx.Module):
    """Abstract PD system: states, parameters, steady state, vector field, outputs."""

    @property
    @abc.abstractmethod
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters ``theta`` must contain."""

    @property
    @abc.abstractmethod
    def state_names(self) -> tuple[str, ...]:
        """Names of the ODE states, in order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> tuple[str, ...]:
        """Observable outputs this system produces (for example ``("ANC",)``)."""

    @abc.abstractmethod
    def initial_state(self, theta: dict) -> jax.Array:
        """Steady-state initial conditions ``[n_states]`` computed from ``theta``."""

    @abc.abstractmethod
    def vector_field(self, t, y: jax.Array, theta: dict, conc, dose_input) -> jax.Array:
        """Time derivative of the states.

        Parameters
        ----------
        t : scalar
            Time (h).
        y : [n_states]
            Current states.
        theta : dict
            One subject's parameters (scalars).
        conc : scalar
            Drug concentration in the unit the drug-effect parameters expect.
        dose_input : callable
            ``dose_input(rate)`` returns ``sum_d exp(-rate * (t - t_d))`` over the doses
            given so far (for terms triggered by each administration, such as a
            co-medication given with every dose).
        """

    @abc.abstractmethod
    def observe(self, y: jax.Array, theta: dict) -> dict:
        """Map states ``[..., n_states]`` to ``{output: value}``."""

    def needs_dose_input(self) -> bool:
        """Whether :meth:`vector_field` uses ``dose_input`` (skips that work when not)."""
        return False


class PDSystemComponent(Component):
    """A :class:`PDSystem` (one drug concentration in, named outputs) as a model component.

    Input ``drug`` feeds ``conc``; the system's outputs become the component's signals;
    ``dose_input(rate)`` is computed from every dose of the model.
    """

    system: PDSystem
    name: str = eqx.field(static=True, default="pd")

    @property
    def parameter_names(self):
        return tuple(self.system.parameter_names)

    @property
    def state_names(self):
        return tuple(self.system.state_names)

    @property
    def signals(self):
        return tuple(self.system.outputs)

    @property
    def inputs(self):
        return ("drug",)

    @property
    def receives_doses(self):
        return bool(self.system.needs_dose_input())

    def initial_state(self, theta):
        return self.system.initial_state(theta)

    def setup(self, data, doses, theta):
        return None if doses is None else jnp.where(doses.start_time < jnp.inf, doses.arrival, jnp.inf)

    def signal(self, t, order, y, theta, inputs, ctx):
        return dict(self.system.observe(y, theta))

    def vector_field(self, t, y, theta, inputs, ctx):
        def dose_input(rate):
            since = t - ctx
            given = since >= 0
            return jnp.sum(jnp.where(given, jnp.exp(-rate * jnp.where(given, since, 0.0)), 0.0))

        return self.system.vector_field(t, y, theta, inputs["drug"], dose_input)
