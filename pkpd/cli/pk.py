"""``pkpd pk DATA``: closed-form drug concentrations at every observation row."""

from __future__ import annotations

from ._common import add_data_options, parse_values, read_data
from ._outputs import add_output_options, plan_outputs
from ..errors import PkpdError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pk",
        help="predict drug concentrations with closed-form linear PK",
        description="Predict central concentrations (amount/V1) at every observation row of a data set, "
        "with parameters given on the command line or taken from a model card's PK.",
    )
    p.add_argument("data", help="NONMEM-style CSV")
    p.add_argument("--model", choices=["1cmt", "2cmt", "3cmt"], help="PK model (with --param)")
    p.add_argument("--param", help="parameters, e.g. CL=38.5,V1=7.4,Q2=7.8,V2=5.2,Q3=9.3,V3=111 "
                   "(a non-numeric value names a data column)")
    p.add_argument("--card", help="take the PK model and typical values from this model card")
    p.add_argument("--out", help="write the predictions as CSV here (atomically)")
    add_output_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def pk_from_card(card_name):
    """(model, params) of a model card's closed-form PK at its typical values."""
    from ..model.card import load_card

    card = load_card(card_name)
    if card.pk.driver != "closed_form":
        raise PkpdError(f"model card {card.name!r} has a {card.pk.driver!r} PK driver, not closed-form PK")
    params = {n: p.value for n, p in card.pk.parameters.items()}
    if card.pk.absorption:
        params.setdefault("KA", card.pk.parameters["KA"].value)
    return card.pk.model, params


def predictions(dataset, model, params):
    """Data frame of observation rows with the predicted concentration."""
    from ..model.pk.predict import predict_pk

    df = dataset.df
    obs = df[df["EVID"] == 0][["LINE", "ID", "TIME", "DVID", "DV"]].copy()
    obs["PRED"] = predict_pk(dataset, model, params)
    obs["TYPE"] = obs["DVID"].map(dataset.observation_types)
    return obs


def run(args) -> int:
    outputs = plan_outputs("pk", [("--out", args.out)], [("DATA", args.data), ("--card", args.card)],
                           no_clobber=args.no_clobber)
    if args.card:
        model, params = pk_from_card(args.card)
        params.update(parse_values(args.param, "--param"))
    else:
        if not (args.model and args.param):
            raise PkpdError("give --model and --param, or --card")
        model, params = args.model, parse_values(args.param, "--param")
    dataset = read_data(args)
    table = predictions(dataset, model, params)
    for out in outputs:
        from ..io import atomic_path

        with atomic_path(out.path, ".csv", overwrite=not args.no_clobber) as tmp:
            table.to_csv(tmp, index=False, na_rep=".")
        print(out.wrote())
    import pandas as pd

    with pd.option_context("display.max_rows", 60, "display.width", 120):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0
