"""Models: a model card turned into something that simulates and fits.

:class:`Model` is the user-facing object (plain Python, holds the card: typical values,
IIV, residual error, covariate effects). Its :attr:`Model.dynamics` is the coupled
:class:`pkpd.model.system.System` (an equinox pytree) that compiled code uses, built by
:func:`build_system` from the card's components (:mod:`pkpd.model.registry`): a new
model family is one new module (a final :class:`pkpd.model.component.Component`
subclass, registered by a short name or named as ``system = "package.module:Class"``)
plus one model card.
"""

from __future__ import annotations

import math

import equinox as eqx

import numpy as np
import pandas as pd

from ..errors import ModelError
from .card import ModelCard, load_card
from .pd.friberg import Friberg
from .pk.closed_form import _dose_quantity
from .pk.drivers import KPD, ClosedFormPK, ConcentrationColumn
from .registry import PD_SYSTEMS, pd_class
from .system import Route, System, pk_pd_system

__all__ = ["Model", "load_model", "PD_SYSTEMS", "covariate_factors", "build_system", "individual_log_value",
           "data_amount_unit"]


def build_system(card: ModelCard, steady_state: bool = True) -> System:
    """The coupled :class:`~pkpd.model.system.System` of a card (schema 1 or 2).

    Schema 1: the card's PK component drives its PD component (:func:`pk_pd_system`).
    Schema 2: every ``[[pk]]`` and ``[[pd]]`` component, the ``[couplings]`` (with their
    unit factors), the ``[observe]`` outputs (converted to each output's canonical unit)
    and the dose routes of the ``cmt`` tables (PK doses converted from the data's mg to
    each drug's ``dose_unit``; doses into PD states, such as transfusions, are in the
    state's own unit).
    """
    if card.schema == 2:
        return _build_v2(card, steady_state)
    return _build_dynamics(card, steady_state)


def _build_v2(card: ModelCard, steady_state: bool) -> System:
    from .. import units
    from .registry import pd_component, pk_component

    comps = [pk_component(spec, steady_state, spec.drug) for spec in card.pks]
    try:
        comps += [pd_component(spec.system, spec.options, spec.name, spec.rename) for spec in card.pds]
    except (TypeError, ValueError) as err:
        raise ModelError(f"{card.path}: invalid [[pd]] options: {err}") from None
    links, link_scale = [], []
    for key, c in card.couplings.items():
        comp, inp = key.split(".")
        src, sig = c.signal.split(".")
        links.append((comp, inp, src, sig))
        link_scale.append(c.scale)
    drugs = {p.drug: p for p in card.pks}
    outputs, output_scale = [], []
    for name, o in card.observe.items():
        src, sig = o.signal.split(".")
        molar = drugs[src].molar_mass if src in drugs else None
        outputs.append((name, src, sig))
        output_scale.append(units.unit_factor("CONC" if name.startswith("CONC:") else name, o.unit, molar))
    # Every drug's concentration is an output too (CONC:<drug>, and CONC with one drug), observed or
    # not, so simulations report it (as schema-1 models always did).
    with_conc = [spec for spec in card.pks if spec.driver != "kpd" and spec.concentration_unit]
    for spec in with_conc:
        names = [f"CONC:{spec.drug}"] + (["CONC"] if len(card.pks) == 1 else [])
        for name in names:
            if name not in card.observe:
                outputs.append((name, spec.drug, "conc"))
                if units.concentration_dimension(spec.concentration_unit) == "activity":
                    # An IU drug (epoetin) has no mass concentration: its CONC output stays in IU/L.
                    output_scale.append(units.concentration_factor(spec.concentration_unit, "IU/L"))
                else:
                    output_scale.append(units.unit_factor("CONC", spec.concentration_unit, spec.molar_mass))
    routes, route_scale = [], []
    for spec in card.pks:
        factor = units.amount_factor(data_amount_unit(spec), spec.dose_unit, spec.molar_mass)
        for target, cmt in spec.cmt.items():
            routes.append(Route(cmt, spec.drug, target))
            route_scale.append(factor)
    for spec in card.pds:
        for target, cmt in spec.cmt.items():
            routes.append(Route(cmt, spec.name, target))
            route_scale.append(1.0)
    return System(components=tuple(comps), links=tuple(links), link_scale=link_scale, outputs=tuple(outputs),
                  output_scale=output_scale, routes=tuple(routes), route_scale=route_scale)


