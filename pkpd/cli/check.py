"""``pkpd check FILE``: validate a NONMEM-style dataset and list every violation.

Exit status 0 when there is no error (warnings allowed), 2 when there are errors or
the file or the arguments are unusable.
"""

from __future__ import annotations

from ..errors import PkpdError


def _mapping(text: str | None, option: str, key_int: bool = False) -> dict:
    """Parse ``"A=x,B=y"``; raises PkpdError with the option named."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise PkpdError(f"{option}: expected NAME=VALUE pairs separated by commas, got {item!r}")
        if key_int:
            try:
                key = int(key)
            except ValueError:
                raise PkpdError(f"{option}: DVID {key!r} is not an integer") from None
        out[key] = value
    return out


def _int_list(text: str | None, option: str):
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PkpdError(f"{option}: expected integers separated by commas, got {text!r}") from None


def add_parser(subparsers) -> None:
    """Register ``pkpd check``."""
    p = subparsers.add_parser(
        "check",
        help="validate a NONMEM-style CSV dataset",
        description="Check a NONMEM-style CSV dataset and list every violation with its line.",
    )
    p.add_argument("file", help="CSV file (header = line 1)")
    p.add_argument("--time-unit", default="h", help="unit of TIME and II: h or d (default h)")
    p.add_argument("--units", help="observation units, e.g. ANC=cells/uL,CONC=ug/L")
    p.add_argument("--dvid", help="DVID to observation type, e.g. 1=CONC,2=ANC")
    p.add_argument("--dose-unit", default="mg", help="unit of AMT: one amount unit (mg, ug, g, umol, pmol, IU, kIU, unit...; "
                   "default mg) or CMT=UNIT pairs, e.g. '1=mg,3=IU'")
    p.add_argument("--molar-mass", type=float, help="molar mass in g/mol (for umol/L)")
    p.add_argument("--compartments", help="allowed CMT values, e.g. 1,2,3")
    p.add_argument("--modelled", help="modelled infusion parameters, e.g. R1,D2")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the check; print the table and a summary; return the exit status."""
    from ..data.validation import check_dataset

    units = _mapping(args.units, "--units")
    types = _mapping(args.dvid, "--dvid", key_int=True) or None
    compartments = _int_list(args.compartments, "--compartments")
    modelled = [m.strip() for m in (args.modelled or "").split(",") if m.strip()]
    report = check_dataset(
        args.file, time_unit=args.time_unit, units=units, observation_types=types,
        dose_unit=args.dose_unit, molar_mass=args.molar_mass, compartments=compartments,
        modelled_rates=modelled,
    )
    if report.violations:
        print(report.render())
    print(report.summary())
    return 2 if report.errors else 0
