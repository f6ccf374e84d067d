"""pkpd: Bayesian PK/PD modelling of chemotherapy-induced myelosuppression in JAX.

Importing pkpd changes no global JAX setting; call :func:`pkpd.enable_x64` at your
entry point (the CLI does) before creating arrays.

The public names below are imported on first use (PEP 562 module ``__getattr__``), so
``import pkpd`` -- and the ``pkpd`` command, whose entry point imports ``pkpd.cli`` --
does not load JAX, NumPyro or ArviZ until they are needed. That keeps the command's
start-up fast and lets it handle Ctrl-C from its first moment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

# public name -> module defining it (relative to this package)
_EXPORTS = {
    "ModelCard": ".model.card", "list_cards": ".model.card", "load_card": ".model.card",
    "enable_compilation_cache": ".config", "enable_x64": ".config",
    "Dataset": ".data.dataset", "ObservationArrays": ".data.dataset", "read_dataset": ".data.dataset",
    "DatasetError": ".errors", "ModelError": ".errors", "PkpdError": ".errors",
    "Fit": ".infer.fit", "fit": ".infer.fit", "load_fit": ".infer.fit",
    "Forecast": ".forecasting.forecast", "forecast": ".forecasting.forecast",
    "Model": ".model.model", "load_model": ".model.model",
    "predict_pk": ".model.pk.predict",
    "recommend_dose": ".forecasting.recommend",
    "Comparison": ".forecasting.compare", "compare_regimens": ".forecasting.compare",
    "Plan": ".forecasting.planner", "plan": ".forecasting.planner",
    "Regimen": ".dosing.regimen", "parse_regimen": ".dosing.regimen", "DrugInput": ".dosing.regimen",
    "System": ".model.system", "Route": ".model.system",
    "simulate": ".stats.simulate",
    "report": ".reporting.report",
    "SolverOptions": ".solve.solver",
    "FitSpec": ".stats.population",
    "canonical_unit": ".units", "convert_units": ".units",
    "ValidationReport": ".data.validation", "Violation": ".data.validation", "check_dataset": ".data.validation",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pkpd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .config import enable_compilation_cache as enable_compilation_cache
    from .config import enable_x64 as enable_x64
    from .data.dataset import Dataset as Dataset
    from .data.dataset import ObservationArrays as ObservationArrays
    from .data.dataset import read_dataset as read_dataset
    from .data.validation import ValidationReport as ValidationReport
    from .data.validation import Violation as Violation
    from .data.validation import check_dataset as check_dataset
    from .dosing.regimen import DrugInput as DrugInput
    from .dosing.regimen import Regimen as Regimen
    from .dosing.regimen import parse_regimen as parse_regimen
    from .errors import DatasetError as DatasetError
    from .errors import ModelError as ModelError
    from .errors import PkpdError as PkpdError
    from .forecasting.compare import Comparison as Comparison
    from .forecasting.compare import compare_regimens as compare_regimens
    from .forecasting.forecast import Forecast as Forecast
    from .forecasting.forecast import forecast as forecast
    from .forecasting.planner import Plan as Plan
    from .forecasting.planner import plan as plan
    from .forecasting.recommend import recommend_dose as recommend_dose
    from .infer.fit import Fit as Fit
    from .infer.fit import fit as fit
    from .infer.fit import load_fit as load_fit
    from .model.card import ModelCard as ModelCard
    from .model.card import list_cards as list_cards
    from .model.card import load_card as load_card
    from .model.model import Model as Model
    from .model.model import load_model as load_model
    from .model.pk.predict import predict_pk as predict_pk
    from .model.system import Route as Route
    from .model.system import System as System
    from .solve.solver import SolverOptions as SolverOptions
    from .stats.population import FitSpec as FitSpec
    from .reporting.report import report as report
    from .stats.simulate import simulate as simulate
    from .units import canonical_unit as canonical_unit
    from .units import convert_units as convert_units
