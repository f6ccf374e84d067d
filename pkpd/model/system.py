r"""A coupled model: components, couplings, dose routes and outputs in one ODE.

:class:`System` is the compiled part of every model (an equinox pytree: structure
static, unit scales as array leaves, so models that differ only in units share
compiled code). It owns

* the **components** (:class:`pkpd.model.component.Component`): PK per drug (closed
  form or ODE), PD per lineage or mediator;
* the **couplings**: each component input is bound to another component's signal,
  times a unit scale (``neutrophils.drug <- docetaxel.conc x 1000/808``,
  ``filgrastim.receptor <- neutrophils.circ``, ``neutrophils.GCSF <- gcsf.G``);
* the **dose routes**: a data ``CMT`` -> a component's dose target (a closed-form
  PK compartment, an ODE state such as an SC depot, or a circulating cell pool for a
  transfusion), times an amount scale (data unit -> model unit);
* the **outputs**: a name (``ANC``, ``PLT``, ``HGB``, ``GCSF``, ``CONC``,
  ``CONC:<drug>``) -> a component signal, times a unit scale.

The state is a pytree ``{component: [n_states]}`` (flattened in component order for
the integrator). At time :math:`t` the signals are evaluated in dependency order
(each component's :meth:`~pkpd.model.component.Component.signal` may read signals
produced before it; an algebraic cycle is an error at construction), then every
component's vector field with its inputs bound, plus the zero-order infusion rates
of doses routed to ODE states. Bolus doses routed to ODE states are *state jumps*,
applied between integration segments by :mod:`pkpd.solve.solver`.

Dose quantities follow NONMEM and are named by the data's ``CMT``: ``F<n>``
(bioavailability), ``ALAG<n>`` (lag), ``R<n>`` / ``D<n>`` (modelled rate /
duration, ``RATE = -1 / -2``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ModelError
from .component import Component
from .pk.closed_form import BOLUS, INFUSION, _dose_quantity, resolve_doses

__all__ = ["System", "Route"]

_DOSE_DEFAULTS = {"F": 1.0, "ALAG": 0.0, "R": 0.0, "D": 0.0}


def _as_array(x):
    return np.asarray(x, dtype=np.float64)


class Route(eqx.Module):
    """A dose route: data ``cmt`` -> ``component``'s dose ``target`` (static)."""

    cmt: int = eqx.field(static=True)
    component: str = eqx.field(static=True)
    target: str = eqx.field(static=True)


