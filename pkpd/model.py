"""Models: a model card turned into something that simulates and fits.

:class:`Model` is the user-facing object (plain Python, holds the card: typical values,
IIV, residual error, covariate effects). Its :attr:`Model.dynamics` is the
:class:`pkpd.solve.Dynamics` pytree (PK driver + PD system + unit conversion) that
compiled code uses. Building one from a card only needs the registry below: a new PD
system is one new module (a final :class:`pkpd.pd.base.PDSystem` subclass) plus one model
card; a card may also name the class directly as ``system = "package.module:Class"``.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd

from .cards import ModelCard, load_card
from .drivers import KPD, ClosedFormPK, ConcentrationColumn
from .errors import ModelError
from .pd.friberg import Friberg
from .pk import _dose_quantity
from .solve import Dynamics

__all__ = ["Model", "load_model", "PD_SYSTEMS", "covariate_factors"]

#: Short names of PD systems usable in model cards (``[pd] system = ...``).
PD_SYSTEMS = {"friberg": Friberg}


def _pd_class(system: str):
    if system in PD_SYSTEMS:
        return PD_SYSTEMS[system]
    if ":" in system:
        module, _, cls = system.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ModelError(f"cannot import PD system {system!r}: {err}") from None
    raise ModelError(f"unknown PD system {system!r}: expected one of {sorted(PD_SYSTEMS)} or 'module:Class'")


def _build_dynamics(card: ModelCard, steady_state: bool = True) -> Dynamics:
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
    cls = _pd_class(card.pd.system)
    if cls is Friberg and pd_outputs:
        options["output"] = pd_outputs[0]
    try:
        system = cls(**options)
    except (TypeError, ValueError) as err:
        raise ModelError(f"{card.path}: invalid [pd] options for {card.pd.system!r}: {err}") from None
    from .units import unit_factor

    unit = card.pk.concentration_unit
    out_scale = unit_factor("CONC", unit, card.pk.molar_mass) if unit else 1.0
    return Dynamics(driver, system, float(card.conc_scale), float(out_scale))


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
    dynamics : Dynamics
        PK driver + PD system (an equinox pytree used by compiled code).
    name : str
    outputs : tuple of str
        Observable outputs (``CONC``, ``ANC``...).
    """

    def __init__(self, card: ModelCard):
        self.card = card
        self.name = card.name
        self.dynamics = _build_dynamics(card)
        self.outputs = tuple(card.outputs)
        missing = [p for p in self.dynamics.parameter_names if p not in card.parameters]
        if missing:
            raise ModelError(f"{card.path}: parameters {missing} are required by the model structure")

    def __repr__(self):
        return f"Model({self.name!r}: {self.card.pd.system} PD, {self.card.pk.driver} PK, outputs {self.outputs})"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.dynamics.parameter_names

    @property
    def parameters(self) -> dict:
        """Parameter specifications of the card (``ParameterSpec`` by name)."""
        return {n: self.card.parameters[n] for n in self.parameter_names}

    def dynamics_for(self, df: pd.DataFrame) -> Dynamics:
        """Dynamics specialised to a data set (skips steady-state formulas when no dose has SS)."""
        doses = df["EVID"].isin([1, 4]).to_numpy()
        has_ss = bool((df["SS"].to_numpy(int)[doses] > 0).any())
        return self.dynamics if has_ss else _build_dynamics(self.card, steady_state=False)

    @property
    def amount_scale(self) -> float:
        """Factor from the data's dose amounts (canonical mg) to the card's ``pk.dose_unit``."""
        unit = (self.card.pk.dose_unit or "mg").strip()
        if unit.lower() == "umol":
            if not self.card.pk.molar_mass:
                raise ModelError(f"{self.card.path}: pk.dose_unit umol needs pk.molar_mass")
            return 1000.0 / float(self.card.pk.molar_mass)
        from .units import dose_factor

        return 1.0 / dose_factor(unit)

    def prepare(self, df: pd.DataFrame, ids=None, n_subjects=None, eval_times=None, eval_mask=None,
                options=None) -> tuple:
        """``(dynamics, data)`` for compiled code: :meth:`dynamics_for` and padded subject arrays
        (with integration grids when ``options.solver == "rk4-grid"``)."""
        from .solve import prepare_subjects

        dynamics = self.dynamics_for(df)
        data = prepare_subjects(dynamics, df, ids, n_subjects=n_subjects, amount_scale=self.amount_scale,
                                eval_times=eval_times, eval_mask=eval_mask, options=options)
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

    def individual_parameters(self, covariates: dict, eta: dict | None = None, typical: dict | None = None,
                              n: int | None = None, xp=np) -> dict:
        """Individual parameters ``{name: [S]}``.

        ``theta_i = typical * covariate_factor_i * exp(eta_i)`` for parameters with a
        value; column-valued parameters are read from ``covariates[column]``.
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
            value = typical[name] * factors.get(name, 1.0)
            if name in eta:
                value = value * xp.exp(eta[name])
            out[name] = value if n is None else xp.broadcast_to(xp.asarray(value, dtype=float), (n,))
        return out


def load_model(name_or_card) -> Model:
    """Load a model card by name (``pkpd models`` lists them) or path and build the :class:`Model`."""
    card = name_or_card if isinstance(name_or_card, ModelCard) else load_card(name_or_card)
    return Model(card)

