r"""Haematopoietic reconstitution after stem-cell transplantation (Stiehl / Marciniak-Czochra).

Multi-compartment self-renewal model of granulopoiesis (Marciniak-Czochra et al. 2009;
Stiehl et al. 2014, 2015; MODELS.md section 5.4, structure as coded in radivot/myelo
``stiehl15.R`` [T]): stem cells :math:`C_1` and progenitors :math:`C_2` in the marrow
divide at rates :math:`p_1, p_2`; a fraction :math:`a_i s` of the daughters self-renews,
the rest moves on; mature neutrophils :math:`C_3` in blood die at :math:`d_3`. The
self-renewal signal :math:`s = 1/(1 + k C_3)` falls as the mature count rises (the
feedback). An optional conditioning drug (input ``drug``, e.g. a K-PD virtual drug
amount :math:`A(t)`) kills the dividing compartments at the first-order rate
:math:`\kappa(t) = \mathrm{slope}\,A(t)`:

.. math::

    s &= \frac{1}{1 + k\,C_3} \\
    \frac{dC_1}{dt} &= (2 a_1 s - 1)\,p_1 C_1 - \kappa C_1 \\
    \frac{dC_2}{dt} &= 2 (1 - a_1 s)\,p_1 C_1 + (2 a_2 s - 1)\,p_2 C_2 - \kappa C_2 \\
    \frac{dC_3}{dt} &= 2 (1 - a_2 s)\,p_2 C_2 - d_3 C_3 \\
    ANC &= C_3 / (1000\,V_B) \quad (10^9/\mathrm{L})

Cell numbers are in :math:`10^6` cells per kg body weight (the unit of a CD34+ graft
dose), :math:`V_B` is the blood volume (L/kg), so :math:`C_3/(1000 V_B)` is the
neutrophil count in :math:`10^9`/L.

Steady state (engrafted, no drug). As in radivot's derivation (``stiehl15fig3.R``), the
self-renewal fraction :math:`a_2` and the feedback constant :math:`k` follow from the steady
state; here the progenitor division rate :math:`p_2` is a parameter and the progenitor pool
:math:`C_{2,ss}` is derived (radivot fixes :math:`C_{2,ss}` and derives :math:`p_2`; the two
are equivalent, and with :math:`p_2` given the speed of the progenitor expansion after a graft
does not depend on the set point :math:`Circ_0`). With :math:`C_{3,ss} = 1000\,V_B\,Circ_0`
and :math:`x = d_3 C_{3,ss} / (p_1 C_{1,ss})` (must exceed 2),

.. math::

    s_{ss} = \frac{1}{2 a_1}, \quad k = \frac{2 a_1 - 1}{C_{3,ss}}, \quad
    \rho = \frac{a_2}{a_1} = \frac{x - 2}{x - 1}, \quad
    C_{2,ss} = \frac{d_3 C_{3,ss} - p_1 C_{1,ss}}{p_2} = \frac{p_1 C_{1,ss}\,(x - 1)}{p_2}.

With :math:`u = 2 a_1 s` and :math:`\delta = u - 1 = (2a_1 - 1)(1 - C_3/C_{3,ss})/(1 + k C_3)`
(exactly zero at :math:`C_3 = C_{3,ss}`) the same equations are evaluated as

.. math::

    \frac{dC_1}{dt} &= \delta\,p_1 C_1 - \kappa C_1 \\
    \frac{dC_2}{dt} &= p_1 C_{1,ss} \left(\frac{C_1}{C_{1,ss}} - \frac{C_2}{C_{2,ss}}\right)
        + \delta\,(\rho\,p_2 C_2 - p_1 C_1) - \kappa C_2 \\
    \frac{dC_3}{dt} &= d_3 C_{3,ss} \left(\frac{C_2}{C_{2,ss}} - \frac{C_3}{C_{3,ss}}\right)
        - \rho\,\delta\,p_2 C_2

(identities :math:`(1 - \rho) p_2 C_{2,ss} = p_1 C_{1,ss}` and
:math:`(2 - \rho) p_2 C_{2,ss} = d_3 C_{3,ss}`), so every derivative is exactly zero at
the steady state, and :math:`ANC = Circ_0\,C_3/C_{3,ss}` returns :math:`Circ_0` exactly.

Post-mitotic maturation (option ``n_maturation`` = :math:`n`, default 0 = the model above).
With :math:`n > 0` the cells leaving :math:`C_2` (the flux :math:`J = 2(1 - a_2 s)\,p_2 C_2`,
i.e. :math:`J = d_3 C_{3,ss}\,C_2/C_{2,ss} - \rho\,\delta\,p_2 C_2` in the form above) do not
enter the blood at once but pass a chain of :math:`n` non-dividing marrow compartments
:math:`M_1 \ldots M_n` (band and segmented neutrophils, the marrow reserve) with mean transit
time ``MTT_mat`` (h), :math:`k_{mat} = n/MTT_{mat}`; the conditioning does not kill them:

.. math::

    \frac{dM_1}{dt} &= J - k_{mat} M_1, \qquad
    \frac{dM_i}{dt} = k_{mat} (M_{i-1} - M_i) \quad (i = 2..n) \\
    \frac{dC_3}{dt} &= k_{mat} M_n - d_3 C_3, \qquad M_{i,ss} = d_3 C_{3,ss} / k_{mat}.

The states are kept relative to their baseline, :math:`m_i = M_i / M_{i,ss}` (1 at the
steady state), and evaluated as

.. math::

    \frac{dm_1}{dt} &= k_{mat}\left(\frac{C_2}{C_{2,ss}} - m_1\right)
        - k_{mat}\,\frac{\rho\,\delta\,p_2 C_2}{d_3 C_{3,ss}}, \qquad
    \frac{dm_i}{dt} = k_{mat} (m_{i-1} - m_i) \\
    \frac{dC_3}{dt} &= d_3 C_{3,ss} \left(m_n - \frac{C_3}{C_{3,ss}}\right),

so the steady state stays exact. The chain delays the blood response to the progenitor pool
by ``MTT_mat`` on average: after a transplant the grafted progenitors expand for several days
before their progeny reach the blood, and after the conditioning the cells already in the
chain keep the count up for a few days (no chain: the count falls with :math:`d_3` at once).
Literature range of the post-mitotic neutrophil maturation: about 5-7 days in health, shorter
(about 2-4 days) under G-CSF or stress; the post-mitotic part of the Friberg/Quartino transit
chains is 4/5 x 133 h = 106 h (MODELS.md 2.1 [T]).

Transplant: myeloablative conditioning is the drug kill (the recipient's marrow falls to
a residual :math:`e^{-\mathrm{slope}\,AUC}` of its size). The graft (CD34+ cells,
10^6 cells/kg) is given at day 0 as two bolus records of the same cell dose, one into
:math:`C_1` (data CMT ``stem_cmt``, default 2) and one into :math:`C_2` (CMT
``progenitor_cmt``, default 3), whose bioavailabilities ``F<stem_cmt>`` and
``F<progenitor_cmt>`` (read by the system's dose handling) are the fractions of the
infused cells that home to the marrow and act as stem cells and as committed
progenitors: the graft's effective doses. Early recovery is the expansion of the grafted
progenitors at :math:`(2 a_2 s - 1) p_2` (about :math:`0.7 p_2` while :math:`C_3` is low);
the grafted stem cells regrow at :math:`(2 a_1 s - 1) p_1` and sustain the graft.

Parameters ``a1`` (self-renewal fraction of stem cells, in (0.5, 1)), ``p1``, ``p2``, ``d3``
(1/h), ``Circ0`` (engrafted ANC, 10^9/L), ``C1ss`` (10^6 cells/kg), ``VB``
(L/kg), ``slope`` (kill rate per unit of the conditioning signal, 1/h), the graft
fractions ``F<stem_cmt>``, ``F<progenitor_cmt>`` (an option set to 0: no such parameter) and,
with ``n_maturation > 0``, ``MTT_mat`` (h). Signals ``ANC`` (or ``output``) and ``s``.

References
----------
Marciniak-Czochra A, Stiehl T, Ho AD, Jaeger W, Wagner W. Modeling of asymmetric cell
division in hematopoietic stem cells: regulation of self-renewal is essential for efficient
repopulation. Stem Cells Dev 2009;18(3):377-385 [U: citation from memory].
Stiehl T, Ho AD, Marciniak-Czochra A. The impact of CD34+ cell dose on engraftment after
SCTs: personalized estimates based on mathematical modeling. Bone Marrow Transplant
2014;49:30-37 [U citation details].
Stiehl T, Baran N, Ho AD, Marciniak-Czochra A. Cell division patterns in acute myeloid
leukemia stem-like cells determine clinical course: a model to predict patient survival.
Cancer Res 2015;75(6):940-949 (as cited by radivot; pages [U]).
radivot/myelo ``R/stiehl15.R`` and ``demo/stiehl15fig3.R`` (values [T]).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..component import Component

__all__ = ["StiehlReconstitution", "stiehl_derived"]


def stiehl_derived(theta: dict) -> dict:
    """Steady-state quantities ``C3ss, C2ss, x, rho (= a2/a1), a2, k`` of the parameters ``theta``."""
    c3ss = 1000.0 * theta["VB"] * theta["Circ0"]
    x = theta["d3"] * c3ss / (theta["p1"] * theta["C1ss"])
    rho = (x - 2.0) / (x - 1.0)
    c2ss = theta["p1"] * theta["C1ss"] * (x - 1.0) / theta["p2"]
    k = (2.0 * theta["a1"] - 1.0) / c3ss
    return {"C3ss": c3ss, "C2ss": c2ss, "x": x, "rho": rho, "a2": rho * theta["a1"], "k": k}


class StiehlReconstitution(Component):
    """Stem cells -> progenitors -> blood neutrophils with self-renewal feedback (module docstring).

    States ``C1``, ``C2``, ``C3`` (10^6 cells/kg) and, with ``n_maturation`` = n > 0, ``M1`` ... ``Mn``
    (maturation chain, relative to its baseline: 1 at the steady state); dose targets ``C1``, ``C2`` (the
    graft), ``C3``; input ``drug`` (conditioning signal; bind it to a K-PD amount); signals ``ANC``
    (10^9/L) and ``s`` (self-renewal signal).

    Parameters
    ----------
    stem_cmt, progenitor_cmt : int
        Data CMTs of the graft records into ``C1`` and ``C2`` (their ``F<cmt>`` parameters; 0: none).
    n_maturation : int
        Number of post-mitotic maturation compartments between ``C2`` and ``C3`` (default 0: none,
        the published model); > 0 adds the parameter ``MTT_mat`` (h).
    output : str
        Name of the ANC signal.
    """

    stem_cmt: int = eqx.field(static=True, default=2)
    progenitor_cmt: int = eqx.field(static=True, default=3)
    n_maturation: int = eqx.field(static=True, default=0)
    output: str = eqx.field(static=True, default="ANC")
    name: str = eqx.field(static=True, default="marrow")

    def __check_init__(self):
        for opt in ("stem_cmt", "progenitor_cmt"):
            if int(getattr(self, opt)) < 0:
                raise ValueError(f"Invalid `{opt}`: got `{getattr(self, opt)}`, must be >= 0 (0: no F parameter).")
        if int(self.stem_cmt) > 0 and int(self.stem_cmt) == int(self.progenitor_cmt):
            raise ValueError(f"Invalid `progenitor_cmt`: got `{self.progenitor_cmt}`, must differ from `stem_cmt`.")
        if isinstance(self.n_maturation, bool) or int(self.n_maturation) != self.n_maturation or self.n_maturation < 0:
            raise ValueError(f"Invalid `n_maturation`: got `{self.n_maturation}`, must be an integer >= 0.")

    @property
    def parameter_names(self):
        graft = tuple(f"F{int(c)}" for c in (self.stem_cmt, self.progenitor_cmt) if int(c) > 0)
        mat = ("MTT_mat",) if int(self.n_maturation) > 0 else ()
        return ("a1", "p1", "p2", "d3", "Circ0", "C1ss", "VB", "slope") + graft + mat

    @property
    def state_names(self):
        return ("C1", "C2", "C3") + tuple(f"M{i + 1}" for i in range(int(self.n_maturation)))

    @property
    def inputs(self):
        return ("drug",)

    @property
    def signals(self):
        return (self.output, "s")

    @property
    def dose_targets(self):
        return ("C1", "C2", "C3")

    def initial_state(self, theta):
        d = stiehl_derived(theta)
        c1 = jnp.asarray(theta["C1ss"], dtype=float)
        c2 = jnp.asarray(d["C2ss"], dtype=float)
        if int(self.n_maturation) > 0:
            c2 = jax.lax.optimization_barrier(c2)  # the same rounding as in vector_field (see there)
        chain = [jnp.ones_like(c1)] * int(self.n_maturation)  # relative to the baseline d3 C3ss / kmat
        return jnp.stack([c1, c2, jnp.asarray(d["C3ss"], dtype=float)] + chain)

    def signal(self, t, order, y, theta, inputs, ctx):
        d = stiehl_derived(theta)
        return {self.output: theta["Circ0"] * (y[2] / d["C3ss"]), "s": 1.0 / (1.0 + d["k"] * y[2])}

    def vector_field(self, t, y, theta, inputs, ctx):
        d = stiehl_derived(theta)
        c1, c2, c3 = y[0], y[1], y[2]
        c1ss, c2ss, c3ss = theta["C1ss"], d["C2ss"], d["C3ss"]
        if int(self.n_maturation) > 0:
            # XLA's simplifier rewrites c2 / (num / p2) as c2 * p2 / num, whose rounding differs from the
            # C2ss of initial_state by an ulp; on the relative chain states that ulp would drift (no-chain
            # path left as it was, bit for bit)
            c2ss = jax.lax.optimization_barrier(c2ss)
        p1, p2, rho = theta["p1"], theta["p2"], d["rho"]
        # delta = 2 a1 s - 1, written so that it is exactly 0 at C3 = C3ss
        delta = (2.0 * theta["a1"] - 1.0) * (1.0 - c3 / c3ss) / (1.0 + d["k"] * c3)
        kill = theta["slope"] * jnp.maximum(inputs["drug"], 0.0)
        d_c1 = delta * p1 * c1 - kill * c1
        d_c2 = p1 * c1ss * (c1 / c1ss - c2 / c2ss) + delta * (rho * p2 * c2 - p1 * c1) - kill * c2
        n = int(self.n_maturation)
        if n == 0:
            d_c3 = theta["d3"] * c3ss * (c2 / c2ss - c3 / c3ss) - rho * delta * p2 * c2
            return jnp.stack([d_c1, d_c2, d_c3])
        # maturation chain m_i = M_i / M_ss (M_ss = d3 C3ss / kmat): the C2 outflux J enters m_1
        kmat = n / theta["MTT_mat"]
        m = y[3:3 + n]
        d_m1 = kmat * (c2 / c2ss - m[0]) - kmat * rho * delta * p2 * c2 / (theta["d3"] * c3ss)
        d_m = [d_m1] + [kmat * (m[i - 1] - m[i]) for i in range(1, n)]
        d_c3 = theta["d3"] * c3ss * (m[n - 1] - c3 / c3ss)
        return jnp.stack([d_c1, d_c2, d_c3] + d_m)