class System(eqx.Module):
    """Components coupled into one ODE (see the module docstring).

    Parameters
    ----------
    components : tuple of Component
    links : tuple of (component, input, source_component, source_signal)
        Couplings; every input of every component must be bound exactly once.
    link_scale : array [n_links]
        Unit factor applied to each coupled signal.
    outputs : tuple of (output, component, signal)
    output_scale : array [n_outputs]
        Factor from the signal's unit to the output's canonical unit.
    routes : tuple of Route
    route_scale : array [n_routes]
        Factor from the data's dose amount (canonical unit) to the model's.
    """

    components: tuple
    links: tuple = eqx.field(static=True, default=())
    link_scale: np.ndarray = eqx.field(converter=_as_array, default=())
    outputs: tuple = eqx.field(static=True, default=())
    output_scale: np.ndarray = eqx.field(converter=_as_array, default=())
    routes: tuple = eqx.field(static=True, default=())
    route_scale: np.ndarray = eqx.field(converter=_as_array, default=())

    def __check_init__(self):
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ModelError(f"component names must be unique, got {names}")
        by_name = dict(zip(names, self.components))
        bound = {}
        for comp, inp, src, sig in self.links:
            if comp not in by_name or inp not in by_name[comp].inputs:
                raise ModelError(f"coupling {comp}.{inp}: no such component input "
                                 f"(inputs: {[f'{c.name}.{i}' for c in self.components for i in c.inputs]})")
            if src not in by_name or sig not in by_name[src].signals:
                raise ModelError(f"coupling {comp}.{inp} <- {src}.{sig}: no such signal "
                                 f"(signals: {[f'{c.name}.{s}' for c in self.components for s in c.signals]})")
            if (comp, inp) in bound:
                raise ModelError(f"input {comp}.{inp} is coupled twice")
            bound[(comp, inp)] = (src, sig)
        missing = [f"{c.name}.{i}" for c in self.components for i in c.inputs if (c.name, i) not in bound]
        if missing:
            raise ModelError(f"unbound component input(s) {missing}: declare them in [couplings]")
        for out, comp, sig in self.outputs:
            if comp not in by_name or sig not in by_name[comp].signals:
                raise ModelError(f"output {out!r}: {comp}.{sig} is not a signal of the model")
        for r in self.routes:
            if r.component not in by_name:
                raise ModelError(f"dose route CMT {r.cmt}: no component {r.component!r}")
            comp = by_name[r.component]
            if r.target not in comp.dose_targets:
                raise ModelError(f"dose route CMT {r.cmt}: {r.component!r} has no dose target {r.target!r} "
                                 f"(targets: {list(comp.dose_targets)})")
        if len({r.cmt for r in self.routes}) != len(self.routes):
            raise ModelError("each CMT may be routed to one dose target only")
        self._signal_order()  # raises on an algebraic cycle

    # ------------------------------------------------------------------ structure
    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        names = []
        for c in self.components:
            names += [n for n in c.parameter_names if n not in names]
        return tuple(names)

    @property
    def pk_parameter_names(self) -> tuple[str, ...]:
        """Parameters of the PK components (held fixed when no concentration is fitted)."""
        names = []
        for c in self.components:
            if getattr(c, "is_pk", False):
                names += [n for n in c.parameter_names if n not in names]
        return tuple(names)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o[0] for o in self.outputs)

    @property
    def state_names(self) -> dict:
        return {c.name: tuple(c.state_names) for c in self.components}

    @property
    def n_states(self) -> int:
        return sum(len(c.state_names) for c in self.components)

    def _offsets(self) -> dict:
        out, k = {}, 0
        for c in self.components:
            out[c.name] = (k, k + len(c.state_names))
            k += len(c.state_names)
        return out

    def _bindings(self) -> dict:
        return {(comp, inp): (src, sig, i) for i, (comp, inp, src, sig) in enumerate(self.links)}

    def _signal_order(self) -> tuple[str, ...]:
        bind = {(comp, inp): src for comp, inp, src, _ in self.links}
        deps = {c.name: {bind[(c.name, i)] for i in c.signal_inputs if (c.name, i) in bind} for c in self.components}
        order, done = [], set()
        while len(order) < len(self.components):
            ready = [c.name for c in self.components if c.name not in done and deps[c.name] <= done]
            if not ready:
                cyc = sorted(set(deps) - done)
                raise ModelError(f"algebraic cycle among the signals of components {cyc}: "
                                 "a signal may not depend on itself through couplings")
            for n in ready:
                order.append(n)
                done.add(n)
        return tuple(order)

    @property
    def has_state_doses(self) -> bool:
        """Whether any dose route targets an ODE state (then the solve is segmented)."""
        return any(r.target in self.component(r.component).state_names for r in self.routes)

    def _dose_parameter_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.parameter_names if _dose_quantity(n) is not None)

    # ------------------------------------------------------------------ states
    def initial_state(self, theta: dict) -> dict:
        """Steady-state initial conditions ``{component: [n_states]}``."""
        return {c.name: jnp.asarray(c.initial_state(theta), dtype=float) for c in self.components}

    def flatten(self, states: dict):
        parts = [jnp.reshape(states[c.name], (-1,)) for c in self.components if c.state_names]
        return jnp.concatenate(parts) if parts else jnp.zeros((0,))

    def unflatten(self, y) -> dict:
        """Flat states ``[..., n_states]`` -> ``{component: [..., n_component_states]}``."""
        return {name: y[..., a:b] for name, (a, b) in self._offsets().items()}

    # ------------------------------------------------------------------ host side
    def prepare(self, df, ids, n_subjects: int, events) -> dict:
        """Host-side arrays (per component) and checks of the dose records against the routes."""
        evt_cmt = np.asarray(events.cmt)[np.asarray(events.mask)]
        evt_row = np.asarray(events.row)[np.asarray(events.mask)]
        evt_ss = np.asarray(events.ss)[np.asarray(events.mask)]
        routed = {r.cmt: r for r in self.routes}
        line = df["LINE"].to_numpy() if "LINE" in df.columns else np.arange(len(df)) + 2
        drug_col = df["DRUG"].to_numpy() if "DRUG" in df.columns else None
        for c, row, ss in zip(evt_cmt, evt_row, evt_ss):
            if int(c) not in routed:
                raise ModelError(f"line {int(line[row])}: dose into CMT {int(c)}, but the model routes doses only "
                                 f"into CMT {sorted(routed)}")
            r = routed[int(c)]
            if drug_col is not None and self.component(r.component).is_pk:
                given = drug_col[row]
                if isinstance(given, str) and given.strip() not in ("", ".") and given.strip() != r.component:
                    raise ModelError(f"line {int(line[row])}, column DRUG: {given.strip()!r} dosed into CMT {int(c)}, "
                                     f"which the model routes to {r.component!r}")
            if ss > 0 and r.target in self.component(r.component).state_names:
                raise ModelError(f"line {int(line[row])}: steady-state (SS) dosing into the ODE state "
                                 f"{r.component}.{r.target} is not supported; give the doses explicitly (ADDL)")
        if self.has_state_doses and "EVID" in df.columns and df["EVID"].isin([3, 4]).any():
            raise ModelError("EVID 3/4 (reset) records are not supported with doses into ODE states")
        return {c.name: {k: np.asarray(v) for k, v in c.prepare(df, ids, n_subjects).items()}
                for c in self.components}

    # ------------------------------------------------------------------ per subject
    def setup(self, data: dict, theta: dict) -> dict:
        """Per-subject context (under vmap): resolved doses per component and state doses."""
        events = data["events"]
        names = set(self._dose_parameter_names())
        quantities = {}
        for prefix, default in _DOSE_DEFAULTS.items():
            per_dose = jnp.full(events.time.shape, default, dtype=events.time.dtype)
            for r in self.routes:
                if f"{prefix}{r.cmt}" in names:
                    per_dose = jnp.where(events.cmt == r.cmt, theta[f"{prefix}{r.cmt}"], per_dose)
            quantities[prefix] = per_dose
        doses = resolve_doses(events, quantities["F"], quantities["ALAG"], quantities["R"], quantities["D"])
        scale = jnp.ones(events.time.shape, dtype=events.time.dtype)
        route_idx = jnp.full(events.time.shape, -1)
        for i, r in enumerate(self.routes):
            hit = events.cmt == r.cmt
            scale = jnp.where(hit, self.route_scale[i], scale)
            route_idx = jnp.where(hit, i, route_idx)
        doses = doses._replace(amount=doses.amount * scale, rate=doses.rate * scale)
        real = events.mask
        ctx = {}
        offsets = self._offsets()
        for comp in self.components:
            mine = [i for i, r in enumerate(self.routes) if r.component == comp.name]
            comp_doses = None
            if comp.receives_doses:
                if comp.is_pk:  # the doses routed to this drug
                    sel = jnp.zeros(events.time.shape, bool)
                    local = jnp.ones(events.time.shape, events.cmt.dtype)
                    for i in mine:
                        hit = route_idx == i
                        sel = sel | hit
                        local = jnp.where(hit, comp.dose_targets.index(self.routes[i].target) + 1, local)
                    sel = sel & real
                    comp_doses = doses._replace(cmt=local, start_time=jnp.where(sel, doses.start_time, jnp.inf))
                else:  # every dose of the model (per-administration terms)
                    comp_doses = doses._replace(start_time=jnp.where(real, doses.start_time, jnp.inf))
            ctx[comp.name] = comp.setup(data["components"][comp.name], comp_doses, theta)
        # Doses into ODE states: bolus jumps and zero-order infusion rates.
        state_idx = jnp.full(events.time.shape, -1)
        for i, r in enumerate(self.routes):
            comp = self.component(r.component)
            if r.target in comp.state_names:
                state_idx = jnp.where(route_idx == i, offsets[r.component][0] + comp.state_names.index(r.target),
                                      state_idx)
        into_state = real & (state_idx >= 0)
        bolus = into_state & (doses.kind == BOLUS)
        infusion = into_state & (doses.kind == INFUSION)
        ctx["_state_doses"] = {
            "time": jnp.where(bolus, doses.arrival, jnp.inf),
            "order": jnp.where(bolus, doses.start_order, jnp.inf),
            "index": jnp.maximum(state_idx, 0),
            "amount": jnp.where(bolus, doses.amount, 0.0),
            "inf_start": jnp.where(infusion, doses.arrival, jnp.inf),
            "inf_end": jnp.where(infusion, doses.arrival + doses.duration, jnp.inf),
            "inf_rate": jnp.where(infusion, doses.rate, 0.0),
        }
        return ctx

    def jump_times(self, ctx) -> jax.Array:
        """Times where the vector field is discontinuous (dose arrivals, infusion ends)."""
        parts = [jnp.reshape(c.jump_times(ctx[c.name]), (-1,)) for c in self.components]
        sd = ctx["_state_doses"]
        parts += [sd["time"], sd["inf_start"], sd["inf_end"]]
        return jnp.concatenate(parts)

    def state_jumps(self, ctx):
        """Bolus doses into ODE states sorted by key: ``(time, order, index, amount)`` ``[D]``."""
        sd = ctx["_state_doses"]
        perm = jnp.lexsort((sd["order"], sd["time"]))
        return sd["time"][perm], sd["order"][perm], sd["index"][perm], sd["amount"][perm]

    # ------------------------------------------------------------------ evaluation
    def signals(self, t, order, y, theta: dict, ctx, precomputed: dict | None = None) -> dict:
        """Every signal ``{(component, signal): value}`` at time ``t`` (flat states ``y``)."""
        offsets = self._offsets()
        bind = self._bindings()
        out = {}
        for name in self._signal_order():
            comp = self.component(name)
            if precomputed is not None and name in precomputed:
                vals = precomputed[name]
            else:
                a, b = offsets[name]
                inputs = {}
                for inp in comp.signal_inputs:
                    src, sig, i = bind[(name, inp)]
                    inputs[inp] = out[(src, sig)] * self.link_scale[i]
                vals = comp.signal(t, order, y[a:b], theta, inputs, ctx[name])
            for sig in comp.signals:
                out[(name, sig)] = vals[sig]
        return out

    def vector_field(self, t, y, theta: dict, ctx, precomputed: dict | None = None):
        """Flat time derivative (states ``y`` flat), infusion rates into ODE states included."""
        sig = self.signals(t, jnp.inf, y, theta, ctx, precomputed)
        offsets = self._offsets()
        bind = self._bindings()
        parts = []
        for comp in self.components:
            if not comp.state_names:
                continue
            a, b = offsets[comp.name]
            inputs = {}
            for inp in comp.inputs:
                src, s, i = bind[(comp.name, inp)]
                inputs[inp] = sig[(src, s)] * self.link_scale[i]
            parts.append(jnp.reshape(comp.vector_field(t, y[a:b], theta, inputs, ctx[comp.name]), (-1,)))
        dy = jnp.concatenate(parts) if parts else jnp.zeros_like(y)
        sd = ctx["_state_doses"]
        running = (t >= sd["inf_start"]) & (t < sd["inf_end"])
        rates = jnp.where(running, sd["inf_rate"], 0.0)
        return dy.at[sd["index"]].add(rates) if self.has_state_doses else dy

    def time_only_signals(self, ts, orders, theta: dict, ctx) -> dict:
        """Signals of the time-only components at many times ``[L]`` (one vectorised call)."""
        return {c.name: c.signal_many(ts, orders, theta, ctx[c.name]) for c in self.components if c.time_only}

    def observe(self, ts, orders, ys, theta: dict, ctx) -> dict:
        """Outputs ``{name: [N]}`` from flat states ``ys [N, n_states]`` at keys ``(ts, orders)``."""

        pre = self.time_only_signals(ts, orders, theta, ctx)

        def one(t, o, y, p):
            sig = self.signals(t, o, y, theta, ctx, p)
            return {name: sig[(comp, s)] * self.output_scale[k] for k, (name, comp, s) in enumerate(self.outputs)}

        return jax.vmap(one)(ts, orders, ys, pre)


