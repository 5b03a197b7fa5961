"""An in-memory reference EM for Gaussian mixtures with missing values (NaN).

Written straight from the formulas of Ghahramani and Jordan (1994), pattern by
pattern, with scipy's multivariate normal on the observed coordinates and the
explicit regression S_mo S_oo^-1, independently of daskem's kernels (no
Schur complements, no shifts, no packed statistics). The M-step follows
scikit-learn's conventions: counts + 10 eps, weights = counts / sum(counts),
reg_covar on the diagonal, and tied / diag / spherical as the pooled,
diagonal or averaged part of the expected scatter.
"""

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

EPS = np.finfo(np.float64).eps


def dense_covariances(covariances, covariance_type, n_components, n_features):
    """Per-component (K, d, d) covariances from daskem's shape of a covariance type."""
    covariances = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        return covariances.copy()
    if covariance_type == "tied":
        return np.repeat(covariances[None], n_components, axis=0)
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return np.stack([c * np.eye(n_features) for c in covariances])


def reference_e_step(X, weights, means, covariances, covariance_type):
    """E-step of the observed-data likelihood.

    Parameters
    ----------
    X : ndarray (n, d), NaN where missing
    weights, means, covariances : mixture parameters (daskem's shapes)
    covariance_type : str

    Returns
    -------
    dict
        ``log_prob`` (n, K): log pi_k + log N(x_o | mu_o, S_oo) (log pi_k for
        an all-missing row); ``log_likelihood`` (n,); ``resp`` (n, K);
        ``x_hat`` (n, K, d): the rows with each hole replaced by
        E[x_m | x_o, k]; ``cond_cov`` (n, K, d, d): the conditional
        covariance on the (m, m) block, zero elsewhere; ``observed`` (n,)
        bool: rows with at least one observed value.
    """
    X = np.asarray(X, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    n, d = X.shape
    k = len(weights)
    dense = dense_covariances(covariances, covariance_type, k, d)
    mask = np.isnan(X)
    log_prob = np.empty((n, k))
    x_hat = np.repeat(X[:, None, :], k, axis=1)
    cond_cov = np.zeros((n, k, d, d))
    patterns, inverse = np.unique(mask, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(inverse == p)
        m, o = np.flatnonzero(pattern), np.flatnonzero(~pattern)
        x_o = X[np.ix_(rows, o)]
        for c in range(k):
            mu, S = means[c], dense[c]
            if len(o) == 0:
                log_prob[rows, c] = log_weights[c]
                x_hat[rows, c] = mu
                cond_cov[rows, c] = S
                continue
            S_oo = S[np.ix_(o, o)]
            density = multivariate_normal(mean=mu[o], cov=S_oo)
            log_prob[rows, c] = log_weights[c] + np.atleast_1d(density.logpdf(x_o))
            if len(m) == 0:
                continue
            S_mo = S[np.ix_(m, o)]
            regression = S_mo @ np.linalg.inv(S_oo)
            filled = mu[m] + (x_o - mu[o]) @ regression.T
            x_hat[np.ix_(rows, [c], m)] = filled[:, None, :]
            cond_cov[np.ix_(rows, [c], m, m)] = (S[np.ix_(m, m)] - regression @ S_mo.T)[None, None]
    log_likelihood = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_likelihood[:, None])
    return {
        "log_prob": log_prob,
        "log_likelihood": log_likelihood,
        "resp": resp,
        "x_hat": x_hat,
        "cond_cov": cond_cov,
        "observed": ~mask.all(axis=1),
    }


def _weighted(e_step, sample_weight):
    """Responsibilities times sample weights, zero for all-missing rows, and the row weights."""
    n = len(e_step["resp"])
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = np.where(e_step["observed"], w, 0.0)
    return e_step["resp"] * w[:, None], w


def reference_statistics(X, weights, means, covariances, covariance_type, shift, sample_weight=None):
    """Sufficient statistics of the expected shifted rows, in daskem's native shapes.

    Returns
    -------
    tuple
        N (K,), S1 (K, d), S2 (full (K, d, d), tied (d, d), diag (K, d),
        spherical (K,)), the weighted sum of observed-data log-likelihoods,
        the number (total weight) of rows with at least one observed value.
    """
    e = reference_e_step(X, weights, means, covariances, covariance_type)
    rw, w = _weighted(e, sample_weight)
    z = e["x_hat"] - np.asarray(shift, dtype=np.float64)
    second = np.einsum("ik,ika,ikb->kab", rw, z, z) + np.einsum("ik,ikab->kab", rw, e["cond_cov"])
    if covariance_type == "tied":
        second = second.sum(axis=0)
    elif covariance_type == "diag":
        second = np.diagonal(second, axis1=1, axis2=2).copy()
    elif covariance_type == "spherical":
        second = np.trace(second, axis1=1, axis2=2)
    loglik = float(np.sum(w * np.where(e["observed"], e["log_likelihood"], 0.0)))
    return rw.sum(axis=0), np.einsum("ik,ikd->kd", rw, z), second, loglik, float(w.sum())


def reference_m_step(e_step, covariance_type, reg_covar, sample_weight=None):
    """New (weights, means, covariances) from an E-step, scikit-learn's conventions."""
    rw, _ = _weighted(e_step, sample_weight)
    x_hat, cond = e_step["x_hat"], e_step["cond_cov"]
    d = x_hat.shape[2]
    counts = rw.sum(axis=0) + 10 * EPS
    means = np.einsum("ik,ikd->kd", rw, x_hat) / counts[:, None]
    centred = x_hat - means[None]
    scatter = np.einsum("ik,ika,ikb->kab", rw, centred, centred) + np.einsum("ik,ikab->kab", rw, cond)
    eye = np.eye(d)
    if covariance_type == "full":
        covariances = scatter / counts[:, None, None] + reg_covar * eye
    elif covariance_type == "tied":
        covariances = scatter.sum(axis=0) / counts.sum() + reg_covar * eye
    elif covariance_type == "diag":
        covariances = np.diagonal(scatter, axis1=1, axis2=2) / counts[:, None] + reg_covar
    else:
        covariances = np.trace(scatter, axis1=1, axis2=2) / (d * counts) + reg_covar
    return counts / counts.sum(), means, covariances


def reference_em(X, weights, means, covariances, covariance_type, n_iter, reg_covar=1e-6, sample_weight=None):
    """Plain EM from the given parameters.

    Returns
    -------
    list of dict
        One per iteration: the parameters after its M-step (``weights``,
        ``means``, ``covariances``) and ``lower_bound``, the mean
        observed-data log-likelihood (weighted, over rows with at least one
        observed value) at the parameters its E-step used.
    """
    history = []
    params = (weights, means, covariances)
    for _ in range(n_iter):
        e = reference_e_step(X, *params, covariance_type)
        _, w = _weighted(e, sample_weight)
        bound = float(np.sum(w * np.where(e["observed"], e["log_likelihood"], 0.0)) / w.sum())
        params = reference_m_step(e, covariance_type, reg_covar, sample_weight)
        history.append(dict(zip(("weights", "means", "covariances"), params, strict=True), lower_bound=bound))
    return history
