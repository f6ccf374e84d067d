"""A component whose parameters go by other names in the model.

A model has one flat parameter namespace (:mod:`pkpd.model.component`). Two components of
the same family in one model (a Friberg chain for the neutrophils and another for the
platelets, each with ``MTT``, ``gamma`` and ``slope``) would claim the same names; a card
gives one of them new names with ``rename = { MTT = "MTT_PLT", gamma = "gamma_PLT" }``
(component name -> model name), and :class:`Renamed` wraps the component so that it
declares the model names and reads its own names from them. Nothing else changes: the
wrapped component's states, signals, inputs and dose targets are its own.
"""

from types import MappingProxyType

import equinox as eqx

from .component import Component

__all__ = ["Renamed"]


class Renamed(Component):
    """``component`` with its parameters ``rename``d (pairs ``(own name, model name)``)."""

    component: Component
    rename: tuple = eqx.field(static=True)

    def __check_init__(self):
        own = set(self.component.parameter_names)
        unknown = sorted(k for k, _ in self.rename if k not in own)
        if unknown:
            raise ValueError(f"rename: {unknown} are not parameters of {type(self.component).__name__} "
                             f"(its parameters: {sorted(own)})")
        targets = [v for _, v in self.rename]
        clash = sorted(set(targets) & (own - {k for k, _ in self.rename})) or sorted(
            {v for v in targets if targets.count(v) > 1})
        if clash:
            raise ValueError(f"rename: {clash} would name two parameters alike")

    # --- the model's view: renamed parameters, everything else delegated ---
    @property
    def name(self):
        return self.component.name

    @property
    def parameter_names(self):
        mapping = dict(self.rename)
        return tuple(mapping.get(p, p) for p in self.component.parameter_names)

    @property
    def baseline_parameters(self):
        """The wrapped component's lineage -> baseline-parameter mapping (if any), renamed."""
        table = getattr(self.component, "baseline_parameters", None)
        if table is None:
            table = getattr(getattr(self.component, "system", None), "baseline_parameters", None)
        if table is None:
            return None
        mapping = dict(self.rename)
        return MappingProxyType({k: (mapping.get(v, v) if v is not None else None) for k, v in table.items()})

    def _own(self, theta):
        """``theta`` with the wrapped component's own names bound to the model's values."""
        return {**theta, **{own: theta[new] for own, new in self.rename}}

    @property
    def signals(self):
        return self.component.signals

    @property
    def state_names(self):
        return self.component.state_names

    @property
    def inputs(self):
        return self.component.inputs

    @property
    def signal_inputs(self):
        return self.component.signal_inputs

    @property
    def dose_targets(self):
        return self.component.dose_targets

    @property
    def receives_doses(self):
        return self.component.receives_doses

    @property
    def is_pk(self):
        return self.component.is_pk

    @property
    def time_only(self):
        return self.component.time_only

    def prepare(self, df, ids, n_subjects):
        return self.component.prepare(df, ids, n_subjects)

    def setup(self, data, doses, theta):
        return self.component.setup(data, doses, self._own(theta))

    def jump_times(self, ctx):
        return self.component.jump_times(ctx)

    def initial_state(self, theta):
        return self.component.initial_state(self._own(theta))

    def signal(self, t, order, y, theta, inputs, ctx):
        return self.component.signal(t, order, y, self._own(theta), inputs, ctx)

    def signal_many(self, ts, orders, theta, ctx):
        return self.component.signal_many(ts, orders, self._own(theta), ctx)

    def vector_field(self, t, y, theta, inputs, ctx):
        return self.component.vector_field(t, y, self._own(theta), inputs, ctx)