def pk_pd_system(pk: Component, pd, conc_scale: float = 1.0, conc_output_scale: float = 1.0,
                 amount_scale: float = 1.0) -> System:
    """The one-drug model of schema-1 cards: a PK component ``"pk"`` driving a PD component ``"pd"``.

    Data ``CMT n`` doses the PK component's n-th dose target (NONMEM's numbering:
    depot first with absorption, then central, then peripheral compartments);
    ``conc_scale`` converts the PK concentration to the unit of the drug-effect
    parameters, ``conc_output_scale`` to the canonical unit of the ``CONC`` output
    (mg/L), ``amount_scale`` the data's dose amounts (mg) to the PK's dose unit.
    A :class:`pkpd.model.pd.base.PDSystem` is wrapped as a component.
    """
    from .pd.base import PDSystem, PDSystemComponent

    if isinstance(pd, PDSystem):
        pd = PDSystemComponent(pd, name="pd")
    elif pd.name != "pd":
        pd = eqx.tree_at(lambda c: c.name, pd, "pd")
    if pk.name != "pk":
        pk = eqx.tree_at(lambda c: c.name, pk, "pk")
    routes = tuple(Route(j + 1, "pk", target) for j, target in enumerate(pk.dose_targets))
    outputs = (("CONC", "pk", "conc"),) + tuple((s, "pd", s) for s in pd.signals)
    return System(
        components=(pk, pd),
        links=(("pd", "drug", "pk", "conc"),),
        link_scale=[conc_scale],
        outputs=outputs,
        output_scale=[conc_output_scale] + [1.0] * len(pd.signals),
        routes=routes,
        route_scale=[amount_scale] * len(routes),
    )
