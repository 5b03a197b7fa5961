"""Information criteria, in scikit-learn's sign convention (lower is better)."""

from __future__ import annotations

import math


def bic(log_likelihood: float, n_parameters: int, n_samples: float) -> float:
    """Bayesian information criterion, -2 LL + p ln n.

    With sample weights, ``log_likelihood`` is the weighted total and
    ``n_samples`` the total weight. R's mclust reports the negative.
    """
    return -2.0 * log_likelihood + n_parameters * math.log(n_samples)


def aic(log_likelihood: float, n_parameters: int) -> float:
    """Akaike information criterion, -2 LL + 2 p."""
    return -2.0 * log_likelihood + 2.0 * n_parameters


def icl(bic_value: float, classification: float) -> float:
    """Integrated completed likelihood (Biernacki et al. 2000) in scikit-learn's sign.

    ``classification`` is sum_i w_i log max_k p(k | x_i) (at most 0), so ICL
    = BIC - 2 sum_i log max_k p(k | x_i) is at least BIC; R's mclust reports
    the negative (higher is better there).
    """
    return bic_value - 2.0 * classification
