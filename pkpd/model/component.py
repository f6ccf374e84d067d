"""The component abstraction: one piece of a coupled PK/PD model.

A model is a set of components coupled into one ODE (:class:`pkpd.model.system.System`).
Each component is an abstract/final :class:`equinox.Module` (STYLE.md habit 2): its
*structure* (number of transit compartments, drug-effect form, which inputs it reads)
is static, while parameters stay a flat dict pytree ``theta`` of one subject's values,
so ``vmap`` over subjects and ``grad`` with respect to parameters need nothing special.

What a component declares
-------------------------
``parameter_names``
    the names it reads from ``theta`` (one flat namespace per model: the card keeps
    them unique, e.g. ``CL`` for docetaxel and ``CLD`` for filgrastim);
``state_names``
    its ODE states (empty for closed-form PK: nothing is integrated);
``inputs``
    named inputs it reads (``"drug"``, ``"receptor"``, ``"GCSF"``...), each bound by the
    system's couplings to another component's *signal*; ``signal_inputs`` lists those
    its algebraic :meth:`signal` needs (the rest only enter :meth:`vector_field`);
``signals``
    named algebraic quantities it produces from its states, the time and its dose
    events (a concentration, a cell count, a free drug concentration);
``dose_targets``
    names of its states that accept doses (an SC depot, a central amount, a
    circulating cell pool for transfusions); closed-form PK components instead
    receive their dose events whole (``receives_doses``) and sum them in closed form.

The system evaluates signals in dependency order, then every component's vector field
with all its inputs bound, so any coupling without an algebraic cycle is allowed:
PK -> PD (drug effect), PD -> PK (receptor-mediated clearance by a cell count),
PD -> PD (endogenous G-CSF feedback, shared progenitor pools).
"""

import abc

import equinox as eqx
import jax.numpy as jnp

__all__ = ["Component"]


class Component(eqx.Module):
    """Abstract component of a coupled model (see the module docstring)."""

    #: The component's name in the model (``"docetaxel"``, ``"neutrophils"``...).
    name: eqx.AbstractVar[str]

    @property
    @abc.abstractmethod
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters ``theta`` must contain."""

    @property
    @abc.abstractmethod
    def signals(self) -> tuple[str, ...]:
        """Names of the algebraic quantities :meth:`signal` returns."""

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the ODE states, in order (none for closed-form PK)."""
        return ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the inputs this component reads (bound by couplings)."""
        return ()

    @property
    def signal_inputs(self) -> tuple[str, ...]:
        """The inputs :meth:`signal` needs (a subset of :attr:`inputs`)."""
        return ()

    @property
    def dose_targets(self) -> tuple[str, ...]:
        """States that accept doses (bolus: a jump; infusion: a rate)."""
        return ()

    @property
    def receives_doses(self) -> bool:
        """Whether :meth:`setup` receives the component's dose events (closed-form PK)."""
        return False

    @property
    def is_pk(self) -> bool:
        """Whether this is a drug's PK (its parameters are held fixed when no concentration is fitted)."""
        return False

    @property
    def time_only(self) -> bool:
        """Whether the signals depend on time and dose events only (no states, no inputs).

        Such signals are evaluated for every stage of a fixed-grid solve in one vectorised
        call before the time loop.
        """
        return False

    def prepare(self, df, ids, n_subjects: int) -> dict:
        """Host-side padded arrays (``[S, ...]`` numpy) the component needs from the data."""
        return {}

    def setup(self, data: dict, doses, theta: dict):
        """Per-subject precomputation (JAX, under vmap); returns a pytree ``ctx``.

        ``doses`` is the component's :class:`pkpd.model.pk.closed_form.DoseInputs` when
        :attr:`receives_doses`, else None.
        """
        return None

    def jump_times(self, ctx):
        """Times ``[J]`` where the component's signals are discontinuous (``+inf`` padding)."""
        return jnp.full((1,), jnp.inf)

    def initial_state(self, theta: dict):
        """Steady-state initial conditions ``[n_states]`` (no drug)."""
        return jnp.zeros((0,))

    @abc.abstractmethod
    def signal(self, t, order, y, theta: dict, inputs: dict, ctx) -> dict:
        """Signals ``{name: scalar}`` at time ``t`` (record order ``order``, see
        :mod:`pkpd.dosing.events`) from the component's states ``y``, its
        :attr:`signal_inputs` and ``ctx``."""

    def signal_many(self, ts, orders, theta: dict, ctx) -> dict:
        """Signals ``{name: [L]}`` of a :attr:`time_only` component at many times at once.

        The default maps :meth:`signal` over the times; closed-form PK evaluates all
        times in one batched sum of exponentials.
        """
        import jax

        return jax.vmap(lambda t, o: self.signal(t, o, None, theta, {}, ctx))(ts, orders)

    def vector_field(self, t, y, theta: dict, inputs: dict, ctx):
        """Time derivative of the states ``[n_states]`` (inputs bound by the couplings)."""
        return jnp.zeros((0,), dtype=jnp.result_type(float))
