"""Model cards: published PK/PD models as validated TOML files.

A model card (``models/<name>.toml`` at the top of the repository) holds one
published model: its source and reliability, the PK driver, the myelosuppression
(PD) structure with typical values and inter-individual variability (IIV),
residual-error models and covariate effects. The schema is documented field by
field in ``models/README.md``; :func:`load_card` parses and validates a card into
frozen dataclasses, and every malformed field raises :class:`pkpd.errors.ModelError`
naming the file, the dotted field path and what was expected.

Where the cards are found (first match wins):

1. ``$PKPD_MODELS_DIR`` when set;
2. ``<checkout>/models`` in a source checkout (the folder beside the ``pkpd``
   package, recognised by the ``pyproject.toml`` next to it);
3. the package data ``pkpd/_models`` of an installed wheel.

Examples
--------
>>> card = load_card("kloft2006_docetaxel")
>>> card.pd.options["drug_effect"], round(card.conc_scale, 6)
('linear', 1.237624)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..units import DEFAULT_OBSERVATION_TYPES

_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

__all__ = [
    "Reference",
    "ParameterSpec",
    "PKSpec",
    "PDSpec",
    "ErrorSpec",
    "CovariateEffect",
    "ModelCard",
    "models_dir",
    "load_card",
    "list_cards",
    "concentration_scale",
    "RELIABILITY_TAGS",
    "OUTPUTS",
    "PK_DRIVERS",
    "PD_SYSTEMS",
    "DRUG_EFFECTS",
    "ERROR_MODELS",
    "COVARIATE_TYPES",
]

#: Reliability tags of MODELS.md section 0.
#: Source tags (MODELS.md section 0), plus "A": a value assumed by the card's author.
RELIABILITY_TAGS = ("P", "S", "T", "D", "U", "A")
#: Observable outputs a card may declare.
OUTPUTS = ("ANC", "WBC", "PLT", "HGB", "CONC")
#: PK drivers (schema 1; schema 2 adds "ode").
PK_DRIVERS = ("closed_form", "covariates", "concentration", "kpd")
#: Outputs of schema-2 cards (plus ``CONC:<drug>``).
OUTPUTS_V2 = ("ANC", "WBC", "PLT", "HGB", "GCSF", "EPO", "CONC")
#: Default DVID of each output in data (inverse of ``pkpd.units.DEFAULT_OBSERVATION_TYPES``).
DEFAULT_DVID = {name: dvid for dvid, name in DEFAULT_OBSERVATION_TYPES.items()}
#: Closed-form PK models and their structural parameters.
PK_MODELS = {
    "1cmt": ("CL", "V1"),
    "2cmt": ("CL", "V1", "Q2", "V2"),
    "3cmt": ("CL", "V1", "Q2", "V2", "Q3", "V3"),
}
#: Interpolation of a concentration column between records.
INTERPOLATIONS = ("linear", "locf", "nocb")
#: Dose units of a card.
DOSE_UNITS = ("mg", "ug", "umol")
#: PD systems.
PD_SYSTEMS = ("friberg",)
#: Drug-effect forms and the parameters each needs.
DRUG_EFFECTS = {
    "linear": ("slope",),
    "emax": ("Emax", "EC50"),
    "sigmoid_emax": ("Emax", "EC50", "hill"),
    "power": ("alpha", "beta"),
    "capped_linear": ("slope",),
}
#: Optional Friberg switches and the parameters each adds.
FRIBERG_SWITCHES = {"separate_kcirc": ("kcirc",), "stem_cell": ("ftr",), "dexamethasone": ("IP0", "MIT")}
#: Residual-error models and their SD fields.
ERROR_MODELS = {
    "log_additive": ("sd",),
    "proportional": ("sd",),
    "additive": ("sd",),
    "combined": ("sd_add", "sd_prop"),
}
#: Covariate-effect types and their numeric fields (required, optional).
COVARIATE_TYPES = {
    "categorical": (("levels",), ()),
    "threshold": (("threshold", "effect"), ()),
    "linear": (("reference", "effect"), ("effect_above",)),
    "power": (("reference", "effect"), ()),
}
#: IIV forms.
IIV_FORMS = ("omega2", "omega", "cv")



# ----------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Reference:
    """Bibliographic source of a card's numbers.

    Attributes
    ----------
    authors, title, journal : str
        Citation; ``journal`` holds volume/pages (or the repository for code sources).
    year : int
    doi : str or None
        May be absent only when ``notes`` explains why (e.g. a code repository).
    reliability : str
        MODELS.md tag of the numbers: ``P``, ``S``, ``T``, ``D`` or ``U``.
    values_from : str or None
        Where the numbers were actually read (e.g. a DDMoRe model id).
    notes, url : str or None
    """

    authors: str
    year: int
    title: str
    journal: str
    doi: str | None
    reliability: str
    values_from: str | None = None
    notes: str | None = None
    url: str | None = None

    @property
    def short(self) -> str:
        """``"Kloft 2006"``: first author's surname and year."""
        tokens = self.authors.split(",")[0].split()
        if len(tokens) > 1 and tokens[-1].isalpha() and tokens[-1].isupper():
            tokens = tokens[:-1]  # drop the initials
        return f"{' '.join(tokens)} {self.year}"


@dataclass(frozen=True)
class ParameterSpec:
    """One model parameter.

    Attributes
    ----------
    name : str
    value : float or None
        Typical value; ``None`` when ``column`` gives a per-subject value.
    unit : str
    omega : float
        SD of the log-normal eta (converted from the card's form); 0.0 without IIV.
    iiv_given : float or None
        The IIV number as written in the card.
    iiv_form : str or None
        ``"omega2"`` (variance), ``"omega"`` (SD) or ``"cv"`` (fraction).
    fixed : bool
        Never estimated.
    column : str or None
        Data column holding the per-subject value.
    lower, upper : float or None
        Optional bounds.
    tag, note : str or None
        Source tag of this value when it differs from the card's, and a note.
    """

    name: str
    value: float | None
    unit: str
    omega: float = 0.0
    iiv_given: float | None = None
    iiv_form: str | None = None
    fixed: bool = False
    column: str | None = None
    lower: float | None = None
    upper: float | None = None
    tag: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PKSpec:
    """PK part of a card: how the drug concentration (or K-PD amount) is produced."""

    driver: str
    model: str | None
    absorption: bool
    dose_unit: str
    molar_mass: float | None
    concentration_unit: str | None
    column: str | None
    interpolation: str | None
    parameters: dict
    reference: str | None = None
    notes: str | None = None
    # schema 2
    drug: str | None = None
    cmt: dict = field(default_factory=dict)
    compartments: int | None = None
    elimination: str | None = None
    binding: str | None = None
    rename: dict = field(default_factory=dict)
    #: ``absorption = "dual_sequential"`` (ODE PK): KA until TSWITCH after each dose, then KA2.
    dual_absorption: bool = False


