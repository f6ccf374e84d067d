"""pkpd: Bayesian PK/PD modelling of chemotherapy-induced myelosuppression in JAX.

Importing pkpd changes no global JAX setting; call :func:`pkpd.enable_x64` at your
entry point (the CLI does) before creating arrays.
"""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("pkpd-myelo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

from .cards import ModelCard as ModelCard
from .cards import list_cards as list_cards
from .cards import load_card as load_card
from .config import enable_compilation_cache as enable_compilation_cache
from .config import enable_x64 as enable_x64
from .dataset import Dataset as Dataset
from .dataset import ObservationArrays as ObservationArrays
from .dataset import read_dataset as read_dataset
from .errors import DatasetError as DatasetError
from .errors import ModelError as ModelError
from .errors import PkpdError as PkpdError
from .fit import Fit as Fit
from .fit import fit as fit
from .fit import load_fit as load_fit
from .forecast import Forecast as Forecast
from .forecast import forecast as forecast
from .model import Model as Model
from .model import load_model as load_model
from .predict import predict_pk as predict_pk
from .recommend import recommend_dose as recommend_dose
from .regimen import Regimen as Regimen
from .regimen import parse_regimen as parse_regimen
from .simulate import simulate as simulate
from .solve import SolverOptions as SolverOptions
from .statmodel import FitSpec as FitSpec
from .units import canonical_unit as canonical_unit
from .units import convert_units as convert_units
from .validation import ValidationReport as ValidationReport
from .validation import Violation as Violation
from .validation import check_dataset as check_dataset
