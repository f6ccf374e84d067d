"""Options and helpers shared by CLI commands (data-reading options, output paths)."""

from __future__ import annotations

from pathlib import Path

from .check import _mapping
from ..errors import PkpdError


def add_data_options(p) -> None:
    """Options that say how to read a NONMEM-style CSV (as for ``pkpd check``)."""
    p.add_argument("--time-unit", default="h", help="unit of TIME and II: h or d (default h)")
    p.add_argument("--units", help="observation units, e.g. ANC=cells/uL,CONC=ug/L")
    p.add_argument("--dvid", help="DVID to observation type, e.g. 1=CONC,2=ANC")
    p.add_argument("--dose-unit", default="mg", help="unit of AMT: one amount unit (mg, ug, g, umol, pmol, IU, kIU, unit...; "
                   "default mg) or CMT=UNIT pairs, e.g. '1=mg,3=IU'")
    p.add_argument("--molar-mass", type=float, help="molar mass in g/mol (for umol/L)")


def read_data(args, path=None):
    """Read and validate the data set named by ``args`` (raises DatasetError with every violation)."""
    from ..data.dataset import read_dataset

    path = path or args.data
    if not Path(path).is_file():
        raise PkpdError(f"data file {str(path)!r} does not exist")
    return read_dataset(
        path,
        time_unit=args.time_unit,
        units=_mapping(args.units, "--units"),
        observation_types=_mapping(args.dvid, "--dvid", key_int=True) or None,
        dose_unit=args.dose_unit,
        molar_mass=args.molar_mass,
    )


def parse_values(text: str | None, option: str) -> dict:
    """``"A=1.5,B=x"`` -> ``{"A": 1.5, "B": "x"}`` (numbers where they parse)."""
    out = {}
    for key, value in _mapping(text, option).items():
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def read_patients(args):
    """The ``--data`` of ``forecast``/``plan`` with ``--ids`` and ``--until`` applied, and the
    ``--covariate NAME=VALUE`` values (a dict)."""
    from ..errors import PkpdError

    data = read_data(args)
    if args.ids:
        wanted = [v.strip() for v in args.ids.split(",") if v.strip()]
        known = {str(i): i for i in data.ids}
        unknown = [v for v in wanted if v not in known]
        if unknown:
            raise PkpdError(f"--ids: unknown patient ID(s) {unknown} (the data have {list(known)[:20]})")
        data = data.subset([known[v] for v in wanted])
    if args.until:
        from ..forecasting.forecast import parse_horizon

        data = data.until(parse_horizon(args.until))
    covariates = {}
    for text in args.covariate or ():
        covariates.update(parse_values(text, "--covariate"))
    return data, covariates


def example_data() -> Path:
    """The shipped example data set (``data/example.csv`` of a checkout, else the package data)."""
    from importlib import resources

    candidates = [Path(__file__).resolve().parents[2] / "data" / "example.csv",
                  Path(str(resources.files("pkpd") / "_data" / "example.csv")), Path.cwd() / "data" / "example.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PkpdError("cannot find data/example.csv: run from the pkpd checkout or pass --data")
