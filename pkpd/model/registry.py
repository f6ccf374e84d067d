"""Component registry: card specifications -> model components.

Short names of PD systems usable in model cards (``system = "friberg"``); a card may
also name any class as ``system = "package.module:Class"`` (a
:class:`pkpd.model.component.Component`, or a single-drug
:class:`pkpd.model.pd.base.PDSystem`, wrapped). PK components by ``driver``.
"""

from __future__ import annotations

import importlib

from ..errors import ModelError
from .pd.base import PDSystem, PDSystemComponent
from .pd.erythropoiesis import EndogenousEPO, EpoetinErythropoiesis, RedCellLifespan
from .pd.engraftment import StiehlReconstitution
from .pd.friberg import Friberg
from .pd.granulopoiesis import (
    EndogenousGCSF,
    FribergGCSF,
    GCSFFeedbackNeutrophils,
    KrzyzanskiGranulopoiesis,
    MelhemGranulopoiesis,
    ObservedGCSF,
)
from .pd.marrow import FornariMarrow
from .pd.thrombopoiesis import FribergPlatelets, PlateletLifespan
from .pk.closed_form import _dose_quantity
from .pk.compartmental import CompartmentalPK
from .pk.drivers import KPD, ClosedFormPK, ConcentrationColumn
from .renamed import Renamed

__all__ = ["PD_SYSTEMS", "pd_class", "pk_component", "pd_component"]

#: Short names of PD systems usable in model cards.
PD_SYSTEMS = {
    # neutrophils (Friberg family) and G-CSF
    "friberg": Friberg,
    "gcsf_feedback_neutrophils": GCSFFeedbackNeutrophils,
    "endogenous_gcsf": EndogenousGCSF,
    "melhem_granulopoiesis": MelhemGranulopoiesis,
    "friberg_gcsf": FribergGCSF,
    "krzyzanski_granulopoiesis": KrzyzanskiGranulopoiesis,
    "observed_gcsf": ObservedGCSF,
    # platelets and TPO-receptor agonists
    "friberg_platelets": FribergPlatelets,
    "platelet_lifespan": PlateletLifespan,
    # red cells, ESAs and endogenous EPO
    "red_cell_lifespan": RedCellLifespan,
    "endogenous_epo": EndogenousEPO,
    "epoetin_erythropoiesis": EpoetinErythropoiesis,
    # whole marrow: shared progenitor pool feeding all lineages
    "fornari_marrow": FornariMarrow,
    # transplant: stem-cell reconstitution (Stiehl / Marciniak-Czochra self-renewal model)
    "stiehl_reconstitution": StiehlReconstitution,
}


def pd_class(system: str):
    """The class a card's ``system`` names (short name or ``"package.module:Class"``)."""
    if system in PD_SYSTEMS:
        return PD_SYSTEMS[system]
    if ":" in system:
        module, _, cls = system.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ModelError(f"cannot import PD system {system!r}: {err}") from None
    raise ModelError(f"unknown PD system {system!r}: expected one of {sorted(PD_SYSTEMS)} or 'module:Class'")


def pk_component(spec, steady_state: bool = True, name: str | None = None):
    """The PK component of a card's PK specification (:class:`pkpd.model.card.PKSpec`)."""
    name = name or spec.drug or "pk"
    dose_params = tuple(n for n in spec.parameters if _dose_quantity(n) is not None)
    if spec.driver in ("closed_form", "covariates"):
        return ClosedFormPK(spec.model, bool(spec.absorption), dose_params, steady_state, name)
    if spec.driver == "kpd":
        return KPD(dose_params, steady_state, name)
    if spec.driver == "concentration":
        return ConcentrationColumn(spec.column, spec.interpolation or "linear", name)
    if spec.driver == "ode":
        return CompartmentalPK(int(spec.compartments), bool(spec.absorption), spec.elimination or "linear",
                               spec.binding or "none", tuple(sorted(spec.rename.items())), name, dose_params,
                               bool(spec.dual_absorption))
    raise ModelError(f"unknown PK driver {spec.driver!r}")  # pragma: no cover - validated by the card loader


def pd_component(system: str, options: dict, name: str = "pd", rename: dict | None = None):
    """A PD component from a card's ``system`` and constructor ``options``, its parameters
    ``rename``d (own name -> model name, :class:`pkpd.model.renamed.Renamed`) when given."""
    cls = pd_class(system)
    instance = cls(**options) if issubclass(cls, PDSystem) else cls(**options, name=name)
    component = PDSystemComponent(instance, name=name) if isinstance(instance, PDSystem) else instance
    return Renamed(component, tuple(sorted(rename.items()))) if rename else component
