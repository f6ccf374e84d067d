r"""Multi-lineage marrow: a shared multipotent progenitor pool feeding three lineages (Fornari 2019).

The haematopoiesis systems-pharmacology model of Fornari et al. (2019), in the
23-state structure of a public third-party re-implementation (MODELS.md 5.1, values
[T]): 2 PK states (here a separate PK component) + 21 marrow and blood states in one
component, :class:`FornariMarrow`. A drug concentration :math:`C` (input ``drug``,
umol/L for carboplatin) creates DNA damage :math:`D` that slows the proliferation of
the multipotent (MPP), common myeloid (CMP) and megakaryocyte-erythroid (MEP)
progenitors and kills the proliferative transit compartments of the reticulocyte and
platelet chains. Because the MPP pool feeds both CMP and MEP, a hit on it lowers all
lineages together (correlated toxicity through the shared pool).

States (21, or 17 with ``monocytes = False``)::

    D, MPP, CMP, MEP,
    T1_Neut..T3_Neut, Neut, [T1_Mono..T3_Mono, Mono],
    T1_Ret..T3_Ret, Ret, RBC, T1_Plt..T3_Plt, Plt,
    [Stem]                               (Henrich 2017 option ``stem_cell``)

Equations (time in h; counts in 10^9/L; :math:`a_X = 3/\mathrm{MTT}_X`; feedback
ratios clipped to [0.2, 50] for the stem and maturation feedbacks, [0.2, 10] for the
transit-proliferation feedbacks, as in the re-implementation):

.. math::

    \frac{dD}{dt} &= k_{dam} C - k_{rep} D \\
    f_{stem} &= \left(\tfrac12 \tfrac{CMP_0}{CMP} + \tfrac12 \tfrac{MEP_0}{MEP}\right)^{\gamma_{stem}}, \quad
    f_{mat,CMP} = \left(\tfrac12 \tfrac{Neut_0}{Neut} + \tfrac12 \tfrac{Mono_0}{Mono}\right)^{\gamma_{mat,CMP}}, \quad
    f_{mat,MEP} = \left(\tfrac{RBC_0}{RBC}\right)^{\gamma_{mat,MEP}} \\
    f_{prol,Ret} &= \left(\tfrac12 \tfrac{Ret_0}{Ret} + \tfrac12 \tfrac{RBC_0}{RBC}\right)^{\gamma_{prolTrans}}, \quad
    f_{prol,Plt} = \left(\tfrac{Plt_0}{Plt}\right)^{\gamma_{prolTrans}} \\
    \frac{dMPP}{dt} &= k_{stem} f_{stem} + k_{prol,MPP} (1 - \mathrm{Slope}_{MPP} D)\,MPP
        - (k_{tr,CMP} f_{mat,CMP} + k_{tr,MEP} f_{mat,MEP})\,MPP \\
    \frac{dCMP}{dt} &= k_{prol,CMP} (1 - \mathrm{Slope}_{CMP} D)\,CMP + k_{tr,CMP} f_{mat,CMP} MPP
        - (k_{tr,Neut} + k_{tr,Mono})\,CMP \\
    \frac{dMEP}{dt} &= k_{prol,MEP} (1 - \mathrm{Slope}_{MEP} D)\,MEP + k_{tr,MEP} f_{mat,MEP} MPP
        - (k_{tr,Ret} + k_{tr,Plt})\,MEP \\
    \frac{dT_1^{N}}{dt} &= k_{tr,Neut} CMP - a_N T_1^N, \quad \frac{dT_i^N}{dt} = a_N (T_{i-1}^N - T_i^N), \quad
    \frac{dNeut}{dt} = a_N T_3^N - k_{circ,Neut} Neut \quad \text{(monocytes alike)} \\
    \kappa_X &= \delta_X\,\mathrm{Slope}_{MEP}\,k_{prol,X}\,D \quad (X = Ret, Plt) \\
    \frac{dT_1^X}{dt} &= (k_{prol,X} f_{prol,X} - \kappa_X) T_1^X + k_{tr,X} MEP - a_X T_1^X, \quad
    \frac{dT_2^X}{dt} = (k_{prol,X} f_{prol,X} - \kappa_X) T_2^X + a_X (T_1^X - T_2^X) \\
    \frac{dT_3^X}{dt} &= a_X (T_2^X - T_3^X), \quad \frac{dRet}{dt} = a_R T_3^R - k_{circ,Ret} Ret, \quad
    \frac{dRBC}{dt} = k_{circ,Ret} Ret - k_{circ,RBC} RBC, \quad \frac{dPlt}{dt} = a_P T_3^P - k_{circ,Plt} Plt

The rates are derived from the steady state (Fornari's supplementary Eq. S3-S4 as
coded in the re-implementation), with the amplification factors :math:`\lambda_1`
(Ret transit), :math:`\lambda_2` (Plt transit), :math:`\lambda_3` (CMP), :math:`\lambda_4`
(MEP), :math:`\lambda_5` (MPP):

.. math::

    k_{circ,Ret} &= k_{circ,RBC} RBC_0/Ret_0, \quad k_{tr,Neut} = k_{circ,Neut} Neut_0/CMP_0, \quad
    k_{tr,Mono} = k_{circ,Mono} Mono_0/CMP_0 \\
    k_{tr,Ret} &= k_{circ,Ret} Ret_0/(\lambda_1^2 MEP_0), \quad k_{tr,Plt} = k_{circ,Plt} Plt_0/(\lambda_2^2 MEP_0) \\
    k_{prol,X} &= a_X (1 - 1/\lambda_X) \quad (\lambda_X = \lambda_1 \text{ for Ret}, \lambda_2 \text{ for Plt}) \\
    k_{prol,CMP} &= (k_{tr,Neut} + k_{tr,Mono})/\lambda_3, \quad k_{prol,MEP} = (k_{tr,Ret} + k_{tr,Plt})/\lambda_4 \\
    k_{tr,CMP} &= (k_{tr,Neut} + k_{tr,Mono} - k_{prol,CMP}) CMP_0/MPP_0, \quad
    k_{tr,MEP} = (k_{tr,Ret} + k_{tr,Plt} - k_{prol,MEP}) MEP_0/MPP_0 \\
    k_{prol,MPP} &= (k_{tr,CMP} + k_{tr,MEP})/\lambda_5, \quad k_{stem} = (k_{tr,CMP} + k_{tr,MEP} - k_{prol,MPP}) MPP_0

Steady state without drug: :math:`D = 0`, the progenitors and circulating counts at
their baselines, :math:`T^N_i = k_{circ,Neut} Neut_0 / a_N` (monocytes alike),
:math:`T_2^X = T_3^X = k_{circ,X} X_0 / a_X`, :math:`T_1^X = T_2^X/\lambda_X`. The
implementation writes every derivative as a sum of differences that are exactly zero
there (e.g. :math:`dCMP/dt = (k_{tr,Neut}+k_{tr,Mono}-k_{prol,CMP})\,(CMP_0 f_{mat,CMP}
MPP/MPP_0 - CMP) - k_{prol,CMP} \mathrm{Slope}_{CMP} D\,CMP`), algebraically the
equations above, so the no-drug steady state holds to rounding-free zero.

Outputs (signals): ``ANC`` (= Neut), ``PLT`` (= Plt), ``RBC`` and ``RET`` (10^9/L),
``HGB`` (g/dL) :math:`= RBC \cdot MCH \cdot 10^{-4}` (RBC in 10^9 cells/L, MCH in pg
per cell: :math:`10^9\,\mathrm{cells/L} \times 1\,\mathrm{pg} = 10^{-3}\,\mathrm{g/L} =
10^{-4}\,\mathrm{g/dL}`; MCH 30 pg and RBC0 5000 give 15 g/dL). Dose targets ``Plt``
and ``RBC`` (transfusions, amounts in 10^9 cells/L of blood).

Option ``monocytes`` (default True): the monocyte chain (``Mono0``, ``MTT_Mono``,
``kcirc_Mono``) of the 23-state structure. Without it the CMP feeds neutrophils only
and :math:`f_{mat,CMP} = (Neut_0/Neut)^{\gamma_{mat,CMP}}` (the rates above with
:math:`k_{tr,Mono} = 0`).

Option ``stem_cell`` (bone-marrow exhaustion after Henrich et al. 2017, MODELS.md 5.2):
a slowly self-renewing stem pool ``Stem`` (relative to its baseline, 1 at rest) supplies
the MPP influx, :math:`k_{stem} f_{stem}\,Stem`, and is hit by the MPP drug effect:

.. math::

    \frac{dStem}{dt} = k_{HSC}\,Stem\left[(1 - \mathrm{Slope}_{MPP} D)
        \left(\tfrac{MPP_0}{MPP}\right)^{\gamma_{HSC}} - 1\right]

(Henrich's :math:`dStem/dt = k_{stem} Stem (1-E) FB - k_{stem} Stem` with the MPP count as
the feedback signal). With a slow :math:`k_{HSC}` the pool recovers over months, so each
cycle depletes it further and lowers every lineage across cycles. Henrich's values were
not retrieved ([U]); ``kHSC`` and ``gamma_HSC`` are parameters.

Parameters (names as in the re-implementation): ``MPP0, CMP0, MEP0, Neut0, Ret0, RBC0,
Plt0`` (10^9/L), ``MTT_Neut, MTT_Ret, MTT_Plt`` (h), ``kcirc_Neut, kcirc_Plt, kcirc_RBC``
(1/h), ``Slope_MPP, Slope_CMP, Slope_MEP`` (per umol/L of damage), ``delta_Ret,
delta_Plt`` (1), ``gamma_stem, gamma_mat_CMP, gamma_mat_MEP, gamma_prolTrans`` (1),
``kdam, krep`` (1/h), ``lambda1..lambda5`` (> 1), ``MCH`` (pg); with monocytes ``Mono0,
MTT_Mono, kcirc_Mono``; with the stem pool ``kHSC`` (1/h), ``gamma_HSC``.

References
----------
Fornari C, Oplustil O'Connor L, Pin C, Smith A, Yates JWT, Cheung SYA, Jodrell DI,
Mettetal JT, Collins TA. Quantifying drug-induced bone marrow toxicity using a novel
haematopoiesis systems pharmacology model. CPT Pharmacometrics Syst Pharmacol
2019;8(11):858-868. doi:10.1002/psp4.12459

Henrich A, Joerger M, Kraff S, et al. Semimechanistic bone marrow exhaustion
pharmacokinetic/pharmacodynamic model for chemotherapy-induced cumulative neutropenia.
J Pharmacol Exp Ther 2017;362(2):347-358. doi:10.1124/jpet.117.240309
"""