@dataclass(frozen=True)
class ProductSpec:
    """A product of a schema-2 ``[[pd]]`` component: what regimens dose into one of its states.

    ``name`` is the regimen's drug name (``"platelets"``, ``"rbc"``, ``"epoetin"``), dosed
    into the ``cmt`` target ``target``. A blood product has ``unit_amount`` (the state
    amount one product ``unit`` adds); a drug whose kinetics live in the component has
    ``dose_unit`` (data amounts convert to it) instead. ``output`` names the observed
    output the product raises (the transfusion policy's lineage); None: every output of
    the component.
    """

    name: str
    target: str
    unit_amount: float | None = None
    dose_unit: str | None = None
    output: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PDSpec:
    """PD part of a card.

    ``options`` holds ``n_transit``, ``drug_effect``, ``separate_kcirc``,
    ``stem_cell`` and ``dexamethasone``.
    """

    system: str
    options: dict
    concentration_unit: str | None
    parameters: dict
    notes: str | None = None
    # schema 2
    name: str | None = None
    cmt: dict = field(default_factory=dict)
    #: The products regimens dose into this component's states (:class:`ProductSpec`, in
    #: card order; ``[[pd]] product`` as one table or an array of tables).
    products: tuple = ()
    #: Parameters of the component that go by other names in the model (own -> model
    #: name: ``rename = { MTT = "MTT_PLT" }``), for two components of one family.
    rename: dict = field(default_factory=dict)

    def product_for(self, target: str):
        """The :class:`ProductSpec` dosed into the ``cmt`` target ``target``, or None."""
        return next((p for p in self.products if p.target == target), None)


@dataclass(frozen=True)
class CouplingSpec:
    """A schema-2 coupling: component input <- ``signal`` (``"component.signal"``), times ``scale``.

    ``scale`` is given, or derived from the source PK concentration unit to ``unit``.
    """

    input: str
    signal: str
    scale: float = 1.0
    unit: str | None = None


@dataclass(frozen=True)
class ObserveSpec:
    """A schema-2 output: ``signal`` (``"component.signal"``) in ``unit``."""

    output: str
    signal: str
    unit: str | None = None
    dvid: int | None = None


@dataclass(frozen=True)
class ErrorSpec:
    """Residual-error model of one output (``sd`` or ``sd_add``/``sd_prop``)."""

    output: str
    model: str
    sd: float | None = None
    sd_add: float | None = None
    sd_prop: float | None = None
    tag: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class CovariateEffect:
    """Multiplicative covariate effect on a parameter.

    ``categorical``: x (1 + levels[cov]); ``threshold``: x (1 + effect) when
    cov >= threshold; ``linear``: x (1 + effect (cov - reference)), with
    ``effect_above`` used instead when cov > reference (hockey stick); ``power``:
    x (cov / reference) ** effect.
    """

    parameter: str
    covariate: str
    type: str
    reference: float | None = None
    effect: float | None = None
    effect_above: float | None = None
    threshold: float | None = None
    levels: dict = field(default_factory=dict)
    note: str | None = None

    def factor(self, value: float) -> float:
        """Multiplicative factor for covariate value ``value`` (plain Python/NumPy)."""
        if self.type == "categorical":
            return 1.0 + self.levels.get(float(value), 0.0)
        if self.type == "threshold":
            return 1.0 + (self.effect if value >= self.threshold else 0.0)
        if self.type == "linear":
            slope = self.effect_above if (self.effect_above is not None and value > self.reference) else self.effect
            return 1.0 + slope * (value - self.reference)
        return (value / self.reference) ** self.effect


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (see ``models/README.md``)."""

    name: str
    path: Path
    title: str
    drug: str
    outputs: tuple
    reference: Reference
    pk: PKSpec
    pd: PDSpec
    error: dict
    covariates: tuple
    raw: dict
    notes: str | None = None
    # schema 2 (schema-1 cards have one PK and one PD: pks == (pk,), pds == (pd,))
    schema: int = 1
    pks: tuple = ()
    pds: tuple = ()
    couplings: dict = field(default_factory=dict)
    observe: dict = field(default_factory=dict)
    solver: str | None = None
    #: IIV correlations (schema 2, ``[iiv_correlations]``): ``{(param_a, param_b): rho}``.
    iiv_correlations: dict = field(default_factory=dict)

    @property
    def parameters(self) -> dict:
        """All parameters, PK first then PD, in card order: name -> :class:`ParameterSpec`."""
        out = {}
        for section in (self.pks if self.schema == 2 else (self.pk,)) + (self.pds or (self.pd,)):
            out.update(section.parameters)
        return out

    @property
    def output_dvid(self) -> dict:
        """DVID of each output in data: ``{output: dvid}`` (schema 1: the default mapping)."""
        if self.schema == 2:
            return {o: spec.dvid for o, spec in self.observe.items() if spec.dvid is not None}
        return {o: DEFAULT_DVID[o] for o in self.outputs if o in DEFAULT_DVID}

    @property
    def drugs(self) -> tuple:
        """The drugs of the card (one for schema 1)."""
        return tuple(p.drug for p in self.pks) if self.schema == 2 else (self.drug,)

    @property
    def conc_scale(self) -> float:
        """Factor taking the PK concentration unit to the unit the PD parameters expect (schema 1)."""
        if self.schema == 2:
            link = self.couplings.get(f"{self.pd.name}.drug")
            return link.scale if link is not None else 1.0
        return concentration_scale(self.pk.concentration_unit, self.pd.concentration_unit,
                                   self.pk.molar_mass, where=str(self.path))

    def typical_values(self) -> dict:
        """Typical values ``name -> value`` of all parameters not read from a data column."""
        return {n: p.value for n, p in self.parameters.items() if p.column is None}

    def omegas(self) -> dict:
        """IIV as SD of the log-normal eta, for the parameters that have one."""
        return {n: p.omega for n, p in self.parameters.items() if p.omega > 0}

    def columns(self) -> dict:
        """Data columns needed per subject: parameter name -> column name."""
        out = {n: p.column for n, p in self.parameters.items() if p.column is not None}
        if self.pk.column:
            out["CONC"] = self.pk.column
        return out


# ----------------------------------------------------------------------------- units


def _conc_unit(unit: str | None) -> str | None:
    """The registry's spelling of a concentration unit (:mod:`pkpd.units`), None if unknown."""
    from .. import units

    if unit is None:
        return None
    try:
        return units.normalise_concentration_unit(unit)
    except ModelError:
        return None