def data_amount_unit(spec) -> str:
    """Unit of a drug's AMT in a frame that declares none: mg when the drug's ``dose_unit``
    converts from mg (mass, or molar with a molar mass), else the base unit of its dose
    unit's dimension (IU for a drug dosed in IU)."""
    from .. import units

    try:
        units.amount_factor("mg", spec.dose_unit or "mg", spec.molar_mass)
        return "mg"
    except units.UnitError:
        return units.stored_amount_unit(spec.dose_unit)[0]


def _build_dynamics(card: ModelCard, steady_state: bool = True) -> System:
    pk = card.pk
    dose_params = tuple(n for n in pk.parameters if _dose_quantity(n) is not None)
    if pk.driver in ("closed_form", "covariates"):
        driver = ClosedFormPK(pk.model, bool(pk.absorption), dose_params, steady_state)
    elif pk.driver == "kpd":
        driver = KPD(dose_params, steady_state)
    elif pk.driver == "concentration":
        driver = ConcentrationColumn(pk.column, pk.interpolation or "linear")
    else:  # pragma: no cover - the card loader validates drivers
        raise ModelError(f"{card.path}: unknown pk.driver {pk.driver!r}")
    options = dict(card.pd.options)
    pd_outputs = [o for o in card.outputs if o != "CONC"]
    cls = pd_class(card.pd.system)
    if cls is Friberg and pd_outputs:
        options["output"] = pd_outputs[0]
    try:
        system = cls(**options)
    except (TypeError, ValueError) as err:
        raise ModelError(f"{card.path}: invalid [pd] options for {card.pd.system!r}: {err}") from None
    from ..units import unit_factor

    unit = card.pk.concentration_unit
    out_scale = unit_factor("CONC", unit, card.pk.molar_mass) if unit else 1.0
    return pk_pd_system(driver, system, float(card.conc_scale), float(out_scale), _amount_scale(card))


def _amount_scale(card: ModelCard) -> float:
    """Factor from the data's dose amounts (canonical mg) to the card's ``pk.dose_unit``."""
    unit = (card.pk.dose_unit or "mg").strip()
    if unit.lower() == "umol":
        if not card.pk.molar_mass:
            raise ModelError(f"{card.path}: pk.dose_unit umol needs pk.molar_mass")
        return 1000.0 / float(card.pk.molar_mass)
    from ..units import dose_factor

    return 1.0 / dose_factor(unit)


def covariate_factors(card: ModelCard, covariates, xp=np) -> dict:
    """Multiplicative covariate factor per parameter: ``{name: [S] array}``.

    ``covariates`` maps covariate names to per-subject arrays. Effects (model card
    ``[[covariates]]``): power ``(cov/ref)^effect``; linear ``1 + effect*(cov - ref)``
    (``effect_above`` above ``ref``: hockey stick); categorical ``1 + levels[cov]``;
    threshold ``1 + effect`` when ``cov >= threshold``. ``xp`` is numpy or jax.numpy.
    """
    out = {}
    for eff in card.covariates:
        if eff.covariate not in covariates:
            raise ModelError(
                f"model {card.name!r} needs covariate {eff.covariate!r} (effect on {eff.parameter}); "
                "add it as a data column or pass it in `covariates`"
            )
        cov = xp.asarray(covariates[eff.covariate], dtype=float)
        if eff.type == "power":
            f = (cov / eff.reference) ** eff.effect
        elif eff.type == "linear":
            above = eff.effect if eff.effect_above is None else eff.effect_above
            d = cov - eff.reference
            f = 1.0 + xp.where(d > 0, above, eff.effect) * d
        elif eff.type == "categorical":
            f = xp.ones_like(cov)
            for level, value in eff.levels.items():
                f = xp.where(cov == float(level), 1.0 + value, f)
        elif eff.type == "threshold":
            f = xp.where(cov >= eff.threshold, 1.0 + eff.effect, 1.0)
        else:  # pragma: no cover - validated by the card loader
            raise ModelError(f"unknown covariate effect type {eff.type!r}")
        out[eff.parameter] = out.get(eff.parameter, 1.0) * f
    return out


