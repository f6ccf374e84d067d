"""``pkpd models [NAME]``: list the shipped model cards, or show one card in full.

Without ``NAME`` prints a table (name, drug, lineage, PD system, PK driver, reference,
reliability). With ``NAME`` (a card name or the path of a ``.toml`` card) prints every
field of that card. Exit status 0, or 2 for an unknown or malformed card.
"""

from __future__ import annotations

from ..model.card import ModelCard, ParameterSpec, list_cards, load_card, models_dir

_LINEAGE = {"ANC": "neutrophils", "WBC": "leukocytes", "PLT": "platelets", "HGB": "erythroid"}


def add_parser(subparsers) -> None:
    """Register ``pkpd models``."""
    p = subparsers.add_parser(
        "models",
        help="list the model cards, or show one in full",
        description="List the shipped model cards (models/*.toml), or show every field of one card.",
    )
    p.add_argument("name", nargs="?", help="card name (e.g. kloft2006_docetaxel) or path to a .toml card")
    p.set_defaults(func=run)


def run(args) -> int:
    """Print the table of cards, or the details of ``args.name``."""
    if getattr(args, "name", None):
        print(describe(load_card(args.name)))
    else:
        print(table(list_cards()))
    return 0


def _lineage(card: ModelCard) -> str:
    return ", ".join(_LINEAGE[o] for o in card.outputs if o in _LINEAGE) or "-"


def _one_pd(pd) -> str:
    opts = pd.options
    extras = [k for k in ("separate_kcirc", "stem_cell", "dexamethasone", "gcsf_stimulation") if opts.get(k)]
    text = pd.system
    if "n_transit" in opts:
        text += f" n={opts['n_transit']}"
    if "drug_effect" in opts:
        text += f" {opts['drug_effect']}"
    return text + "".join(f" +{e}" for e in extras)


def _pd_summary(card: ModelCard) -> str:
    return " + ".join(_one_pd(pd) for pd in (card.pds or (card.pd,)))


def _one_pk(pk) -> str:
    if pk.driver in ("closed_form", "covariates"):
        return f"{pk.driver} {pk.model}" + (" oral" if pk.absorption else "")
    if pk.driver == "concentration":
        return f"concentration ({pk.column})"
    if pk.driver == "ode":
        return f"ode {pk.compartments}cmt" + (" sc" if pk.absorption else "") + \
            (f" {pk.binding}" if pk.binding and pk.binding != "none" else "")
    return pk.driver


def _pk_summary(card: ModelCard) -> str:
    return " + ".join(_one_pk(pk) for pk in (card.pks if card.schema == 2 else (card.pk,)))


def table(cards: list[ModelCard]) -> str:
    """Aligned text table of ``cards``."""
    header = ("NAME", "DRUG", "LINEAGE", "PD SYSTEM", "PK DRIVER", "REFERENCE", "REL")
    rows = [(c.name, c.drug, _lineage(c), _pd_summary(c), _pk_summary(c), c.reference.short, c.reference.reliability)
            for c in cards]
    if not rows:
        return f"no model cards in {models_dir()}"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n\n{len(rows)} cards in {models_dir()}; reliability tags: P primary paper, " \
        "S curated encoding, T third-party code, D derived, U unverified (MODELS.md section 0), A assumed by the card"


def _param_line(p: ParameterSpec) -> str:
    value = f"column {p.column}" if p.column is not None else f"{p.value:.6g}"
    bits = [f"  {p.name:<7} {value:>14} {p.unit:<8}"]
    if p.iiv_given is not None:
        bits.append(f"IIV {p.iiv_form} {p.iiv_given:g} (omega {p.omega:.4g})")
    if p.fixed:
        bits.append("fixed")
    if p.lower is not None or p.upper is not None:
        bits.append(f"bounds [{'' if p.lower is None else f'{p.lower:g}'}, {'' if p.upper is None else f'{p.upper:g}'}]")
    if p.tag:
        bits.append(f"[{p.tag}]")
    if p.note:
        bits.append(f"- {p.note}")
    return "  ".join(bits)


def _block(text: str | None, indent: str = "  ") -> list[str]:
    if not text:
        return []
    return [indent + line.strip() for line in text.strip().splitlines() if line.strip()]


