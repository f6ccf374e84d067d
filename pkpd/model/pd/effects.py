r"""Drug-effect functions :math:`E(C)` of the Friberg family.

=================  ===============================================  ==================
name               :math:`E(C)`                                      parameters
=================  ===============================================  ==================
``linear``         :math:`\mathrm{slope}\cdot C`                     slope
``capped_linear``  :math:`\min(1, \mathrm{slope}\cdot C)`            slope
``emax``           :math:`E_{max} C/(EC_{50}+C)`                     Emax, EC50
``sigmoid_emax``   :math:`E_{max} C^h/(EC_{50}^h+C^h)`               Emax, EC50, hill
``power``          :math:`\alpha C^\beta`                            alpha, beta
=================  ===============================================  ==================

The linear effect may exceed 1 (proliferation then decays during exposure), as in
Friberg et al. 2002 and DDMoRe 186; ``capped_linear`` is the form of the Stan/Torsten
benchmark (Pumas Bayesian benchmarks). Concentrations are clipped at 0 before use.
"""

from __future__ import annotations

import jax.numpy as jnp

DRUG_EFFECTS = {
    "linear": ("slope",),
    "capped_linear": ("slope",),
    "emax": ("Emax", "EC50"),
    "sigmoid_emax": ("Emax", "EC50", "hill"),
    "power": ("alpha", "beta"),
}


def drug_effect(kind: str, conc, theta: dict):
    """Evaluate :math:`E(C)` of the given ``kind`` (a static string)."""
    c = jnp.maximum(conc, 0.0)
    if kind == "linear":
        return theta["slope"] * c
    if kind == "capped_linear":
        return jnp.minimum(1.0, theta["slope"] * c)
    if kind == "emax":
        return theta["Emax"] * c / (theta["EC50"] + c)
    positive = c > 0
    safe_c = jnp.where(positive, c, 1.0)
    if kind == "sigmoid_emax":
        ratio = jnp.where(positive, (safe_c / theta["EC50"]) ** theta["hill"], 0.0)
        return theta["Emax"] * ratio / (1.0 + ratio)
    if kind == "power":
        return jnp.where(positive, theta["alpha"] * safe_c ** theta["beta"], 0.0)
    raise ValueError(f"Invalid `drug_effect`: got {kind!r}, must be one of {sorted(DRUG_EFFECTS)}")
