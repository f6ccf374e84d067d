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

:math:`L` is symmetric, so :math:`S = V^{-1/2} L V^{-1/2}` has real, positive eigenvalues
:math:`\lambda_i` (the disposition rates). A unit bolus into compartment :math:`j` gives the
central concentration

.. math::

    h_j(t) = \sum_i \frac{R_{ji}}{V_1} e^{-\lambda_i t},

with the residues :math:`R_{ji}` of the central amount. Rates and residues are computed in
closed form from the micro-constants (roots of the characteristic quadratic or cubic, then
partial fractions: :func:`_disposition_modes`), not by a LAPACK eigen-decomposition:
more accurate (rates within 1e-14 relative of a 50-digit reference, micro-constants
spanning up to nine decades, against 5e-10 for float64 ``eigh``; ``tests/test_pk.py``),
differentiable, and free of the batched LAPACK kernels that block when CPU host devices share
the thread pool.

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


def _cubic_roots(a2, a1, a0):
    r"""The three real roots, ascending, of :math:`\lambda^3 - a_2\lambda^2 + a_1\lambda - a_0`
    (characteristic polynomial of a 3-compartment mammillary model: all roots real and positive).

    The largest root :math:`\lambda_3` by the trigonometric solution of the depressed cubic
    (Press et al., *Numerical Recipes*, 3rd ed., section 5.6), accurate relative to the scale of
    the coefficients; the other two from the quadratic left after deflation, written with the
    product :math:`\lambda_1\lambda_2 = a_0/\lambda_3` and the sum
    :math:`\lambda_1 + \lambda_2 = (a_1 - a_0/\lambda_3)/\lambda_3` (no cancellation: the
    coefficients are sums of positive terms and :math:`\lambda_3` is the largest), the smaller as
    product / larger. (The trigonometric formula alone loses the small roots when two of them are
    far below the third: an error of about :math:`\sqrt{\epsilon}\,\lambda_3`.) Then three Newton
    steps on the cubic itself. The starting values are cut from the gradient, so the derivatives
    are those of the polished roots, i.e. the implicit-function derivatives
    :math:`\partial\lambda/\partial a = -(\partial p/\partial a) / p'(\lambda)`.
    """
    x = jax.lax.stop_gradient(jnp.stack([a2, a1, a0]))
    b2, b1, b0 = x[0], x[1], x[2]
    shift = b2 / 3.0
    p = b1 - b2 * shift  # depressed cubic y^3 + p y + q, y = lambda - a2/3
    q = -2.0 * shift**3 + b1 * shift - b0
    m = jnp.sqrt(jnp.maximum(-p / 3.0, 0.0))
    tiny = jnp.finfo(m.dtype).tiny
    arg = jnp.clip(-q / (2.0 * jnp.maximum(m, tiny) ** 3), -1.0, 1.0)
    big = shift + 2.0 * m * jnp.cos(jnp.arccos(arg) / 3.0)
    for _ in range(2):  # the largest root is simple and above the inflection point: Newton is safe
        big = big - (((big - b2) * big + b1) * big - b0) / ((3.0 * big - 2.0 * b2) * big + b1)
    prod = b0 / big
    total = (b1 - prod) / big
    mid = 0.5 * (total + jnp.sqrt(jnp.maximum(total * total - 4.0 * prod, 0.0)))
    lam = jnp.stack([prod / mid, mid, big])
    for _ in range(3):
        value = ((lam - a2) * lam + a1) * lam - a0
        slope = (3.0 * lam - 2.0 * a2) * lam + a1
        lam = lam - value / slope
    return lam