def describe(card: ModelCard) -> str:
    """Every field of ``card`` as readable text."""
    ref = card.reference
    out = [f"{card.name}: {card.title}", f"  file: {card.path}", f"  drug: {card.drug}",
           f"  outputs: {', '.join(card.outputs)}", "", "Reference"]
    out += [f"  {ref.authors}. {ref.title}. {ref.journal}."]
    if ref.doi:
        out.append(f"  doi:{ref.doi}")
    if ref.url:
        out.append(f"  {ref.url}")
    out.append(f"  reliability: {ref.reliability}" + (f"; values from {ref.values_from}" if ref.values_from else ""))
    out += _block(ref.notes)
    for pk in (card.pks if card.schema == 2 else (card.pk,)):
        out += ["", f"PK{' of ' + pk.drug if pk.drug else ''}: driver {pk.driver}" + (f", {pk.model}" if pk.model else "")
                + (f", {pk.compartments} compartment(s)" if pk.compartments else "")
                + (", first-order absorption" if pk.absorption else "")
                + (f", {pk.elimination} elimination" if pk.elimination and pk.elimination != "linear" else "")
                + (f", binding {pk.binding}" if pk.binding and pk.binding != "none" else "")]
        out.append(f"  dose unit {pk.dose_unit}; concentration {pk.concentration_unit or '-'}"
                   + (f"; molar mass {pk.molar_mass:g} g/mol" if pk.molar_mass else ""))
        if pk.cmt:
            out.append("  doses: " + ", ".join(f"CMT {c} -> {t}" for t, c in pk.cmt.items()))
        if pk.column:
            out.append(f"  concentration column {pk.column} ({pk.interpolation} interpolation)")
        if pk.reference:
            out.append(f"  source: {pk.reference}")
        out += [_param_line(p) for p in pk.parameters.values()]
        out += _block(pk.notes)
    for pd in card.pds or (card.pd,):
        opts = pd.options
        head = f"PD{' ' + pd.name if pd.name else ''}: {pd.system}"
        if "n_transit" in opts:
            head += f", {opts['n_transit']} transit compartments"
        if "drug_effect" in opts:
            head += f", {opts['drug_effect']} drug effect"
        out += ["", head]
        switches = [k for k in ("separate_kcirc", "stem_cell", "dexamethasone", "gcsf_stimulation") if opts.get(k)]
        if switches:
            out.append(f"  options: {', '.join(switches)}")
        if pd.cmt:
            out.append("  doses: " + ", ".join(f"CMT {c} -> {t}" for t, c in pd.cmt.items()))
        if pd.concentration_unit:
            out.append(f"  drug-effect concentration unit {pd.concentration_unit} "
                       f"(PK concentration x {card.conc_scale:.6g})")
        out += [_param_line(p) for p in pd.parameters.values()]
        out += _block(pd.notes)
    if card.couplings:
        out += ["", "Couplings"]
        for key, c in card.couplings.items():
            out.append(f"  {key} <- {c.signal}" + (f" (x {c.scale:.6g}{', to ' + c.unit if c.unit else ''})"
                                                    if c.scale != 1.0 or c.unit else ""))
    if card.observe:
        out += ["", "Outputs"]
        for name, o in card.observe.items():
            out.append(f"  {name} = {o.signal} [{o.unit}]" + (f", DVID {o.dvid}" if o.dvid else ""))
    out += ["", "Residual error"]
    for e in card.error.values():
        sds = f"sd {e.sd:g}" if e.sd is not None else f"sd_add {e.sd_add:g}, sd_prop {e.sd_prop:g}"
        line = f"  {e.output}: {e.model}, {sds}"
        if e.tag:
            line += f"  [{e.tag}]"
        if e.note:
            line += f"  - {e.note}"
        out.append(line)
    if card.covariates:
        out += ["", "Covariate effects"]
        for c in card.covariates:
            if c.type == "categorical":
                how = ", ".join(f"{c.covariate}={k:g}: x(1{v:+g})" for k, v in c.levels.items())
            elif c.type == "threshold":
                how = f"x(1{c.effect:+g}) when {c.covariate} >= {c.threshold:g}"
            elif c.type == "linear":
                how = f"x(1{c.effect:+g}*({c.covariate}-{c.reference:g}))"
                if c.effect_above is not None:
                    how += f", slope {c.effect_above:+g} above {c.reference:g}"
            else:
                how = f"x({c.covariate}/{c.reference:g})^{c.effect:g}"
            out.append(f"  {c.parameter}: {how}" + (f"  - {c.note}" if c.note else ""))
    if card.notes:
        out += ["", "Notes"] + _block(card.notes)
    return "\n".join(out)
