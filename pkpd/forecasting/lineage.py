r"""The blood-count lineages: units, CTCAE grades, recovery, readiness, transfusion and engraftment.

One frozen :class:`Lineage` record per count that the forecasts know (:data:`LINEAGES`:
``ANC``, ``PLT``, ``HGB``, ``WBC``). Everything that is lineage-specific in
:mod:`pkpd.forecasting.endpoints`, :mod:`pkpd.forecasting.forecast` and the forecast
report is read from this table, so adding a lineage is one new record.

CTCAE v5.0 grades (NCI 2017; MODELS.md section 6.1). A value *strictly below* the
lower bound :math:`b_g` of grade :math:`g` is at least grade :math:`g`:

.. math::

    \mathrm{grade}(y) = \max\{\, g : y < b_g \,\} \quad (0 \text{ if none}),

with :math:`b_1` the lower limit of normal (LLN) of the laboratory. The grade-1 bounds
below are typical LLNs, to be replaced by the laboratory's (``lln=`` in
:func:`pkpd.forecasting.endpoints.ctcae_grade`):

======  ==========  =====  =====  =====  =====================================
count   unit        G2 <   G3 <   G4 <   grade 1 (< LLN, default)
======  ==========  =====  =====  =====  =====================================
ANC     10^9/L      1.5    1.0    0.5    2.0
PLT     10^9/L      75     50     25     150
WBC     10^9/L      3.0    2.0    1.0    4.0
HGB     g/dL        10.0   8.0    --     12.0 (grade 4 anaemia is clinical)
======  ==========  =====  =====  =====  =====================================

Other thresholds (defaults of the forecasts; protocols differ, so every one can be
overridden by the caller):

* **recovery** (``recovery_h`` of the forecast JSON; first time :math:`y \ge` threshold
  after the nadir): ANC 1.0 and 1.5, PLT 100 and 75, HGB 10, WBC 3.0 ×10^9/L (g/dL).
  Re-treatment criteria are protocol-specific: ANC >= 1.0 and PLT >= 75 in one trial,
  ANC >= 1.5 and PLT >= 100 commonly (MODELS.md section 6.2);
* **readiness** for the next cycle (``p_ready``: :math:`P(y \ge r)` at the planned start):
  ANC >= 1.5, PLT >= 100 (none for HGB and WBC);
* **transfusion** (``p_transfusion``: :math:`P(\min y < r)` in the forecast cycle): PLT
  10 (prophylactic platelet transfusion; Kaufman RM et al., AABB guideline, Ann Intern
  Med 2015;162:205) and 20 ×10^9/L (with fever or bleeding risk); HGB 7 (restrictive red-cell
  transfusion) and 8 g/dL (cardiovascular disease; Carson JL et al., AABB guideline,
  JAMA 2023;330:1892). These are guideline defaults, not part of MODELS.md;
* **engraftment** after HSCT (ASTCT consensus, Kharfan-Dabaja MA et al. 2021, as
  tabulated in Bone Marrow Transplant 2024;59:832; MODELS.md section 6.3): neutrophils,
  the first of 3 consecutive days with ANC >= 0.5 ×10^9/L after the nadir; platelets,
  the first of 3 consecutive days with PLT >= 20 ×10^9/L without a platelet transfusion
  in the preceding 7 days (:func:`pkpd.forecasting.endpoints.engraftment_day`).

Baselines ("recovery to baseline") are each draw's individual value of the model
parameter that holds the lineage's steady state, found by :func:`baseline_parameter`:
a mapping ``baseline_parameters = {lineage: parameter}`` declared by the model or one of
its parts (PD system, component) takes precedence; otherwise the lineage's own names (``ANC0``, ``PLT0``,
...) and, for a model with a single count output, the generic steady-state names of
:data:`GENERIC_BASELINE_PARAMETERS` (``Circ0`` of the Friberg cards, ``BASE`` of
turnover models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import PkpdError

__all__ = [
    "Engraftment",
    "Lineage",
    "LINEAGES",
    "GENERIC_BASELINE_PARAMETERS",
    "get_lineage",
    "known_lineages",
    "model_lineages",
    "baseline_parameter",
]

#: Parameter names that hold the steady state of the (single) circulating pool of a PD
#: system, used for a lineage's baseline when the model has one count output only.
GENERIC_BASELINE_PARAMETERS = ("Circ0", "BASE")


@dataclass(frozen=True)
class Engraftment:
    """Engraftment definition: the first of ``consecutive_days`` successive days with the
    count ``>= threshold`` (after the nadir), with no transfusion of this lineage in the
    ``transfusion_free_days`` days before the first of them (0: no such condition).

    References
    ----------
    Kharfan-Dabaja MA et al., ASTCT consensus definitions (2021), as tabulated in Bone
    Marrow Transplant 2024;59:832; MODELS.md section 6.3.
    """

    threshold: float
    consecutive_days: int = 3
    transfusion_free_days: int = 0

    def __post_init__(self):
        if not self.threshold > 0:
            raise PkpdError(f"engraftment threshold must be > 0, got {self.threshold!r}")
        if int(self.consecutive_days) < 1:
            raise PkpdError(f"engraftment consecutive_days must be >= 1, got {self.consecutive_days!r}")
        if int(self.transfusion_free_days) < 0:
            raise PkpdError(f"engraftment transfusion_free_days must be >= 0, got {self.transfusion_free_days!r}")


@dataclass(frozen=True)
class Lineage:
    """One blood-count lineage (see the module docstring for the values and sources).

    Parameters
    ----------
    name : str
        Observation type and model output name (``"ANC"``).
    title : str
        Plain name (``"absolute neutrophil count"``).
    unit : str
        Canonical unit (that of :func:`pkpd.units.canonical_unit`).
    ctcae_term : str
        CTCAE v5.0 adverse-event term graded from the value.
    grade_bounds : tuple of (int, float)
        ``((grade, lower bound), ...)``: a value strictly below the bound is at least
        that grade; grade 1 is the default LLN. Grades that are not assigned from a value
        (anaemia grade 4) are absent.
    recovery : tuple of float
        Default recovery thresholds (``recovery_h`` keys).
    readiness : float or None
        Count required to start the next cycle (``p_ready``), None when not used.
    transfusion : tuple of float
        Transfusion thresholds (``p_transfusion`` keys); empty when not transfused.
    engraftment : Engraftment or None
        Post-transplant engraftment definition, None when there is none.
    baseline_parameters : tuple of str
        Names a model may give this lineage's own steady-state parameter (``"PLT0"``);
        see :func:`baseline_parameter`.
    """

    name: str
    title: str
    unit: str
    ctcae_term: str
    grade_bounds: tuple
    recovery: tuple = ()
    readiness: float | None = None
    transfusion: tuple = ()
    engraftment: Engraftment | None = None
    baseline_parameters: tuple = ()

    def __post_init__(self):
        grades = [g for g, _ in self.grade_bounds]
        if sorted(grades) != grades or len(set(grades)) != len(grades) or not all(1 <= g <= 4 for g in grades):
            raise PkpdError(f"lineage {self.name}: grade_bounds must list distinct grades 1..4 in order, got {grades}")
        bounds = [b for _, b in self.grade_bounds]
        if any(b1 <= b2 for b1, b2 in zip(bounds, bounds[1:])):
            raise PkpdError(f"lineage {self.name}: grade bounds must decrease with the grade, got {self.grade_bounds}")

    @property
    def grades(self) -> Mapping[int, float]:
        """``{grade: lower bound}`` (read-only) of the grades assigned from a value."""
        return MappingProxyType(dict(self.grade_bounds))

    @property
    def lln(self) -> float:
        """Default lower limit of normal (the grade-1 bound)."""
        return dict(self.grade_bounds)[1]

    @property
    def max_grade(self) -> int:
        """Highest grade assigned from a value (3 for HGB, 4 otherwise)."""
        return max(g for g, _ in self.grade_bounds)


#: The lineage table, by name.
LINEAGES: Mapping[str, Lineage] = MappingProxyType({
    lin.name: lin
    for lin in (
        Lineage(
            name="ANC",
            title="absolute neutrophil count",
            unit="10^9/L",
            ctcae_term="Neutrophil count decreased",
            grade_bounds=((1, 2.0), (2, 1.5), (3, 1.0), (4, 0.5)),
            recovery=(1.0, 1.5),
            readiness=1.5,
            engraftment=Engraftment(threshold=0.5, consecutive_days=3),
            baseline_parameters=("ANC0",),
        ),
        Lineage(
            name="PLT",
            title="platelet count",
            unit="10^9/L",
            ctcae_term="Platelet count decreased",
            grade_bounds=((1, 150.0), (2, 75.0), (3, 50.0), (4, 25.0)),
            recovery=(100.0, 75.0),
            readiness=100.0,
            transfusion=(10.0, 20.0),
            engraftment=Engraftment(threshold=20.0, consecutive_days=3, transfusion_free_days=7),
            baseline_parameters=("PLT0",),
        ),
        Lineage(
            name="HGB",
            title="haemoglobin",
            unit="g/dL",
            ctcae_term="Anemia",
            grade_bounds=((1, 12.0), (2, 10.0), (3, 8.0)),
            recovery=(10.0,),
            transfusion=(7.0, 8.0),
            baseline_parameters=("HGB0", "Hb0"),
        ),
        Lineage(
            name="WBC",
            title="white blood cell count",
            unit="10^9/L",
            ctcae_term="White blood cell decreased",
            grade_bounds=((1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)),
            recovery=(3.0,),
            baseline_parameters=("WBC0",),
        ),
    )
})


def known_lineages() -> tuple[str, ...]:
    """Names of the lineages in :data:`LINEAGES`."""
    return tuple(LINEAGES)


def get_lineage(name) -> Lineage:
    """The :class:`Lineage` of a name (case-insensitive) or the record itself.

    Raises
    ------
    PkpdError
        For a name that is not in the table (the message lists the known ones).
    """
    if isinstance(name, Lineage):
        return name
    key = str(name).upper()
    if key not in LINEAGES:
        raise PkpdError(f"unknown lineage {name!r}: the lineage table knows {', '.join(LINEAGES)}")
    return LINEAGES[key]


def model_lineages(outputs: Iterable[str]) -> tuple[str, ...]:
    """The outputs (in their order) that are lineages of the table."""
    return tuple(o for o in outputs if str(o).upper() in LINEAGES)


def _declared(obj) -> Mapping | None:
    table = getattr(obj, "baseline_parameters", None)
    return table if isinstance(table, Mapping) else None


def _owners(model) -> list:
    """The model, its compiled dynamics and their parts (PD system; components and the PD systems they
    wrap), in that order: the places a ``baseline_parameters`` declaration may sit."""
    dynamics = getattr(model, "dynamics", None)
    parts = [getattr(dynamics, "pd", None), *tuple(getattr(dynamics, "components", None) or ())]
    owners = [model, dynamics]
    for part in parts:
        if part is not None:
            owners += [part, getattr(part, "system", None)]
    return [o for o in owners if o is not None]


def baseline_parameter(model, lineage) -> str | None:
    """Name of the model parameter holding a lineage's baseline (steady-state count), or None.

    Looked up, in order:

    1. a mapping ``baseline_parameters = {lineage: parameter}`` declared by the model, its
       dynamics, or one of their parts (the PD system, a component, the PD system a
       component wraps), first found first: the model's own declaration (a parameter
       name, or None to say "no baseline parameter");
    2. the lineage's own names (:attr:`Lineage.baseline_parameters`, e.g. ``"PLT0"``);
    3. for a model with one count output only, :data:`GENERIC_BASELINE_PARAMETERS`
       (``Circ0`` of the Friberg cards, ``BASE`` of turnover models).

    Parameters
    ----------
    model : pkpd.Model
        Anything with ``parameter_names`` and ``outputs`` (and optionally the mappings).
    lineage : str or Lineage

    Raises
    ------
    PkpdError
        A declared parameter that the model does not have.
    """
    lin = get_lineage(lineage)
    names = tuple(model.parameter_names)
    for owner in _owners(model):
        table = _declared(owner)
        if table is not None and lin.name in table:
            name = table[lin.name]
            if name is not None and name not in names:
                raise PkpdError(f"{type(owner).__name__} declares {name!r} as the {lin.name} baseline parameter, "
                                f"but the model's parameters are {list(names)}")
            return name
    for name in lin.baseline_parameters:
        if name in names:
            return name
    if len(model_lineages(getattr(model, "outputs", ()))) == 1:
        for name in GENERIC_BASELINE_PARAMETERS:
            if name in names:
                return name
    return None