def _disposition_modes(cl, vols, qs):
    r"""Rates :math:`\lambda_i` (ascending) and central-amount residues of a mammillary model.

    With micro-constants :math:`k_{10} = CL/V_1`, :math:`k_{1j} = Q_j/V_1`,
    :math:`k_{j1} = Q_j/V_j`, a unit bolus into compartment :math:`m` gives the central amount
    :math:`\sum_i R_{mi} e^{-\lambda_i t}` with the residues (partial fractions of
    :math:`[(sI + K)^{-1}]_{1m}`; Gibaldi & Perrier, ch. 3)

    .. math::

        R_{1i} = \frac{\prod_{j \ge 2} (k_{j1} - \lambda_i)}{\prod_{l \ne i} (\lambda_l - \lambda_i)},
        \qquad
        R_{mi} = \frac{k_{m1} \prod_{j \ge 2, j \ne m} (k_{j1} - \lambda_i)}{\prod_{l \ne i} (\lambda_l - \lambda_i)}
        \quad (m \ge 2).

    The rates are the roots of :math:`\det(\lambda I - K) = 0` in closed form: a quadratic
    (2 compartments; larger root by the formula, smaller from the product
    :math:`k_{10} k_{21}`, the discriminant written as a sum of non-negative terms) or a cubic
    (3 compartments; :func:`_cubic_roots`). No LAPACK call: batched LAPACK kernels block on
    the CPU thread pool that host devices share (``benchmarks/README.md``, 2026-12-03); fit
    gradients cost the same as with ``eigh``. The rates interlace with the
    :math:`k_{j1}` (:math:`\lambda_1 < \min k_{j1} \le \lambda_2 \le \max k_{j1} < \lambda_3`),
    so the denominators stay away from zero.

    Returns
    -------
    lam : [n]
    residue : [n (input compartment), n (mode)]
    """
    n = len(vols)
    k10 = cl / vols[0]
    k1 = [qj / vols[0] for qj in qs]  # k_1j
    kb = [qj / vj for qj, vj in zip(qs, vols[1:])]  # k_j1
    if n == 2:
        s = k10 + k1[0] + kb[0]
        disc = (k10 - kb[0]) ** 2 + k1[0] * (k1[0] + 2.0 * (k10 + kb[0]))  # s^2 - 4 k10 k21, term by term
        big = 0.5 * (s + jnp.sqrt(disc))
        lam = jnp.stack([k10 * kb[0] / big, big])
    else:
        a2 = k10 + k1[0] + k1[1] + kb[0] + kb[1]
        a1 = k10 * kb[0] + k10 * kb[1] + kb[0] * kb[1] + k1[0] * kb[1] + k1[1] * kb[0]
        a0 = k10 * kb[0] * kb[1]
        lam = _cubic_roots(a2, a1, a0)
    denom = jnp.stack([jnp.prod(jnp.stack([lam[l] - lam[i] for l in range(n) if l != i])) for i in range(n)])
    rows = [jnp.prod(jnp.stack([kj - lam for kj in kb]), axis=0)]
    for m in range(1, n):
        others = [kb[j] - lam for j in range(n - 1) if j != m - 1]
        rows.append(kb[m - 1] * (jnp.prod(jnp.stack(others), axis=0) if others else jnp.ones_like(lam)))
    return lam, jnp.stack(rows) / denom[None, :]


def pk_modes(params: dict, model: str, absorption: bool) -> PKModes:
    """Eigen-modes of one subject's PK model from canonical parameters (scalars)
    (:func:`_disposition_modes`; one compartment: the single rate :math:`CL/V_1`)."""
    n = PK_MODELS[model]
    cl = params["CL"]
    dtype = jnp.result_type(cl, float)
    cl = jnp.asarray(cl, dtype)
    vols = [jnp.asarray(params["V1"], dtype)] + [jnp.asarray(params[f"V{j}"], dtype) for j in range(2, n + 1)]
    qs = [jnp.asarray(params[f"Q{j}"], dtype) for j in range(2, n + 1)]
    if n == 1:
        lam = jnp.reshape(cl / vols[0], (1,))
        residue = jnp.ones((1, 1), dtype)
    else:
        lam, residue = _disposition_modes(cl, vols, qs)
    # Concentration in central per unit amount into disposition compartment j, per mode.
    disp = residue / vols[0]  # [n (input cmt), n (mode)]
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