class Model:
    """A model card made runnable.

    Attributes
    ----------
    card : ModelCard
    dynamics : pkpd.model.system.System
        The coupled model (an equinox pytree used by compiled code).
    name : str
    outputs : tuple of str
        Observable outputs (``CONC``, ``ANC``...).
    """

    def __init__(self, card: ModelCard):
        self.card = card
        self.name = card.name
        self.dynamics = build_system(card)
        self.outputs = tuple(card.outputs)
        missing = [p for p in self.dynamics.parameter_names if p not in card.parameters]
        if missing:
            raise ModelError(f"{card.path}: parameters {missing} are required by the model structure")

    def __repr__(self):
        if self.card.schema == 2:
            return f"Model({self.name!r}: components {list(self.dynamics.component_names)}, outputs {self.outputs})"
        return f"Model({self.name!r}: {self.card.pd.system} PD, {self.card.pk.driver} PK, outputs {self.outputs})"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.dynamics.parameter_names

    def drug_inputs(self, dose_units: dict | None = None) -> tuple[dict, dict]:
        """How each drug of the card enters a data set: ``({drug: DrugInput}, {CMT: unit})``.

        The :class:`~pkpd.dosing.regimen.DrugInput` per drug tells
        :meth:`pkpd.dosing.regimen.Regimen.to_records` where a regimen's doses go
        (intravascular doses into the drug's ``central`` route, extravascular ones into its
        ``depot`` route) and in which unit to write them so that they join a canonical
        frame whose compartments are declared in ``dose_units`` (:attr:`pkpd.Dataset.dose_units`):
        a compartment's stored unit when it is declared, else mg when the drug's dose unit
        converts from mg, else the base unit of the drug's own dose unit (IU for an
        epoetin card). Each product of the card (``[[pd]] product``, one table or an
        array: platelets and red cells in ``unit``, epoetin in IU) is dosed into its
        ``target`` state; a blood product is left out when the data already dose that compartment in the state's own unit (declare it in ``unit``). The second value lists the units of the
        compartments the records use, to be merged into the frame's ``dose_units`` for :meth:`prepare`. Schema-1
        cards have no named drugs: ``({}, {})`` (their regimens go to CMT 1 in mg).
        """
        from .. import units
        from ..dosing.regimen import DrugInput

        declared = {int(c): u for c, u in (dose_units or {}).items()}
        inputs, used = {}, {}
        for spec in (self.card.pks if self.card.schema == 2 else ()):
            cmt = dict(spec.cmt)
            iv = cmt.get("central", next(iter(cmt.values()), None))
            if iv is None:
                continue
            mine = sorted(set(cmt.values()))
            stored = {units.stored_amount_unit(declared[c])[0] for c in mine if c in declared}
            if len(stored) > 1:
                raise ModelError(f"the compartments of {spec.drug or 'the drug'} ({mine}) are declared in units of "
                                 f"different kinds ({sorted(stored)}): declare them alike")
            unit = stored.pop() if stored else data_amount_unit(spec)
            name = spec.drug or "drug"
            inputs[name] = DrugInput(cmt=iv, dose_unit=unit, molar_mass=spec.molar_mass, sc_cmt=cmt.get("depot"))
            used.update({c: unit for c in mine if unit != "mg" or c in declared})
        for spec in (self.card.pds if self.card.schema == 2 else ()):
            for product in spec.products:
                cmt = spec.cmt[product.target]
                if product.unit_amount and cmt in declared and \
                        units.stored_amount_unit(declared[cmt])[0] != "unit":
                    # the data dose this state in its own unit: product units added to the same compartment
                    # would rescale those doses too, so regimens cannot add them (declare CMT in 'unit')
                    continue
                unit = "unit" if product.unit_amount else (
                    units.stored_amount_unit(declared[cmt])[0] if cmt in declared else
                    units.stored_amount_unit(product.dose_unit)[0])
                # a drug dosed into a PD state (epoetin into its depot) takes any route there
                inputs[product.name] = DrugInput(cmt=cmt, dose_unit=unit,
                                                 sc_cmt=cmt if product.dose_unit else None)
                used[cmt] = unit
        return inputs, used

    def regimen_records(self, regimen, covariates: dict | None = None, id=1,
                        dose_units: dict | None = None) -> tuple[pd.DataFrame, dict]:
        """NONMEM dose records of a regimen for this model: ``(records, {CMT: unit})``.

        Schema-2 cards route each named drug by :meth:`drug_inputs` (so one regimen may
        combine drugs: ``"docetaxel 75 mg/m2 1h; pegfilgrastim 6 mg sc @24h"``); schema-1
        cards take every dose into CMT 1 in mg. ``dose_units`` are those of the frame the
        records join (:attr:`pkpd.Dataset.dose_units`); the returned mapping is the units
        the records use, to pass with the frame to :meth:`prepare`.
        """
        from ..dosing.regimen import Regimen, parse_regimen

        if not isinstance(regimen, Regimen):
            regimen = parse_regimen(str(regimen))
        inputs, used = self.drug_inputs(dose_units)
        if not inputs:
            molar_mass = self.card.pk.molar_mass if self.card.pk is not None else None
            return regimen.to_records(covariates, dose_unit="mg", molar_mass=molar_mass, id=id), {}
        return regimen.to_records(covariates, id=id, drugs=inputs), used

    def solver_options(self, options=None):
        """``options`` (default :class:`pkpd.solve.solver.SolverOptions`) with ``solver="auto"``
        resolved: the card's recommended integrator (``solver = "kvaerno5"`` for stiff models)
        when it names one, else ``"tsit5"``. A solver named explicitly is kept.
        Fits, forecasts and simulations resolve their options here."""
        import dataclasses

        from ..solve.solver import AUTO_SOLVER, SolverOptions

        options = SolverOptions() if options is None else options
        if options.solver == AUTO_SOLVER:
            return dataclasses.replace(options, solver=self.card.solver or "tsit5")
        return options

    @property
    def parameters(self) -> dict:
        """Parameter specifications of the card (``ParameterSpec`` by name)."""
        return {n: self.card.parameters[n] for n in self.parameter_names}

    def dynamics_for(self, df: pd.DataFrame, dose_units: dict | None = None) -> System:
        """The system specialised to a data set: steady-state formulas skipped when no dose
        has SS, and each dose route's factor taking the data's amounts to the drug's dose
        unit (``dose_units``: the data's declared unit per CMT, :attr:`pkpd.Dataset.dose_units`;
        compartments not listed are in mg)."""
        doses = df["EVID"].isin([1, 4]).to_numpy()
        has_ss = bool((df["SS"].to_numpy(int)[doses] > 0).any())
        system = self.dynamics if has_ss else build_system(self.card, steady_state=False)
        if dose_units:
            system = eqx.tree_at(lambda s: s.route_scale, system, self.route_factors(dose_units))
        return system

    def route_factors(self, dose_units: dict | None = None) -> np.ndarray:
        """Factor per dose route of :attr:`dynamics` taking the data's stored amounts to the
        dose target's unit.

        A dataset stores AMT in mg, or, for compartments declared in molar, IU, product
        or cell units, in umol, IU, unit or cells (:func:`pkpd.units.stored_amount_unit`).
        A drug's doses convert to its card ``dose_unit`` (mass <-> molar with its
        ``molar_mass``); doses into a PD state (a transfusion) are in the state's own unit
        and take no declared unit.

        Raises
        ------
        ModelError
            A compartment's unit cannot be converted to its drug's dose unit (IU to mg,
            molar without a molar mass), or a unit is declared for a PD-state route.
        """
        from .. import units

        dose_units = {int(c): u for c, u in (dose_units or {}).items()}
        specs = {p.drug: p for p in self.card.pks} if self.card.schema == 2 else {"pk": self.card.pk}
        pds = {p.name: p for p in self.card.pds} if self.card.schema == 2 else {}
        out = []
        for route in self.dynamics.routes:
            spec = specs.get(route.component)
            # A compartment the data does not dose keeps the model's default (data_amount_unit).
            declared = dose_units.get(int(route.cmt), "mg" if spec is None else data_amount_unit(spec))
            stored = units.stored_amount_unit(declared)[0]
            if spec is None:
                pd_spec = pds.get(route.component)
                # the product dosed into this route's state (several per component: platelets, red cells)
                product = pd_spec.product_for(route.target) if pd_spec is not None else None
                per_unit = product.unit_amount if product is not None else None
                drug_unit = product.dose_unit if product is not None else None
                if declared == "unit" and per_unit:
                    out.append(float(per_unit))  # one product unit adds `unit_amount` to the state
                elif declared == "mg" and int(route.cmt) not in dose_units:  # not dosed: the state's unit
                    out.append(1.0)
                elif drug_unit is not None:
                    try:
                        out.append(units.amount_factor(stored, drug_unit))
                    except units.UnitError as err:
                        raise ModelError(f"doses into CMT {route.cmt} ({product.name}) are in {declared}, but "
                                         f"the model {self.name!r} takes them in {drug_unit}: {err}") from None
                elif declared == "mg":  # undeclared: amounts in the state's own unit
                    out.append(1.0)
                else:
                    what = (f"in the state's own unit or in 'unit' ({per_unit:g} each)" if per_unit else
                            "in the state's own unit")
                    raise ModelError(f"doses into CMT {route.cmt} go to the model state {route.component}."
                                     f"{route.target}, whose amounts are {what}: got doses declared in {declared!r}")
                continue
            model_unit = (spec.dose_unit or "mg").strip()
            try:
                out.append(units.amount_factor(stored, model_unit, spec.molar_mass))
            except units.UnitError as err:
                raise ModelError(f"doses into CMT {route.cmt} ({route.component}) are in {declared}, but the "
                                 f"model {self.name!r} takes {route.component} in {model_unit}: {err}") from None
        return np.asarray(out, dtype=float)

    @property
    def amount_scale(self) -> float:
        """Factor from the data's dose amounts (canonical mg) to the card's ``pk.dose_unit``."""
        return _amount_scale(self.card)

    def prepare(self, df: pd.DataFrame, ids=None, n_subjects=None, eval_times=None, eval_mask=None,
                options=None, dose_units: dict | None = None) -> tuple:
        """``(dynamics, data)`` for compiled code: :meth:`dynamics_for` (with the data's
        ``dose_units``, ``{CMT: unit}``) and padded subject arrays (with integration grids
        when ``options.solver == "rk4-grid"``)."""
        from ..solve.solver import prepare_subjects

        dynamics = self.dynamics_for(df, dose_units)
        data = prepare_subjects(dynamics, df, ids, n_subjects=n_subjects, eval_times=eval_times, eval_mask=eval_mask,
                                options=options)
        return dynamics, data

    def subject_covariates(self, df: pd.DataFrame, ids) -> dict:
        """Per-subject values (first record) of every column the model needs, ``{name: [S]}``."""
        first = df.groupby("ID", sort=False).head(1).set_index("ID")
        needed = {e.covariate for e in self.card.covariates}
        needed |= {p.column for p in self.parameters.values() if p.column}
        out = {}
        for name in sorted(needed):
            if name not in first.columns:
                raise ModelError(f"model {self.name!r} needs column {name!r}, which the data set lacks")
            values = pd.to_numeric(first.loc[list(ids), name], errors="coerce").to_numpy(float)
            if not np.all(np.isfinite(values)):
                bad = [i for i, v in zip(ids, values) if not math.isfinite(v)]
                raise ModelError(f"column {name!r} is missing or non-numeric on the first record of ID(s) {bad[:5]}")
            out[name] = values
        return out

    def iiv_correlation(self, names) -> np.ndarray:
        """Correlation matrix of the etas of ``names`` (the card's ``[iiv_correlations]``;
        identity where the card gives none)."""
        names = list(names)
        corr = np.eye(len(names))
        for (a, b), rho in getattr(self.card, "iiv_correlations", {}).items():
            if a in names and b in names:
                corr[names.index(a), names.index(b)] = corr[names.index(b), names.index(a)] = rho
        return corr

    def draw_etas(self, rng: np.random.Generator, n: int) -> dict:
        """Random effects of ``n`` subjects, ``{name: [n]}``, from the card's IIV: independent
        normal draws ``N(0, omega^2)`` per parameter, or, when the card correlates etas,
        ``eta = omega * (L z)`` with ``L`` the Cholesky factor of :meth:`iiv_correlation`."""
        names = [p for p, spec in self.parameters.items() if spec.omega > 0 and not spec.column]
        if not getattr(self.card, "iiv_correlations", None):
            return {p: rng.normal(0.0, self.parameters[p].omega, size=n) for p in names}
        omega = np.array([self.parameters[p].omega for p in names])
        z = rng.normal(size=(n, len(names)))
        eta = (z @ np.linalg.cholesky(self.iiv_correlation(names)).T) * omega
        return {p: eta[:, j] for j, p in enumerate(names)}

    def individual_parameters(self, covariates: dict, eta: dict | None = None, typical: dict | None = None,
                              n: int | None = None, xp=np) -> dict:
        """Individual parameters ``{name: [S]}``.

        ``theta_i = exp(log typical + log covariate_factor_i + eta_i)``
        (:func:`individual_log_value`) for parameters with a value; column-valued
        parameters are read from ``covariates[column]``.
        """
        typical = dict(self.card.typical_values() if typical is None else typical)
        eta = eta or {}
        if n is None and covariates:
            n = len(next(iter(covariates.values())))
        factors = covariate_factors(self.card, covariates, xp)
        out = {}
        for name, spec in self.parameters.items():
            if spec.column:
                out[name] = xp.asarray(covariates[spec.column], dtype=float)
                continue
            log_factor = xp.log(xp.asarray(factors[name], dtype=float)) if name in factors else 0.0
            value = xp.exp(individual_log_value(xp.log(xp.asarray(typical[name], dtype=float)), log_factor,
                                                eta.get(name, 0.0)))
            out[name] = value if n is None else xp.broadcast_to(xp.asarray(value, dtype=float), (n,))
        return out


def individual_log_value(log_typical, log_factor=0.0, eta=0.0):
    r"""The one formula for an individual parameter, on the log scale:
    :math:`\log\theta_{ip} = \log TV_p + \log f_{ip}(\text{covariates}) + \eta_{ip}`.

    Used by :meth:`Model.individual_parameters` (simulation) and by the population model
    (:meth:`pkpd.stats.population.PopulationProblem.individual`), so fitting, forecasting
    and simulation agree by construction.
    """
    return log_typical + log_factor + eta


def load_model(name_or_card) -> Model:
    """Load a model card by name (``pkpd models`` lists them) or path and build the :class:`Model`."""
    card = name_or_card if isinstance(name_or_card, ModelCard) else load_card(name_or_card)
    return Model(card)