from __future__ import annotations

from types import MappingProxyType

import equinox as eqx
import jax.numpy as jnp

from ..component import Component

__all__ = ["FornariMarrow", "HGB_PER_RBC_MCH"]

#: g/dL of haemoglobin per (10^9 red cells/L x 1 pg/cell).
HGB_PER_RBC_MCH = 1e-4

#: Floor on the counts inside the feedback ratios (10^9/L).
_FLOOR = 1e-9


def _fb(ratio, gamma, hi):
    """Clipped feedback ``clip(ratio, 0.2, hi) ** gamma`` (exactly 1 at ratio 1)."""
    return jnp.clip(ratio, 0.2, hi) ** gamma


def _ratio(base, x):
    return base / jnp.maximum(x, _FLOOR)


class FornariMarrow(Component):
    """Fornari 2019 multi-lineage marrow with optional Henrich 2017 stem pool (module docstring).

    Parameters
    ----------
    monocytes : bool
        Keep the monocyte chain (the 23-state structure); default True.
    stem_cell : bool
        Henrich 2017 self-renewing stem pool feeding the MPP (cumulative exhaustion).
    name : str
        Component name.

    Input ``drug``: the drug concentration in the unit of ``1/Slope`` (umol/L).
    """

    monocytes: bool = eqx.field(static=True, default=True)
    stem_cell: bool = eqx.field(static=True, default=False)
    name: str = eqx.field(static=True, default="marrow")

    # ------------------------------------------------------------------ structure
    @property
    def parameter_names(self):
        names = ["MPP0", "CMP0", "MEP0", "Neut0", "Ret0", "RBC0", "Plt0",
                 "MTT_Neut", "MTT_Ret", "MTT_Plt", "kcirc_Neut", "kcirc_Plt", "kcirc_RBC",
                 "Slope_MPP", "Slope_CMP", "Slope_MEP", "delta_Ret", "delta_Plt",
                 "gamma_stem", "gamma_mat_CMP", "gamma_mat_MEP", "gamma_prolTrans",
                 "kdam", "krep", "lambda1", "lambda2", "lambda3", "lambda4", "lambda5", "MCH"]
        if self.monocytes:
            names += ["Mono0", "MTT_Mono", "kcirc_Mono"]
        if self.stem_cell:
            names += ["kHSC", "gamma_HSC"]
        return tuple(names)

    @property
    def state_names(self):
        names = ["D", "MPP", "CMP", "MEP", "T1_Neut", "T2_Neut", "T3_Neut", "Neut"]
        if self.monocytes:
            names += ["T1_Mono", "T2_Mono", "T3_Mono", "Mono"]
        names += ["T1_Ret", "T2_Ret", "T3_Ret", "Ret", "RBC", "T1_Plt", "T2_Plt", "T3_Plt", "Plt"]
        if self.stem_cell:
            names.append("Stem")
        return tuple(names)

    @property
    def inputs(self):
        return ("drug",)

    @property
    def signals(self):
        return ("ANC", "PLT", "HGB", "RBC", "RET")

    @property
    def dose_targets(self):
        return ("Plt", "RBC")

    @property
    def baseline_parameters(self):
        """Lineage -> baseline parameter (HGB's baseline is ``RBC0 * MCH * 1e-4``, not a parameter)."""
        return MappingProxyType({"ANC": "Neut0", "PLT": "Plt0", "HGB": None})

    # ------------------------------------------------------------------ rates
    def rates(self, theta) -> dict:
        """Derived rate constants and steady-state transit amounts (module docstring, Eq. S3-S4)."""
        p = theta
        r = {}
        r["a_Neut"] = 3.0 / p["MTT_Neut"]
        r["a_Ret"] = 3.0 / p["MTT_Ret"]
        r["a_Plt"] = 3.0 / p["MTT_Plt"]
        r["kcirc_Ret"] = p["kcirc_RBC"] * p["RBC0"] / p["Ret0"]
        r["ktr_Neut"] = p["kcirc_Neut"] * p["Neut0"] / p["CMP0"]
        r["ktr_Mono"] = p["kcirc_Mono"] * p["Mono0"] / p["CMP0"] if self.monocytes else 0.0
        r["ktr_Ret"] = r["kcirc_Ret"] * p["Ret0"] / (p["lambda1"] ** 2 * p["MEP0"])
        r["ktr_Plt"] = p["kcirc_Plt"] * p["Plt0"] / (p["lambda2"] ** 2 * p["MEP0"])
        r["kprol_Ret"] = r["a_Ret"] * (1.0 - 1.0 / p["lambda1"])
        r["kprol_Plt"] = r["a_Plt"] * (1.0 - 1.0 / p["lambda2"])
        r["kprol_CMP"] = (r["ktr_Neut"] + r["ktr_Mono"]) / p["lambda3"]
        r["kprol_MEP"] = (r["ktr_Ret"] + r["ktr_Plt"]) / p["lambda4"]
        r["net_CMP"] = r["ktr_Neut"] + r["ktr_Mono"] - r["kprol_CMP"]
        r["net_MEP"] = r["ktr_Ret"] + r["ktr_Plt"] - r["kprol_MEP"]
        r["ktr_CMP"] = r["net_CMP"] * p["CMP0"] / p["MPP0"]
        r["ktr_MEP"] = r["net_MEP"] * p["MEP0"] / p["MPP0"]
        r["kprol_MPP"] = (r["ktr_CMP"] + r["ktr_MEP"]) / p["lambda5"]
        r["net_MPP"] = r["ktr_CMP"] + r["ktr_MEP"] - r["kprol_MPP"]
        r["kstem"] = r["net_MPP"] * p["MPP0"]
        r["T_Neut0"] = p["kcirc_Neut"] * p["Neut0"] / r["a_Neut"]
        r["T2_Ret0"] = r["kcirc_Ret"] * p["Ret0"] / r["a_Ret"]
        r["T1_Ret0"] = r["T2_Ret0"] / p["lambda1"]
        r["T2_Plt0"] = p["kcirc_Plt"] * p["Plt0"] / r["a_Plt"]
        r["T1_Plt0"] = r["T2_Plt0"] / p["lambda2"]
        if self.monocytes:
            r["a_Mono"] = 3.0 / p["MTT_Mono"]
            r["T_Mono0"] = p["kcirc_Mono"] * p["Mono0"] / r["a_Mono"]
        return r

    def initial_state(self, theta):
        p = theta
        r = self.rates(theta)
        f = lambda x: jnp.asarray(x, dtype=float)  # noqa: E731
        y = [f(0.0), f(p["MPP0"]), f(p["CMP0"]), f(p["MEP0"]),
             f(r["T_Neut0"]), f(r["T_Neut0"]), f(r["T_Neut0"]), f(p["Neut0"])]
        if self.monocytes:
            y += [f(r["T_Mono0"])] * 3 + [f(p["Mono0"])]
        y += [f(r["T1_Ret0"]), f(r["T2_Ret0"]), f(r["T2_Ret0"]), f(p["Ret0"]), f(p["RBC0"]),
              f(r["T1_Plt0"]), f(r["T2_Plt0"]), f(r["T2_Plt0"]), f(p["Plt0"])]
        if self.stem_cell:
            y.append(f(1.0))
        return jnp.stack(y)

    def _unpack(self, y) -> dict:
        return {n: y[i] for i, n in enumerate(self.state_names)}

    def signal(self, t, order, y, theta, inputs, ctx):
        s = self._unpack(y)
        return {"ANC": s["Neut"], "PLT": s["Plt"], "RBC": s["RBC"], "RET": s["Ret"],
                "HGB": s["RBC"] * theta["MCH"] * HGB_PER_RBC_MCH}

    # ------------------------------------------------------------------ dynamics
    @staticmethod
    def _chain(a, t0, inflow_ratio, t1, t2, t3):
        """Non-proliferative transit chain ``a (T0 u - T1), a (T1 - T2), a (T2 - T3)``."""
        return [a * (t0 * inflow_ratio - t1), a * (t1 - t2), a * (t2 - t3)]

    @staticmethod
    def _prolif_chain(a, kprol, lam, t1_0, inflow_ratio, fprol, kill, t1, t2, t3):
        """Ret/Plt transit chain with two amplifying compartments, exact at rest:
        ``kprol T1 + ktr MEP - a T1 = (a/lam)(T1_0 MEP/MEP0 - T1)``, ``kprol T2 + a T1 - a T2 = a (T1 - T2/lam)``."""
        extra1 = t1 * (kprol * (fprol - 1.0) - kill)
        extra2 = t2 * (kprol * (fprol - 1.0) - kill)
        d1 = extra1 + (a / lam) * (t1_0 * inflow_ratio - t1)
        d2 = extra2 + a * (t1 - t2 / lam)
        d3 = a * (t2 - t3)
        return [d1, d2, d3]

    def vector_field(self, t, y, theta, inputs, ctx):
        p = theta
        r = self.rates(theta)
        s = self._unpack(y)
        conc = jnp.maximum(inputs["drug"], 0.0)
        dmg = s["D"]
        d_d = p["kdam"] * conc - p["krep"] * dmg

        # feedbacks (exactly 1 at the steady state)
        f_stem = _fb(0.5 * _ratio(p["CMP0"], s["CMP"]) + 0.5 * _ratio(p["MEP0"], s["MEP"]), p["gamma_stem"], 50.0)
        if self.monocytes:
            r_cmp = 0.5 * _ratio(p["Neut0"], s["Neut"]) + 0.5 * _ratio(p["Mono0"], s["Mono"])
        else:
            r_cmp = _ratio(p["Neut0"], s["Neut"])
        f_mat_cmp = _fb(r_cmp, p["gamma_mat_CMP"], 50.0)
        f_mat_mep = _fb(_ratio(p["RBC0"], s["RBC"]), p["gamma_mat_MEP"], 50.0)
        f_prol_ret = _fb(0.5 * _ratio(p["Ret0"], s["Ret"]) + 0.5 * _ratio(p["RBC0"], s["RBC"]),
                         p["gamma_prolTrans"], 10.0)
        f_prol_plt = _fb(_ratio(p["Plt0"], s["Plt"]), p["gamma_prolTrans"], 10.0)

        # MPP: kstem f_stem [Stem] + kprol (1 - S D) MPP - (ktr_CMP f_c + ktr_MEP f_m) MPP, with
        # kstem = net_MPP MPP0 and net_MPP = ktr_CMP + ktr_MEP - kprol_MPP, regrouped into differences.
        mpp = s["MPP"]
        supply = f_stem * s["Stem"] if self.stem_cell else f_stem
        d_mpp = (r["kstem"] * (supply - 1.0) + r["net_MPP"] * (p["MPP0"] - mpp)
                 - mpp * (r["kprol_MPP"] * p["Slope_MPP"] * dmg + r["ktr_CMP"] * (f_mat_cmp - 1.0)
                          + r["ktr_MEP"] * (f_mat_mep - 1.0)))
        # CMP / MEP: ktr_X f MPP - net_X X - kprol_X S D X, with ktr_X MPP0 = net_X X0
        u_cmp = f_mat_cmp * mpp / p["MPP0"]
        u_mep = f_mat_mep * mpp / p["MPP0"]
        d_cmp = r["net_CMP"] * (p["CMP0"] * u_cmp - s["CMP"]) - r["kprol_CMP"] * p["Slope_CMP"] * dmg * s["CMP"]
        d_mep = r["net_MEP"] * (p["MEP0"] * u_mep - s["MEP"]) - r["kprol_MEP"] * p["Slope_MEP"] * dmg * s["MEP"]

        cmp_ratio = s["CMP"] / p["CMP0"]
        mep_ratio = s["MEP"] / p["MEP0"]
        out = [d_d, d_mpp, d_cmp, d_mep]
        # neutrophils: ktr_Neut CMP = a T0 (CMP/CMP0); a T3 - kcirc Neut = kcirc (Neut0 T3/T0 - Neut)
        out += self._chain(r["a_Neut"], r["T_Neut0"], cmp_ratio, s["T1_Neut"], s["T2_Neut"], s["T3_Neut"])
        out.append(p["kcirc_Neut"] * (p["Neut0"] * (s["T3_Neut"] / r["T_Neut0"]) - s["Neut"]))
        if self.monocytes:
            out += self._chain(r["a_Mono"], r["T_Mono0"], cmp_ratio, s["T1_Mono"], s["T2_Mono"], s["T3_Mono"])
            out.append(p["kcirc_Mono"] * (p["Mono0"] * (s["T3_Mono"] / r["T_Mono0"]) - s["Mono"]))
        # reticulocytes -> red cells
        kill_ret = p["delta_Ret"] * p["Slope_MEP"] * r["kprol_Ret"] * dmg
        out += self._prolif_chain(r["a_Ret"], r["kprol_Ret"], p["lambda1"], r["T1_Ret0"], mep_ratio, f_prol_ret,
                                  kill_ret, s["T1_Ret"], s["T2_Ret"], s["T3_Ret"])
        out.append(r["kcirc_Ret"] * (p["Ret0"] * (s["T3_Ret"] / r["T2_Ret0"]) - s["Ret"]))
        out.append(p["kcirc_RBC"] * (p["RBC0"] * (s["Ret"] / p["Ret0"]) - s["RBC"]))
        # platelets
        kill_plt = p["delta_Plt"] * p["Slope_MEP"] * r["kprol_Plt"] * dmg
        out += self._prolif_chain(r["a_Plt"], r["kprol_Plt"], p["lambda2"], r["T1_Plt0"], mep_ratio, f_prol_plt,
                                  kill_plt, s["T1_Plt"], s["T2_Plt"], s["T3_Plt"])
        out.append(p["kcirc_Plt"] * (p["Plt0"] * (s["T3_Plt"] / r["T2_Plt0"]) - s["Plt"]))
        if self.stem_cell:
            growth = (1.0 - p["Slope_MPP"] * dmg) * _fb(_ratio(p["MPP0"], mpp), p["gamma_HSC"], 50.0)
            out.append(p["kHSC"] * s["Stem"] * (growth - 1.0))
        return jnp.stack([jnp.asarray(v, dtype=float) for v in out])
