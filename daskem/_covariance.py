"""The four covariance types: shapes, Cholesky factors, log-determinants, M-step.

Every function here works on the small model arrays (K x d x d at most), never
on the data. Parameters are kept in float64 whatever the data's dtype.
"""

import numpy as np
from scipy import linalg

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_ILL_DEFINED_MESSAGE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)
_FLOAT32_HINT = (
    " The numerical accuracy can also be improved by passing float64"
    " data instead of float32."
)


def covariance_shape(covariance_type, n_components, n_features):
    """Shape of the covariance (or precision) array of a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def n_parameters(covariance_type, n_components, n_features):
    """Number of free parameters of a mixture: weights, means and covariances.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_components, n_features : int

    Returns
    -------
    int
    """
    k, d = n_components, n_features
    cov = {
        "full": k * d * (d + 1) / 2.0,
        "tied": d * (d + 1) / 2.0,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return int(cov + k * d + k - 1)


def ill_defined_error(float32=False):
    """The error scikit-learn raises when a covariance is not positive definite."""
    return ValueError(_ILL_DEFINED_MESSAGE + (_FLOAT32_HINT if float32 else ""))


def overflow_error(float32=False):
    """The error for sufficient statistics that overflowed although the data are finite."""
    dtype, limit = ("float32", "1e19") if float32 else ("float64", "1e154")
    return ValueError(
        f"Fitting the mixture model failed because the sufficient statistics overflowed "
        f"{dtype}: the data's squared deviations from their mean exceed the largest "
        f"{dtype} number (deviations of about {limit} or more). Scale the input data"
        + (", or pass float64 data instead of float32." if float32 else ".")
    )


def precision_cholesky(covariances, covariance_type, float32=False):
    """Upper-triangular P with precision = P P^T, from the covariances.

    P = (C^-1)^T where C is the lower Cholesky factor of the covariance, as
    scikit-learn stores ``precisions_cholesky_``.

    Parameters
    ----------
    covariances : ndarray
        Shape given by :func:`covariance_shape`.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    float32 : bool
        Whether the data were float32 (only changes the error message).

    Returns
    -------
    ndarray of the same shape as ``covariances``.

    Raises
    ------
    ValueError
        If a covariance is not positive definite.
    """
    covariances = np.asarray(covariances, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        stack = covariances if covariance_type == "full" else covariances[None]
        if not np.all(np.isfinite(stack)):
            raise ill_defined_error(float32)
        d = stack.shape[-1]
        eye = np.eye(d)
        out = np.empty_like(stack)
        for k, cov in enumerate(stack):
            try:
                chol = linalg.cholesky(cov, lower=True)
            except linalg.LinAlgError:
                raise ill_defined_error(float32) from None
            out[k] = linalg.solve_triangular(chol, eye, lower=True).T
        return out if covariance_type == "full" else out[0]
    if not np.all(covariances > 0.0) or not np.all(np.isfinite(covariances)):
        raise ill_defined_error(float32)
    return 1.0 / np.sqrt(covariances)


def precision_cholesky_from_precisions(precisions, covariance_type):
    """Upper-triangular P with precision = P P^T, from the precisions.

    Reversing rows and columns turns the lower Cholesky factor of the
    reversed matrix into the upper factor needed here.
    """
    precisions = np.asarray(precisions, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        stack = precisions if covariance_type == "full" else precisions[None]
        flipped = stack[:, ::-1, ::-1]
        chol = np.stack([linalg.cholesky(p, lower=True) for p in flipped])
        out = chol[:, ::-1, ::-1].copy()
        return out if covariance_type == "full" else out[0]
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol, covariance_type):
    """Precision matrices P P^T (or squared scales) from their Cholesky factors."""
    if covariance_type == "full":
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_cholesky(prec_chol, covariance_type):
    """Covariances from precision Cholesky factors (for user-given precisions)."""
    if covariance_type in ("full", "tied"):
        stack = prec_chol if covariance_type == "full" else prec_chol[None]
        # Sigma = (P P^T)^-1 = P^-T P^-1
        inv = np.stack([linalg.solve_triangular(p, np.eye(p.shape[0]), lower=False) for p in stack])
        cov = np.swapaxes(inv, 1, 2) @ inv
        return cov if covariance_type == "full" else cov[0]
    return 1.0 / prec_chol**2


def log_det_cholesky(prec_chol, covariance_type, n_features):
    """Sum of the log diagonal of each precision Cholesky factor, shape (K,) or ().

    It equals -1/2 log|Sigma_k|.
    """
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def covariances_from_statistics(
    covariance_type, resp_sums, counts, shifted_means, second_moments, reg_covar
):
    """The M-step covariances from summed statistics of shifted data z = x - c.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    resp_sums : ndarray of shape (K,)
        Raw responsibility sums, sum_i r_ik.
    counts : ndarray of shape (K,)
        ``resp_sums`` plus 10 machine epsilons, as scikit-learn uses them.
    shifted_means : ndarray of shape (K, d)
        Component means of the shifted data, S1_k / counts_k.
    second_moments : ndarray
        full: (K, d, d) sum_i r_ik z_i z_i^T; tied: (d, d) sum_i z_i z_i^T;
        diag: (K, d) sum_i r_ik z_i^2; spherical: (K,) sum_i r_ik |z_i|^2.
    reg_covar : float

    Returns
    -------
    ndarray
        Covariances, shape given by :func:`covariance_shape`.

    Notes
    -----
    With centred S1 = counts * mu, sum_i r_ik (z_i - mu_k)(z_i - mu_k)^T equals
    S2_k - (2 counts_k - resp_sums_k) mu_k mu_k^T, which is what scikit-learn
    computes from its two-pass form. Because the data were shifted by a fixed
    centre near the data mean, the subtraction keeps its digits.
    """
    mu = shifted_means
    n_features = mu.shape[1]
    if covariance_type == "full":
        outer = mu[:, :, None] * mu[:, None, :]
        scale = (2.0 * counts - resp_sums)[:, None, None]
        cov = (second_moments - scale * outer) / counts[:, None, None]
        cov[:, np.arange(n_features), np.arange(n_features)] += reg_covar
        # symmetrise away the rounding of the packed accumulation
        return 0.5 * (cov + np.swapaxes(cov, 1, 2))
    if covariance_type == "tied":
        cov = (second_moments - (counts * mu.T) @ mu) / counts.sum()
        cov[np.diag_indices(n_features)] += reg_covar
        return 0.5 * (cov + cov.T)
    scale = (2.0 * counts - resp_sums) / counts
    if covariance_type == "diag":
        raw = second_moments / counts[:, None]
        return _at_least_rounding(raw - scale[:, None] * mu**2, raw) + reg_covar
    raw = second_moments / counts
    variance = _at_least_rounding(raw - scale * np.sum(mu**2, axis=1), raw)
    return variance / n_features + reg_covar


def second_moments_from_covariances(covariance_type, weights, shifted_means, covariances, reg_covar):
    """The second moments that :func:`covariances_from_statistics` turns into ``covariances``.

    Its inverse, for responsibility sums equal to ``weights`` (the normalised
    statistics of online EM): what a model's parameters say its data's
    statistics were, around the centre that ``shifted_means`` are taken from.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    weights : ndarray of shape (K,)
    shifted_means : ndarray of shape (K, d)
    covariances : ndarray
        Shape given by :func:`covariance_shape` (reg_covar included).
    reg_covar : float

    Returns
    -------
    ndarray
        Second moments, shaped as :func:`covariances_from_statistics` takes them.
    """
    w, mu = np.asarray(weights, dtype=np.float64), np.asarray(shifted_means, dtype=np.float64)
    n_features = mu.shape[1]
    cov = np.array(covariances, dtype=np.float64)
    if covariance_type == "full":
        cov[:, np.arange(n_features), np.arange(n_features)] -= reg_covar
        return w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])
    if covariance_type == "tied":
        cov[np.diag_indices(n_features)] -= reg_covar
        return w.sum() * cov + (w * mu.T) @ mu
    if covariance_type == "diag":
        return w[:, None] * (cov - reg_covar + mu**2)
    return w * (n_features * (cov - reg_covar) + np.sum(mu**2, axis=1))


def _at_least_rounding(variance, second_moment):
    """Variances no smaller than the rounding error of the difference that gave them.

    A component whose rows (nearly) coincide, a single row for instance, has a
    variance far below what the difference of second moments can resolve, and
    cancellation leaves noise of either sign there. Such variances are set to
    that rounding error, eps times the second moment: the smallest variance
    the arithmetic tells from zero (scikit-learn's own arithmetic lands there
    by chance). An empty component keeps 0, so reg_covar alone decides it.
    """
    return np.maximum(variance, np.finfo(np.float64).eps * second_moment)
