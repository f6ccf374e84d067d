r"""Closed-form linear pharmacokinetics (1-, 2- and 3-compartment, IV and first-order absorption).

Everything here is a pure, differentiable JAX function in float64. The drug
concentration in the central compartment is a sum of exponentials (superposition
over doses), so no ODE is integrated for linear PK.

Model
-----
Mammillary disposition with clearance :math:`CL` from the central compartment
(volume :math:`V_1`) and inter-compartmental clearances :math:`Q_j` to peripheral
compartments (volumes :math:`V_j`); in concentrations :math:`c = A/V`,

.. math::

    V \, \dot c = -L c, \qquad
    L_{11} = CL + \textstyle\sum_j Q_j,\; L_{1j} = L_{j1} = -Q_j,\; L_{jj} = Q_j .

:math:`L` is symmetric, so :math:`S = V^{-1/2} L V^{-1/2}` has an orthonormal
eigen-decomposition :math:`S = U \Lambda U^\top` (``jnp.linalg.eigh``, differentiable,
any device). A unit bolus into compartment :math:`j` gives the central concentration

.. math::

    h_j(t) = \sum_i \frac{U_{1i} U_{ji}}{\sqrt{V_1 V_j}} e^{-\lambda_i t} .

With an absorption depot (rate :math:`k_a`) the response to a unit dose in the depot is
:math:`\sum_i c_i \frac{k_a}{k_a-\lambda_i}(e^{-\lambda_i t} - e^{-k_a t})`, i.e. one more
exponential mode. Every dose type then only needs, per mode :math:`(c, \lambda)`:

* bolus of amount :math:`a`: :math:`a c e^{-\lambda u}` for :math:`u \ge 0` (time since arrival);
* zero-order infusion, rate :math:`R`, duration :math:`D`:
  :math:`\frac{cR}{\lambda}(e^{-\lambda \max(u-D,0)} - e^{-\lambda u})`;
* steady state (``SS``): the infinite train of identical doses every :math:`II` arriving
  at :math:`s + kII`, :math:`k \ge 0`, summed in closed form (geometric series; for
  infusions longer than :math:`II` the members still infusing are summed separately);
* a constant infusion at steady state stopped at the record (``SS`` with ``AMT = 0``):
  :math:`\frac{cR}{\lambda} e^{-\lambda u}`.

Compartment numbers follow NONMEM's ADVAN conventions: with absorption (``KA`` given)
``CMT 1`` is the depot, 2 the central, 3 and 4 the peripheral compartments; without,
1 is central and 2, 3 peripheral.

References
----------
Gibaldi M, Perrier D. *Pharmacokinetics*, 2nd ed. Marcel Dekker, 1982 (ch. 3, 4).
Beal SL, Sheiner LB, Boeckmann AJ, Bauer RJ. *NONMEM Users Guides* (1989-2018),
part V (dosing records, SS, ADDL, ALAG, F, modelled rate and duration).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "PK_MODELS",
    "PKModes",
    "DoseInputs",
    "pk_modes",
    "resolve_doses",
    "central_concentration",
    "canonical_pk_params",
]

#: Number of disposition compartments for each model name.
PK_MODELS = {"1cmt": 1, "2cmt": 2, "3cmt": 3}

#: Parameter names (canonical) per model, and accepted aliases.
_STRUCTURAL = {
    "1cmt": ("CL", "V1"),
    "2cmt": ("CL", "V1", "Q2", "V2"),
    "3cmt": ("CL", "V1", "Q2", "V2", "Q3", "V3"),
}
_ALIASES = {"V": "V1", "VC": "V1", "Q": "Q2", "VP": "V2", "VP1": "V2", "VP2": "V3", "Q1": "Q2"}

#: Dose kinds (``DoseInputs.kind``).
BOLUS, INFUSION, SS_BOLUS, SS_INFUSION, SS_CONSTANT = 0, 1, 2, 3, 4


def canonical_pk_params(model: str, names) -> dict:
    """Map user parameter names to canonical ones (``V -> V1``, ``Q -> Q2``...).

    Returns a dict ``{user_name: canonical_name}`` for the structural parameters and
    ``KA``; dose-record quantities (``F1``, ``ALAG2``, ``R1``, ``D2``) map to themselves.
    Unknown names raise :class:`pkpd.errors.ModelError`.
    """
    from ...errors import ModelError

    if model not in PK_MODELS:
        raise ModelError(f"unknown PK model {model!r}: expected one of {sorted(PK_MODELS)}")
    allowed = set(_STRUCTURAL[model]) | {"KA"}
    out = {}
    for name in names:
        key = str(name).upper()
        canon = _ALIASES.get(key, key)
        if canon in allowed or _dose_quantity(canon) is not None:
            if canon in out.values():
                raise ModelError(f"parameter {canon} given twice (as {name!r} and another alias)")
            out[name] = canon
        else:
            raise ModelError(
                f"unknown PK parameter {name!r} for model {model!r}: expected "
                f"{', '.join(_STRUCTURAL[model])}, optional KA, and per-compartment "
                "F<n>, ALAG<n>, R<n>, D<n>"
            )
    missing = [p for p in _STRUCTURAL[model] if p not in out.values()]
    if missing:
        raise ModelError(f"model {model!r} needs parameter(s) {', '.join(missing)}")
    return out


def _dose_quantity(name: str):
    """``'F2' -> ('F', 2)``; ``None`` for other names."""
    for prefix in ("ALAG", "F", "R", "D"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return prefix, int(name[len(prefix):])
    return None


class PKModes(NamedTuple):
    """Exponential modes of one subject's linear PK model.

    Attributes
    ----------
    lam : [M]
        Rate constants (1/h); the last mode is the absorption rate ``KA`` (or 1 with a
        zero coefficient when there is no depot).
    coef : [C+1, M]
        Central concentration per unit amount dosed into compartment ``c`` (row ``c``;
        row 0 is zero), per mode.
    """

    lam: jax.Array
    coef: jax.Array


def pk_modes(params: dict, model: str, absorption: bool) -> PKModes:
    """Eigen-modes of one subject's PK model from canonical parameters (scalars)."""
    n = PK_MODELS[model]
    cl = params["CL"]
    vols = [params["V1"]] + [params[f"V{j}"] for j in range(2, n + 1)]
    qs = [params[f"Q{j}"] for j in range(2, n + 1)]
    dtype = jnp.result_type(cl, float)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            if i == 0 and j == 0:
                row.append(cl + sum(qs) if qs else cl)
            elif i == 0 or j == 0:
                row.append(-qs[max(i, j) - 1])
            elif i == j:
                row.append(qs[i - 1])
            else:
                row.append(jnp.zeros((), dtype))
        rows.append(jnp.stack([jnp.asarray(x, dtype) for x in row]))
    lmat = jnp.stack(rows)
    sqrt_v = jnp.sqrt(jnp.stack([jnp.asarray(v, dtype) for v in vols]))
    sym = lmat / (sqrt_v[:, None] * sqrt_v[None, :])
    if n == 1:
        lam = sym[0]
        u = jnp.ones((1, 1), dtype)
    else:
        lam, u = jnp.linalg.eigh(sym)
    # Concentration in central per unit amount into disposition compartment j, per mode.
    disp = u[0][None, :] * u / (sqrt_v[0] * sqrt_v[:, None])  # [n (input cmt), n (mode)]
    zero_mode = jnp.zeros((n, 1), dtype)
    disp = jnp.concatenate([disp, zero_mode], axis=1)  # [n, n+1]
    if absorption:
        ka = jnp.asarray(params["KA"], dtype)
        central = disp[0, :n]
        # KA equal to a disposition rate is the removable singularity of the Bateman
        # function: move KA by a relative 1e-7 (rate and coefficients alike) there, which
        # keeps the result within ~1e-7 of the limit k*t*exp(-k*t).
        tiny = 1e-7 * ka
        close = jnp.abs(ka - lam) < tiny
        ka = ka + jnp.where(jnp.any(close), 2.0 * tiny, 0.0)
        depot_disp = central * ka / (ka - lam)
        depot = jnp.concatenate([depot_disp, -jnp.sum(depot_disp, keepdims=True)])
        coef = jnp.concatenate([jnp.zeros((1, n + 1), dtype), depot[None, :], disp], axis=0)
        lam_all = jnp.concatenate([lam, ka[None]])
    else:
        coef = jnp.concatenate([jnp.zeros((1, n + 1), dtype), disp], axis=0)
        lam_all = jnp.concatenate([lam, jnp.ones((1,), dtype)])
    return PKModes(lam_all, coef)