def concentration_scale(from_unit: str | None, to_unit: str | None, molar_mass: float | None = None,
                        where: str = "") -> float:
    """Factor converting concentrations in ``from_unit`` to ``to_unit`` (the unit registry,
    :func:`pkpd.units.concentration_factor`, with the card's error wording).

    A conversion between mass and molar units needs ``molar_mass`` (g/mol). ``None`` on
    either side (a K-PD card) gives 1.

    Examples
    --------
    >>> concentration_scale("mg/L", "umol/L", 808.0) == 1000 / 808
    True
    >>> concentration_scale("mg/L", "ng/mL")
    1000.0
    """
    from .. import units

    if from_unit is None or to_unit is None:
        return 1.0
    prefix = f"{where}: " if where else ""
    for given in (from_unit, to_unit):
        try:
            units.normalise_concentration_unit(given)
        except ModelError:
            raise ModelError(f"{prefix}unknown concentration unit {given!r} "
                             f"(accepted: {', '.join(units.CONCENTRATION_UNITS)})") from None
    try:
        return units.concentration_factor(from_unit, to_unit, molar_mass)
    except ModelError as err:
        if molar_mass is None:
            raise ModelError(f"{prefix}converting {from_unit} to {to_unit} needs pk.molar_mass (g/mol)") from None
        raise ModelError(f"{prefix}{err}") from None


# ----------------------------------------------------------------------------- lookup


def models_dir() -> Path:
    """Folder holding the shipped model cards (see the module docstring for the order)."""
    env = os.environ.get("PKPD_MODELS_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ModelError(f"PKPD_MODELS_DIR={env!r} is not a directory")
        return path
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "models").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "models"
    from importlib import resources

    data = resources.files("pkpd") / "_models"
    if data.is_dir():
        return Path(str(data))
    raise ModelError(
        f"no model-card folder found (looked for {checkout / 'models'} and the package data pkpd/_models); "
        "set PKPD_MODELS_DIR to a folder of .toml cards"
    )


def _card_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.toml") if p.is_file())


def load_card(name_or_path) -> ModelCard:
    """Load and validate a model card.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A card name (``"kloft2006_docetaxel"``, looked up in :func:`models_dir`) or
        the path of any ``.toml`` file.

    Returns
    -------
    ModelCard

    Raises
    ------
    ModelError
        Unknown card (the message lists the available names) or a malformed card
        (the message names the file, the field and what was expected).
    """
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = text.endswith(".toml") or os.sep in text or "/" in text
    if looks_like_path:
        if not candidate.is_file():
            raise ModelError(f"model card file {text!r} not found")
        return _load_file(candidate)
    folder = models_dir()
    path = folder / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(p.stem for p in _card_files(folder)) or "none"
        raise ModelError(f"unknown model card {text!r} in {folder} (available: {names})")
    return _load_file(path)


def list_cards() -> list[ModelCard]:
    """All cards in :func:`models_dir`, validated, sorted by name."""
    return [_load_file(p) for p in _card_files(models_dir())]


def _load_file(path: Path) -> ModelCard:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ModelError(f"{path}: invalid TOML: {err}") from None
    except OSError as err:
        raise ModelError(f"{path}: cannot read model card: {err.strerror or err}") from None
    return _Validator(path).card(raw)


# ----------------------------------------------------------------------------- validation