class DoseInputs(NamedTuple):
    """One subject's doses after bioavailability, lag and rate/duration are applied ([D] arrays)."""

    kind: jax.Array  # BOLUS, INFUSION, SS_BOLUS, SS_INFUSION, SS_CONSTANT
    time: jax.Array  # record time
    arrival: jax.Array  # record time + lag
    amount: jax.Array  # F * AMT
    rate: jax.Array  # infusion rate (amount / h)
    duration: jax.Array  # infusion duration (h)
    ii: jax.Array  # interval of an SS train
    cmt: jax.Array
    start_time: jax.Array
    start_order: jax.Array
    end_time: jax.Array
    end_order: jax.Array


def resolve_doses(events, f, alag, r, d) -> DoseInputs:
    """Apply per-dose bioavailability ``f``, lag ``alag``, modelled rate ``r`` and duration ``d``.

    ``events`` holds one subject's :class:`pkpd.events.DoseEvents` fields as arrays;
    ``f, alag, r, d`` are per-dose arrays (already selected by compartment).
    Fixed-rate infusions keep their rate (duration = F*AMT/RATE); modelled rate
    (RATE = -1): duration = F*AMT/R; modelled duration (RATE = -2): rate = F*AMT/D.
    """
    rate_in = events.rate
    amount = f * events.amt
    is_fixed = rate_in > 0
    is_mrate = rate_in == -1
    is_mdur = rate_in == -2
    infusion = is_fixed | is_mrate | is_mdur
    safe = lambda x: jnp.where(infusion & (x > 0), x, 1.0)  # noqa: E731
    rate = jnp.where(is_fixed, rate_in, jnp.where(is_mrate, r, amount / safe(d)))
    duration = jnp.where(is_mdur, d, amount / safe(rate))
    ss = events.ss > 0
    kind = jnp.where(
        ss & events.ss_infusion,
        SS_CONSTANT,
        jnp.where(ss, jnp.where(infusion, SS_INFUSION, SS_BOLUS), jnp.where(infusion, INFUSION, BOLUS)),
    )
    return DoseInputs(
        kind=kind,
        time=events.time,
        arrival=events.time + alag,
        amount=amount,
        rate=jnp.where(infusion | events.ss_infusion, rate, 0.0),
        duration=jnp.where(infusion, duration, 0.0),
        ii=events.ii,
        cmt=events.cmt,
        start_time=events.start_time,
        start_order=events.start_order,
        end_time=events.end_time,
        end_order=events.end_order,
    )


def _key_le(t1, o1, t2, o2):
    return (t1 < t2) | ((t1 == t2) & (o1 <= o2))


def _key_lt(t1, o1, t2, o2):
    return (t1 < t2) | ((t1 == t2) & (o1 < o2))


def central_concentration(t, order, doses: DoseInputs, modes: PKModes, *, steady_state: bool = True):
    """Central-compartment concentration (amount / V1) at times ``t`` with keys ``order``.

    Parameters
    ----------
    t, order : array [N]
        Evaluation times (h) and their record order (``+inf`` for an arbitrary time,
        e.g. inside an ODE right-hand side; see :mod:`pkpd.events`).
    doses : DoseInputs
        One subject's doses ([D] arrays).
    modes : PKModes
        One subject's exponential modes.
    steady_state : bool, static
        Include the SS formulas (set False when no dose has ``SS > 0`` to save work).

    Returns
    -------
    array [N]
    """
    t = jnp.asarray(t)[:, None, None]  # [N, 1, 1]
    order = jnp.asarray(order)[:, None, None]
    d = jax.tree_util.tree_map(lambda x: x[None, :, None], doses)  # [1, D, 1]
    lam = modes.lam[None, None, :]  # [1, 1, M]
    coef = modes.coef[doses.cmt][None, :, :]  # [1, D, M]

    active = _key_le(d.start_time, d.start_order, t, order) & _key_lt(t, order, d.end_time, d.end_order)
    u = t - d.arrival
    arrived = u >= 0
    u0 = jnp.where(arrived, u, 0.0)
    decay = jnp.exp(-lam * u0)

    bolus = d.amount * decay
    dur = d.duration
    in_inf = u0 <= dur
    infusion = (d.rate / lam) * jnp.where(
        in_inf, -jnp.expm1(-lam * u0), jnp.exp(-lam * jnp.where(in_inf, 0.0, u0 - dur)) * -jnp.expm1(-lam * dur)
    )
    single = jnp.where(arrived, jnp.where(d.kind == INFUSION, infusion, bolus), 0.0)
    total = jnp.where(d.kind <= INFUSION, single, 0.0)

    if steady_state:
        is_ss = d.kind >= SS_BOLUS
        ii = jnp.where(is_ss & (d.ii > 0), d.ii, 1.0)
        one_minus_q = -jnp.expm1(-lam * ii)
        s = jnp.where(is_ss, u, 0.0)  # time since the k = 0 member arrived; may be < 0 with a lag
        k0 = jnp.maximum(0.0, jnp.ceil(-s / ii))
        ss_bolus = d.amount * jnp.exp(-lam * (s + k0 * ii)) / one_minus_q
        kf = jnp.maximum(k0, jnp.ceil((dur - s) / ii))
        n_part = kf - k0
        partial = n_part - jnp.exp(-lam * (s + k0 * ii)) * -jnp.expm1(-lam * ii * n_part) / one_minus_q
        full = jnp.exp(-lam * (s + kf * ii - dur)) * -jnp.expm1(-lam * dur) / one_minus_q
        ss_infusion = (d.rate / lam) * (partial + full)
        since_record = jnp.maximum(t - d.time, 0.0)
        ss_constant = (d.rate / lam) * jnp.exp(-lam * since_record)
        total = total + jnp.where(
            d.kind == SS_BOLUS, ss_bolus,
            jnp.where(d.kind == SS_INFUSION, ss_infusion, jnp.where(d.kind == SS_CONSTANT, ss_constant, 0.0)),
        )

    return jnp.sum(jnp.where(active, coef * total, 0.0), axis=(1, 2))