class _Validator:
    """Turns a parsed TOML dict into a :class:`ModelCard`, raising on the first problem."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def fail(self, field_path: str, expected: str, got=None, *, has_got: bool = True):
        msg = f"{self.path.name}: {field_path}: expected {expected}"
        if has_got:
            msg += f", got {got!r}"
        raise ModelError(f"{msg} (in {self.path})")

    def missing(self, field_path: str, expected: str):
        raise ModelError(f"{self.path.name}: {field_path}: missing required field ({expected}) (in {self.path})")

    # --- primitive getters
    def table(self, d: dict, key: str, where: str, required: bool = True) -> dict:
        if key not in d:
            if required:
                self.missing(_join(where, key), "a table")
            return {}
        value = d[key]
        if not isinstance(value, dict):
            self.fail(_join(where, key), "a table", value)
        return value

    def string(self, d: dict, key: str, where: str, required: bool = True, choices=None, allow_empty=False):
        path = _join(where, key)
        if key not in d:
            if required:
                self.missing(path, f"one of {', '.join(choices)}" if choices else "a string")
            return None
        value = d[key]
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(path, "a non-empty string", value)
        if choices is not None and value not in choices:
            self.fail(path, f"one of {', '.join(repr(c) for c in choices)}", value)
        return value

    def number(self, d: dict, key: str, where: str, required: bool = True, positive=False, nonneg=False):
        path = _join(where, key)
        if key not in d:
            if required:
                self.missing(path, "a positive number" if positive else "a number")
            return None
        value = d[key]
        what = "a positive number" if positive else ("a non-negative number" if nonneg else "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(path, what, value)
        if (positive and value <= 0) or (nonneg and value < 0):
            self.fail(path, what, value)
        return float(value)

    def boolean(self, d: dict, key: str, where: str, default=False) -> bool:
        if key not in d:
            return default
        value = d[key]
        if not isinstance(value, bool):
            self.fail(_join(where, key), "true or false", value)
        return value

    def integer(self, d: dict, key: str, where: str, default=None, minimum=None) -> int:
        path = _join(where, key)
        if key not in d:
            if default is None:
                self.missing(path, "an integer")
            return default
        value = d[key]
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            self.fail(path, f"an integer >= {minimum}" if minimum is not None else "an integer", value)
        return value

    def known_keys(self, d: dict, allowed, where: str):
        for key in d:
            if key not in allowed:
                self._unknown(_join(where, key), allowed)

    def _unknown(self, path: str, allowed, what: str = "field"):
        raise ModelError(f"{self.path.name}: {path}: unknown {what}, expected one of {', '.join(allowed)} "
                         f"(in {self.path})")

    # --- sections
    def card(self, raw: dict) -> ModelCard:
        if "schema" in raw:
            schema = self.integer(raw, "schema", "", minimum=1)
            if schema not in (1, 2):
                self.fail("schema", "1 or 2", schema)
            if schema == 2:
                return self.card_v2(raw)
            raw = {k: v for k, v in raw.items() if k != "schema"}
        self.known_keys(raw, ("name", "title", "drug", "outputs", "notes", "reference", "pk", "pd", "error",
                              "covariates"), "")
        name = self.string(raw, "name", "")
        if name != self.path.stem:
            self.fail("name", f"the file stem {self.path.stem!r}", name)
        title = self.string(raw, "title", "")
        drug = self.string(raw, "drug", "")
        notes = self.string(raw, "notes", "", required=False)
        outputs = self.outputs(raw)
        reference = self.reference(self.table(raw, "reference", ""))
        pk = self.pk(self.table(raw, "pk", ""))
        pd = self.pd(self.table(raw, "pd", ""), pk)
        if "CONC" in outputs and pk.driver == "kpd":
            self.fail("outputs", "no CONC output with the kpd driver (K-PD models have no concentration)", "CONC",
                      has_got=False)
        errors = self.errors(raw, outputs)
        params = {**pk.parameters, **pd.parameters}
        covariates = self.covariates(raw, params)
        # unit conversion must be possible
        try:
            concentration_scale(pk.concentration_unit, pd.concentration_unit, pk.molar_mass)
        except ModelError:
            self.fail("pk.molar_mass", f"a molar mass (g/mol) to convert {pk.concentration_unit} to "
                      f"{pd.concentration_unit}", None, has_got=False)
        return ModelCard(name=name, path=self.path, title=title, drug=drug, outputs=outputs, reference=reference,
                         pk=pk, pd=pd, error=errors, covariates=covariates, raw=raw, notes=notes)

    def outputs(self, raw: dict) -> tuple:
        if "outputs" not in raw:
            self.missing("outputs", f"a list of {', '.join(OUTPUTS)}")
        value = raw["outputs"]
        if not isinstance(value, list) or not value:
            self.fail("outputs", f"a non-empty list of {', '.join(OUTPUTS)}", value)
        for i, item in enumerate(value):
            if item not in OUTPUTS:
                self.fail(f"outputs[{i}]", f"one of {', '.join(OUTPUTS)}", item)
        if len(set(value)) != len(value):
            self.fail("outputs", "each output once", value)
        return tuple(value)

    def reference(self, d: dict) -> Reference:
        w = "reference"
        self.known_keys(d, ("authors", "year", "title", "journal", "doi", "reliability", "values_from", "notes",
                            "url"), w)
        year = self.integer(d, "year", w, minimum=1900)
        reliability = self.string(d, "reliability", w, choices=RELIABILITY_TAGS)
        doi = self.string(d, "doi", w, required=False, allow_empty=True)
        notes = self.string(d, "notes", w, required=False)
        if not (doi and doi.strip()) and not notes:
            self.missing(_join(w, "doi"), "a DOI; it may be omitted only when reference.notes explains why")
        return Reference(
            authors=self.string(d, "authors", w), year=year, title=self.string(d, "title", w),
            journal=self.string(d, "journal", w), doi=doi.strip() if doi and doi.strip() else None,
            reliability=reliability, values_from=self.string(d, "values_from", w, required=False),
            notes=notes, url=self.string(d, "url", w, required=False),
        )

    def pk(self, d: dict) -> PKSpec:
        w = "pk"
        self.known_keys(d, ("driver", "model", "absorption", "dose_unit", "molar_mass", "concentration_unit",
                            "column", "interpolation", "reference", "notes", "parameters"), w)
        driver = self.string(d, "driver", w, choices=PK_DRIVERS)
        dose_unit = self.string(d, "dose_unit", w, choices=DOSE_UNITS)
        molar_mass = self.number(d, "molar_mass", w, required=False, positive=True)
        absorption = self.boolean(d, "absorption", w)
        model = column = interpolation = conc = None
        if driver in ("closed_form", "covariates"):
            model = self.string(d, "model", w, choices=tuple(PK_MODELS))
            required = PK_MODELS[model] + (("KA",) if absorption else ())
            conc = self.conc_unit(d, w, required=True)
            expected = f"{dose_unit}/L"
            if conc != expected:
                self.fail(_join(w, "concentration_unit"), f"{expected!r} (the dose unit per litre)", d[
                    "concentration_unit"])
        else:
            for key in ("model", "absorption") if driver == "concentration" else ("model",):
                if key in d:
                    self.fail(_join(w, key), f"no {key} with driver {driver!r}", d[key])
            if driver == "concentration":
                column = self.string(d, "column", w)
                interpolation = self.string(d, "interpolation", w, choices=INTERPOLATIONS)
                conc = self.conc_unit(d, w, required=True)
                required = ()
            else:  # kpd
                conc = self.conc_unit(d, w, required=False)
                required = ("KDE",)
        params = d.get("parameters", {})
        if not isinstance(params, dict):
            self.fail("pk.parameters", "a table", params)
        if driver == "concentration" and params:
            self.fail("pk.parameters", "no parameters with driver 'concentration'", sorted(params))
        parameters = self.parameter_set(params, "pk.parameters", required, allow_columns=True)
        if driver == "closed_form":
            for pname, spec in parameters.items():
                if spec.column is not None:
                    self.fail(f"pk.parameters.{pname}.column",
                              "a value, not a column, with driver 'closed_form' (use driver 'covariates')",
                              spec.column)
        return PKSpec(driver=driver, model=model, absorption=absorption, dose_unit=dose_unit, molar_mass=molar_mass,
                      concentration_unit=conc, column=column, interpolation=interpolation, parameters=parameters,
                      reference=self.string(d, "reference", w, required=False),
                      notes=self.string(d, "notes", w, required=False))

    def conc_unit(self, d: dict, where: str, required: bool):
        value = self.string(d, "concentration_unit", where, required=required)
        if value is None:
            return None
        unit = _conc_unit(value)
        if unit is None:
            from .. import units

            self.fail(_join(where, "concentration_unit"), f"one of {', '.join(units.CONCENTRATION_UNITS)}", value)
        return unit

    def pd(self, d: dict, pk: PKSpec) -> PDSpec:
        w = "pd"
        system = d.get("system")
        if isinstance(system, str) and ":" in system:
            return self.pd_plugin(d, pk, system)
        self.known_keys(d, ("system", "n_transit", "drug_effect", "concentration_unit", "notes", "parameters")
                        + tuple(FRIBERG_SWITCHES), w)
        system = self.string(d, "system", w, choices=PD_SYSTEMS)
        n_transit = self.integer(d, "n_transit", w, default=3, minimum=1)
        drug_effect = self.string(d, "drug_effect", w, choices=tuple(DRUG_EFFECTS))
        options = {"n_transit": n_transit, "drug_effect": drug_effect}
        required = ("Circ0", "MTT", "gamma") + DRUG_EFFECTS[drug_effect]
        for switch, extra in FRIBERG_SWITCHES.items():
            options[switch] = self.boolean(d, switch, w)
            if options[switch]:
                required += extra
        conc = self.conc_unit(d, w, required=pk.driver != "kpd")
        params = self.table(d, "parameters", w)
        parameters = self.parameter_set(params, "pd.parameters", required, allow_columns=True)
        return PDSpec(system=system, options=options, concentration_unit=conc, parameters=parameters,
                      notes=self.string(d, "notes", w, required=False))

    def pd_plugin(self, d: dict, pk: PKSpec, system: str) -> PDSpec:
        """A PD system given as ``"package.module:Class"``: the other keys of ``[pd]`` are the
        class's constructor options, and its ``parameter_names`` are the required parameters."""
        import importlib

        w = "pd"
        module, _, cls_name = system.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as err:
            self.fail(f"{w}.system", "an importable 'package.module:Class' PD system", f"{system} ({err})")
        reserved = ("system", "concentration_unit", "notes", "parameters")
        options = {k: v for k, v in d.items() if k not in reserved}
        for k, v in options.items():
            if not isinstance(v, (str, int, float, bool)):
                self.fail(f"{w}.{k}", "a string, number or boolean constructor option", v)
        try:
            instance = cls(**options)
            required = tuple(instance.parameter_names)
        except (TypeError, ValueError) as err:
            self.fail(w, f"options accepted by {system}", f"{options} ({err})")
        conc = self.conc_unit(d, w, required=pk.driver != "kpd")
        params = self.table(d, "parameters", w)
        parameters = self.parameter_set(params, "pd.parameters", required, allow_columns=True)
        return PDSpec(system=system, options=options, concentration_unit=conc, parameters=parameters,
                      notes=self.string(d, "notes", w, required=False))

    def parameter_set(self, params: dict, where: str, required, allow_columns: bool) -> dict:
        for pname in required:
            if pname not in params:
                self.missing(f"{where}.{pname}", f"parameters {', '.join(required)} are required here")
        out = {}
        for pname, spec in params.items():
            if pname not in required:
                self._unknown(f"{where}.{pname}", required, "parameter for this model structure")
            out[pname] = self.parameter(pname, spec, f"{where}.{pname}")
        return out

    def parameter(self, pname: str, d, where: str) -> ParameterSpec:
        if not isinstance(d, dict):
            self.fail(where, "an inline table like { value = 1.0, unit = \"h\" }", d)
        self.known_keys(d, ("value", "unit", "iiv", "iiv_form", "fixed", "column", "lower", "upper", "tag", "note"),
                        where)
        column = self.string(d, "column", where, required=False)
        in_unit = pname == "ftr"
        if column is None and "value" not in d:
            self.missing(f"{where}.value", "a number, or column = \"NAME\" for a per-subject value")
        value = None
        if "value" in d:
            if column is not None:
                self.fail(f"{where}.column", "either value or column, not both", column)
            value = self.number(d, "value", where, positive=not in_unit)
            if in_unit and not 0.0 < value < 1.0:
                self.fail(f"{where}.value", "a number in (0, 1)", d["value"])
        unit = self.string(d, "unit", where)
        iiv = self.number(d, "iiv", where, required=False, nonneg=True)
        form = self.string(d, "iiv_form", where, required=iiv is not None, choices=IIV_FORMS)
        if form is not None and iiv is None:
            self.missing(f"{where}.iiv", "a non-negative number when iiv_form is given")
        if iiv is not None and column is not None:
            self.fail(f"{where}.iiv", "no IIV on a parameter read from a data column", d["iiv"])
        omega = 0.0
        if iiv is not None:
            omega = {"omega2": math.sqrt, "omega": float, "cv": lambda cv: math.sqrt(math.log1p(cv * cv))}[form](iiv)
        lower = self.number(d, "lower", where, required=False)
        upper = self.number(d, "upper", where, required=False)
        if lower is not None and upper is not None and lower >= upper:
            self.fail(f"{where}.upper", f"a number above lower = {lower:g}", d["upper"])
        if value is not None and ((lower is not None and value < lower) or (upper is not None and value > upper)):
            self.fail(f"{where}.value", f"a value within [{lower}, {upper}]", d["value"])
        return ParameterSpec(
            name=pname, value=value, unit=unit, omega=omega, iiv_given=iiv, iiv_form=form,
            fixed=self.boolean(d, "fixed", where), column=column, lower=lower, upper=upper,
            tag=self.string(d, "tag", where, required=False, choices=RELIABILITY_TAGS),
            note=self.string(d, "note", where, required=False),
        )

    def errors(self, raw: dict, outputs: tuple) -> dict:
        table = self.table(raw, "error", "")
        for key in table:
            if key not in outputs:
                self.fail(f"error.{key}", f"an error model only for a declared output ({', '.join(outputs)})", key,
                          has_got=False)
        out = {}
        for name in outputs:
            w = f"error.{name}"
            if name not in table:
                self.missing(w, f"a residual-error table [error.{name}] for output {name}")
            d = table[name]
            if not isinstance(d, dict):
                self.fail(w, "a table", d)
            self.known_keys(d, ("model", "sd", "sd_add", "sd_prop", "tag", "note"), w)
            model = self.string(d, "model", w, choices=tuple(ERROR_MODELS))
            sds = {k: self.number(d, k, w, positive=True) for k in ERROR_MODELS[model]}
            for k in ("sd", "sd_add", "sd_prop"):
                if k in d and k not in sds:
                    self.fail(f"{w}.{k}", f"only {', '.join(ERROR_MODELS[model])} with model {model!r}", d[k])
            out[name] = ErrorSpec(output=name, model=model, **sds,
                                  tag=self.string(d, "tag", w, required=False, choices=RELIABILITY_TAGS),
                                  note=self.string(d, "note", w, required=False))
        return out

    def iiv_correlations(self, table: dict, params: dict) -> dict:
        """``[iiv_correlations]``: ``"A,B" = rho`` between the etas of two parameters with IIV."""
        out = {}
        for key, rho in table.items():
            w = f"iiv_correlations.{key}"
            names = tuple(n.strip() for n in str(key).split(","))
            if len(names) != 2 or names[0] == names[1]:
                self.fail(w, "two different parameter names, 'A,B'", key)
            for n in names:
                if n not in params or not params[n].omega > 0:
                    self.fail(w, "parameters with IIV (iiv > 0)", n)
            if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not -1.0 < float(rho) < 1.0:
                self.fail(w, "a correlation strictly between -1 and 1", rho)
            if names in out or names[::-1] in out:
                self.fail(w, "each pair once", key)
            out[names] = float(rho)
        if out:
            iiv = [n for n, spec in params.items() if spec.omega > 0]
            corr = np.eye(len(iiv))
            for (a, b), rho in out.items():
                corr[iiv.index(a), iiv.index(b)] = corr[iiv.index(b), iiv.index(a)] = rho
            if np.linalg.eigvalsh(corr).min() <= 1e-10:
                self.fail("iiv_correlations", "a positive-definite correlation matrix", out)
        return out

    def covariates(self, raw: dict, params: dict) -> tuple:
        items = raw.get("covariates", [])
        if not isinstance(items, list):
            self.fail("covariates", "an array of tables [[covariates]]", items)
        out = []
        for i, d in enumerate(items):
            w = f"covariates[{i}]"
            if not isinstance(d, dict):
                self.fail(w, "a table", d)
            ctype = self.string(d, "type", w, choices=tuple(COVARIATE_TYPES))
            req, opt = COVARIATE_TYPES[ctype]
            self.known_keys(d, ("parameter", "covariate", "type", "note") + req + opt, w)
            pname = self.string(d, "parameter", w)
            if pname not in params:
                self.fail(f"{w}.parameter", f"a parameter of this card ({', '.join(params)})", pname)
            kwargs = {}
            if ctype == "categorical":
                levels = self.table(d, "levels", w)
                if not levels:
                    self.fail(f"{w}.levels", "at least one level = effect pair", levels)
                parsed = {}
                for key, eff in levels.items():
                    try:
                        level = float(key)
                    except ValueError:
                        self.fail(f"{w}.levels.{key}", "a numeric level (the covariate's value)", key)
                    parsed[level] = self.number(levels, key, f"{w}.levels")
                kwargs["levels"] = parsed
            else:
                for k in req + opt:
                    kwargs[k] = self.number(d, k, w, required=k in req, positive=(ctype == "power" and
                                                                                   k == "reference"))
            out.append(CovariateEffect(parameter=pname, covariate=self.string(d, "covariate", w), type=ctype,
                                       note=self.string(d, "note", w, required=False), **kwargs))
        return tuple(out)


    # ------------------------------------------------------------------ schema 2
    def card_v2(self, raw: dict) -> ModelCard:
        """Schema 2: ``[[pk]]`` per drug, ``[[pd]]`` components, ``[couplings]``, ``[observe]``."""
        from .. import units as _units
        from .registry import pd_component, pk_component
        from .renamed import Renamed

        self.known_keys(raw, ("schema", "name", "title", "notes", "solver", "reference", "pk", "pd", "couplings",
                              "observe", "error", "covariates", "iiv_correlations"), "")
        solver = self.string(raw, "solver", "", required=False, choices=("tsit5", "dopri5", "dopri8", "kvaerno5"))
        name = self.string(raw, "name", "")
        if name != self.path.stem:
            self.fail("name", f"the file stem {self.path.stem!r}", name)
        title = self.string(raw, "title", "")
        notes = self.string(raw, "notes", "", required=False)
        reference = self.reference(self.table(raw, "reference", ""))
        # a model without [[pk]] (drug kinetics written inside a PD component, as for endogenous EPO) is allowed
        pk_tables = self.array(raw, "pk", "[[pk]] tables, one per drug") if "pk" in raw else []
        pks = [self.pk_v2(d, f"pk[{i}]") for i, d in enumerate(pk_tables)]
        pds = [self.pd_v2(d, f"pd[{i}]") for i, d in enumerate(self.array(raw, "pd", "[[pd]] tables"))]
        names = [p.drug for p in pks] + [p.name for p in pds]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            self.fail("pd", "component names distinct from each other and from the drugs", dup)
        # Components (validates structure and options) and the parameters each needs.
        comps = {}
        for i, spec in enumerate(pks):
            try:
                comps[spec.drug] = (f"pk[{i}]", pk_component(spec))
            except (TypeError, ValueError, ModelError) as err:
                self.fail(f"pk[{i}]", "a valid PK structure", str(err))
        for i, spec in enumerate(pds):
            try:
                comps[spec.name] = (f"pd[{i}]", pd_component(spec.system, spec.options, spec.name))
            except (TypeError, ValueError, ModelError) as err:
                self.fail(f"pd[{i}]", f"options accepted by {spec.system}", f"{spec.options} ({err})")
            if spec.rename:
                try:
                    comps[spec.name] = (f"pd[{i}]", Renamed(comps[spec.name][1], tuple(sorted(spec.rename.items()))))
                except ValueError as err:
                    self.fail(f"pd[{i}].rename", "own parameter names mapped to new, distinct names", str(err))
        declared = {}
        for where, section in [(f"pk[{i}]", s) for i, s in enumerate(pks)] + [(f"pd[{i}]", s) for i, s in
                                                                                enumerate(pds)]:
            for pname in section.parameters:
                if pname in declared:
                    self.fail(f"{where}.parameters.{pname}", f"each parameter declared once (already in "
                              f"{declared[pname]}.parameters)", pname)
                declared[pname] = where
        needed = {}
        for cname, (where, comp) in comps.items():
            for pname in comp.parameter_names:
                needed.setdefault(pname, where)
        for pname, where in needed.items():
            if pname not in declared:
                self.missing(f"{where}.parameters.{pname}", f"component {where} needs parameter {pname}; declare it "
                             "in one [pk]/[pd] section")
        for pname, where in declared.items():
            if pname not in needed:
                self._unknown(f"{where}.parameters.{pname}", sorted(needed), "parameter for these components")
        for i, spec in enumerate(pks):
            for target, cmt in spec.cmt.items():
                if target not in comps[spec.drug][1].dose_targets:
                    self.fail(f"pk[{i}].cmt.{target}", f"a dose target of this PK ({', '.join(comps[spec.drug][1].dose_targets)})", target)
        for i, spec in enumerate(pds):
            for target in spec.cmt:
                if target not in comps[spec.name][1].dose_targets:
                    self.fail(f"pd[{i}].cmt.{target}", f"a dose target of {spec.name} "
                              f"({', '.join(comps[spec.name][1].dose_targets) or 'none'})", target)
        # regimens name drugs and products alike; a component whose product is named after it is fine
        seen = {p.drug.lower(): f"pk[{i}].drug" for i, p in enumerate(pks) if p.drug}
        for i, s in enumerate(pds):
            many = isinstance(raw["pd"][i].get("product"), list)
            for j, q in enumerate(s.products):
                where = f"pd[{i}].product" + (f"[{j}]" if many else "")
                if q.name.lower() in seen:
                    self.fail(f"{where}.name", f"a product name distinct from the other products and the drugs "
                              f"(already {seen[q.name.lower()]})", q.name)
                seen[q.name.lower()] = f"{where}.name"
        for i, s in enumerate(pds):
            if s.products and s.name.lower() in seen and not seen[s.name.lower()].startswith(f"pd[{i}]."):
                self.fail(f"pd[{i}].name", f"a component name distinct from the products and drugs (already "
                          f"{seen[s.name.lower()]})", s.name)
        for i, s in enumerate(pds):
            targets = [q.target for q in s.products]
            for j, q in enumerate(s.products):
                if q.target in targets[:j]:
                    self.fail(f"pd[{i}].product[{j}].target", "one product per cmt target (product "
                              f"{s.products[targets.index(q.target)].name!r} goes there)", q.target)
        cmts = [c for s in pks for c in s.cmt.values()] + [c for s in pds for c in s.cmt.values()]
        if len(set(cmts)) != len(cmts):
            self.fail("pk", "each data CMT routed to one dose target", sorted(cmts))
        couplings = self.couplings_v2(self.table(raw, "couplings", "", required=False), comps, pks, _units)
        observe = self.observe_v2(self.table(raw, "observe", ""), comps, pks, _units)
        outputs = tuple(observe)
        for i, s in enumerate(pds):
            mine = [o for o, spec in observe.items() if spec.signal.split(".")[0] == s.name]
            for j, q in enumerate(s.products):
                if q.output is not None and q.output not in mine:
                    where = f"pd[{i}].product" + (f"[{j}]" if isinstance(raw["pd"][i].get("product"), list) else "")
                    self.fail(f"{where}.output", f"an output of component {s.name!r} ({', '.join(mine) or 'none'})",
                              q.output)
        errors = self.errors(raw, outputs)
        params = {}
        for section in pks + pds:
            params.update(section.parameters)
        covariates = self.covariates(raw, params)
        correlations = self.iiv_correlations(self.table(raw, "iiv_correlations", "", required=False), params)
        drug = ", ".join([p.drug for p in pks] + [q.name for s in pds for q in s.products])
        card = ModelCard(name=name, path=self.path, title=title, drug=drug,
                         outputs=outputs, reference=reference, pk=pks[0] if pks else None, pd=pds[0], error=errors,
                         covariates=covariates, raw=raw, notes=notes, schema=2, pks=tuple(pks), pds=tuple(pds),
                         couplings=couplings, observe=observe, solver=solver, iiv_correlations=correlations)
        try:
            from .model import build_system

            build_system(card)
        except ModelError as err:
            raise ModelError(f"{self.path.name}: {err} (in {self.path})") from None
        return card

    def array(self, raw: dict, key: str, expected: str) -> list:
        value = raw.get(key)
        if value is None:
            self.missing(key, expected)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"a non-empty array of {expected}", value)
        return value

    def cmt_table(self, d: dict, where: str) -> dict:
        table = self.table(d, "cmt", where, required=False)
        out = {}
        for target, cmt in table.items():
            if isinstance(cmt, bool) or not isinstance(cmt, int) or cmt < 1:
                self.fail(f"{where}.cmt.{target}", "a data CMT number >= 1", cmt)
            out[str(target)] = int(cmt)
        return out

    def pk_v2(self, d: dict, w: str) -> PKSpec:
        from .. import units as _units

        self.known_keys(d, ("drug", "driver", "model", "absorption", "compartments", "elimination", "binding",
                            "rename", "dose_unit", "molar_mass", "concentration_unit", "column", "interpolation",
                            "cmt", "reference", "notes", "parameters"), w)
        drug = self.string(d, "drug", w)
        if not _units.is_drug_name(drug):
            self.fail(f"{w}.drug", "a drug name (letters, digits, _ + - .)", drug)
        driver = self.string(d, "driver", w, choices=PK_DRIVERS + ("ode",))
        dose_unit = self.string(d, "dose_unit", w)
        molar_mass = self.number(d, "molar_mass", w, required=False, positive=True)
        try:
            _units.normalise_amount_unit(dose_unit)
        except Exception as err:  # noqa: BLE001 - the registry says why
            self.fail(f"{w}.dose_unit", "an amount unit of pkpd.units (mg, ug, umol, IU, ...)", f"{dose_unit} ({err})")
        if _units.amount_dimension(dose_unit) == "molar" and molar_mass is None:
            self.fail(f"{w}.dose_unit", "a molar unit with molar_mass (g/mol: concentrations are reported in mg/L)",
                      dose_unit)
        dual = d.get("absorption") == "dual_sequential" and driver == "ode"
        absorption = True if dual else self.boolean(d, "absorption", w)
        model = column = interpolation = conc = elimination = binding = None
        compartments = None
        rename = {}
        if driver in ("closed_form", "covariates", "ode"):
            if driver == "ode":
                compartments = self.integer(d, "compartments", w, default=1, minimum=1)
                if compartments > 3:
                    self.fail(f"{w}.compartments", "1, 2 or 3", compartments)
                elimination = self.string(d, "elimination", w, required=False,
                                          choices=("linear", "michaelis_menten", "linear+michaelis_menten")) or "linear"
                binding = self.string(d, "binding", w, required=False, choices=("none", "tmdd_qe")) or "none"
                table = self.table(d, "rename", w, required=False)
                for k, v in table.items():
                    if not isinstance(v, str) or not v:
                        self.fail(f"{w}.rename.{k}", "a parameter name", v)
                rename = dict(table)
            else:
                model = self.string(d, "model", w, choices=tuple(PK_MODELS))
            conc = self.string(d, "concentration_unit", w)
            expected = f"{dose_unit}/L"
            if conc.replace(" ", "") != expected:
                self.fail(f"{w}.concentration_unit", f"{expected!r} (the dose unit per litre)", conc)
        elif driver == "concentration":
            column = self.string(d, "column", w)
            interpolation = self.string(d, "interpolation", w, choices=INTERPOLATIONS)
            conc = self.string(d, "concentration_unit", w)
        else:  # kpd
            conc = self.string(d, "concentration_unit", w, required=False)
        params = d.get("parameters", {})
        if not isinstance(params, dict):
            self.fail(f"{w}.parameters", "a table", params)
        parameters = {p: self.parameter(p, v, f"{w}.parameters.{p}") for p, v in params.items()}
        if driver == "closed_form":
            for pname, spec in parameters.items():
                if spec.column is not None:
                    self.fail(f"{w}.parameters.{pname}.column",
                              "a value, not a column, with driver 'closed_form' (use driver 'covariates')", spec.column)
        return PKSpec(driver=driver, model=model, absorption=absorption, dose_unit=dose_unit, molar_mass=molar_mass,
                      concentration_unit=conc, column=column, interpolation=interpolation, parameters=parameters,
                      reference=self.string(d, "reference", w, required=False),
                      notes=self.string(d, "notes", w, required=False), drug=drug, cmt=self.cmt_table(d, w),
                      compartments=compartments, elimination=elimination, binding=binding, rename=rename,
                      dual_absorption=dual)

    def pd_v2(self, d: dict, w: str) -> PDSpec:
        name = self.string(d, "name", w)
        system = self.string(d, "system", w)
        reserved = ("name", "system", "cmt", "notes", "parameters", "product", "rename")
        options = {k: v for k, v in d.items() if k not in reserved}
        rename = self.table(d, "rename", w, required=False)
        for k, v in rename.items():
            if not isinstance(v, str) or not _PARAMETER_NAME.match(v):
                self.fail(f"{w}.rename.{k}", "a parameter name (letters, digits, _)", v)
        for k, v in options.items():
            if not isinstance(v, (str, int, float, bool)):
                self.fail(f"{w}.{k}", "a string, number or boolean option of the PD system", v)
        params = self.table(d, "parameters", w, required=False)
        parameters = {p: self.parameter(p, v, f"{w}.parameters.{p}") for p, v in params.items()}
        if "ftr" in parameters and parameters["ftr"].value is not None and not 0 < parameters["ftr"].value < 1:
            self.fail(f"{w}.parameters.ftr.value", "a number in (0, 1)", parameters["ftr"].value)
        cmt = self.cmt_table(d, w)
        products = ()
        if "product" in d:
            value = d["product"]
            if isinstance(value, dict):
                products = (self.product_v2(value, f"{w}.product", cmt),)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                products = tuple(self.product_v2(v, f"{w}.product[{j}]", cmt) for j, v in enumerate(value))
            else:
                self.fail(f"{w}.product", "a table or a non-empty array of tables", value)
        return PDSpec(system=system, options=options, concentration_unit=None, parameters=parameters,
                      notes=self.string(d, "notes", w, required=False), name=name, cmt=cmt, products=products,
                      rename=dict(rename))

    def product_v2(self, table: dict, w: str, cmt: dict) -> ProductSpec:
        """One ``[[pd]] product`` table at ``w`` (``pd[i].product`` or ``pd[i].product[j]``)."""
        from .. import units as _units

        self.known_keys(table, ("name", "target", "unit_amount", "dose_unit", "output", "note"), w)
        name = self.string(table, "name", w)
        if not _units.is_drug_name(name):
            self.fail(f"{w}.name", "a product name (letters, digits, _ + - .)", name)
        target = self.string(table, "target", w, required=False)
        unit_amount = self.number(table, "unit_amount", w, required=False, positive=True)
        dose_unit = self.string(table, "dose_unit", w, required=False)
        if dose_unit is not None:
            try:
                dose_unit = _units.normalise_amount_unit(dose_unit)
            except Exception as err:  # noqa: BLE001 - the registry says why
                self.fail(f"{w}.dose_unit", "an amount unit of pkpd.units", f"{dose_unit} ({err})")
        if (unit_amount is None) == (dose_unit is None):
            self.fail(w, "exactly one of unit_amount (blood products: the state amount one "
                      "'unit' adds) or dose_unit (a drug dosed into the state, e.g. 'IU')", table)
        output = self.string(table, "output", w, required=False)  # checked against [observe] in card_v2
        note = self.string(table, "note", w, required=False)
        if not cmt:
            self.fail(w, "a cmt table routing the product's doses to a state", None, has_got=False)
        if target is None:
            target = next(iter(cmt))
        elif target not in cmt:
            self.fail(f"{w}.target", f"one of the cmt targets ({', '.join(cmt)})", target)
        return ProductSpec(name=name, target=target, unit_amount=unit_amount, dose_unit=dose_unit, output=output,
                           note=note)

    def _signal(self, text, where: str, comps: dict) -> tuple:
        if not isinstance(text, str) or text.count(".") != 1:
            self.fail(where, "'component.signal'", text)
        comp, sig = text.split(".")
        if comp not in comps or sig not in comps[comp][1].signals:
            known = [f"{c}.{s}" for c, (_, obj) in comps.items() for s in obj.signals]
            self.fail(where, f"a signal of the model ({', '.join(known)})", text)
        return comp, sig

    def couplings_v2(self, table: dict, comps: dict, pks: list, units) -> dict:
        out = {}
        by_drug = {p.drug: p for p in pks}
        for key, value in table.items():
            where = f"couplings.{key}"
            if key.count(".") != 1 or key.split(".")[0] not in comps or \
                    key.split(".")[1] not in comps[key.split(".")[0]][1].inputs:
                known = [f"{c}.{i}" for c, (_, obj) in comps.items() for i in obj.inputs]
                self.fail(where, f"a component input ({', '.join(known) or 'none'})", key, has_got=False)
            spec = {"signal": value} if isinstance(value, str) else value
            if not isinstance(spec, dict):
                self.fail(where, "'component.signal' or { signal = ..., unit = ... | scale = ... }", value)
            self.known_keys(spec, ("signal", "unit", "scale"), where)
            src, sig = self._signal(spec.get("signal"), f"{where}.signal", comps)
            scale = 1.0
            unit = self.string(spec, "unit", where, required=False)
            if "scale" in spec:
                if unit is not None:
                    self.fail(f"{where}.scale", "either unit or scale, not both", spec["scale"])
                scale = self.number(spec, "scale", where, positive=True)
            elif unit is not None:
                pk = by_drug.get(src)
                if pk is None or sig not in ("conc", "total") or not pk.concentration_unit:
                    self.fail(f"{where}.unit", "a unit only for a drug concentration signal (else give scale)", unit)
                try:
                    scale = units.concentration_factor(pk.concentration_unit, unit, pk.molar_mass)
                except Exception as err:  # noqa: BLE001
                    self.fail(f"{where}.unit", f"a concentration unit {pk.concentration_unit} converts to "
                              "(a molar unit needs the drug's molar_mass)", f"{unit} ({err})")
            out[key] = CouplingSpec(input=key, signal=f"{src}.{sig}", scale=float(scale), unit=unit)
        for cname, (where, comp) in comps.items():
            for inp in comp.inputs:
                if f"{cname}.{inp}" not in out:
                    self.missing(f"couplings.{cname}.{inp}", f"a coupling for the input {inp!r} of {where} "
                                 f"({cname})")
        return out

    def observe_v2(self, table: dict, comps: dict, pks: list, units) -> dict:
        if not table:
            self.missing("observe", "at least one [observe.<OUTPUT>] table")
        drugs = {p.drug: p for p in pks}
        out = {}
        for key, spec in table.items():
            where = f"observe.{key}"
            base = key.split(":")[0]
            if base not in OUTPUTS_V2 or (":" in key and (base != "CONC" or key.split(":", 1)[1] not in drugs)):
                self.fail(where, f"an output {', '.join(OUTPUTS_V2)} or CONC:<drug> with a drug of this card", key,
                          has_got=False)
            if not isinstance(spec, dict):
                self.fail(where, "a table with signal and unit", spec)
            self.known_keys(spec, ("signal", "unit", "dvid"), where)
            src, sig = self._signal(spec.get("signal"), f"{where}.signal", comps)
            unit = self.string(spec, "unit", where)
            dvid = self.integer(spec, "dvid", where, default=DEFAULT_DVID.get(key, 0), minimum=1) or None
            molar = drugs[src].molar_mass if src in drugs else None
            try:
                units.unit_factor(key if ":" not in key else "CONC", unit, molar)
            except Exception as err:  # noqa: BLE001
                self.fail(f"{where}.unit", f"a unit of {key}", f"{unit} ({err})")
            out[key] = ObserveSpec(output=key, signal=f"{src}.{sig}", unit=unit, dvid=dvid)
        dvids = [o.dvid for o in out.values() if o.dvid is not None]
        if len(set(dvids)) != len(dvids):
            self.fail("observe", "a distinct dvid for each output", dvids)
        return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
