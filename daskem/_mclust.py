"""The fourteen covariance models of R mclust 6.0.0, as M-steps on reduced statistics.

Every covariance is written Sigma_k = lambda_k D_k A_k D_k^T (Banfield and Raftery, 1993;
Celeux and Govaert, 1995): the volume lambda_k = |Sigma_k|^(1/d), the orientation D_k
(orthogonal) and the shape A_k (diagonal, |A_k| = 1). A model's three letters say, in that
order, whether each part is Equal across components, Variable, or the Identity.

The functions here work on the statistics an EM iteration has after its pass over the data,
never on the data: the responsibility sums N_k (``counts``, shape (K,)) and the centred
scatter matrices W_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T (``scatter``, shape (K, d, d)),
with n = sum_k N_k. Everything is float64.

mclust's conventions, which the functions follow (read from mclust 6.0.0's sources and
checked against its results, see ``tests/test_mclust_models.py``):

- ``scale`` in mclust's ``parameters$variance`` is the volume lambda_k = |Sigma_k|^(1/d)
  (``sigmasq`` for EII and VII); ``shape`` is the diagonal of A_k, with product 1.
- The diagonal models (EEI, VEI, EVI, VVI) keep the shape in the order of the variables.
  EEV, VEV, EVV and VEE order it by decreasing eigenvalue, with the eigenvectors as the
  columns of D_k. EVE and VVE keep the order their MM algorithm reaches from D = I (the
  columns of D match the shape entries, not sorted), as mclust reports them.
- Five M-steps iterate on the small matrices: VEI and VEV (Celeux and Govaert's fixed point
  for the volumes and the common shape), VEE (the same for the volumes and the common
  C = D A D^T), EVE and VVE (the MM algorithms of Browne and McNicholas, 2014, as mclust
  implements them: one MM step for the orientation with the shapes fixed, a second one,
  then the shapes). They stop as mclust's inner loops do, at ``tol`` = sqrt(machine
  epsilon) (``emControl()$tol[2]``) of the same relative change. mclust's EM warm-starts
  VEI and VEV from the volumes and shape of its previous iteration, and EVE and VVE from
  the shapes and orientation; VEE restarts from lambda_k = 1 at every M-step. ``previous``
  does the same here; without it the start is that of mclust's ``mstep``.
- One departure: mclust 6.0.0's VVE steps for D weigh the components by A_k^-1 alone (not
  (lambda_k A_k)^-1), so its M-step does not maximise the expected complete-data
  log-likelihood and its EM drifts (by about 1e-5 of the log-likelihood) near convergence;
  daskem's VVE weighs them by (lambda_k A_k)^-1, so EM with it never lowers the
  log-likelihood (and ends higher than mclust's on iris and faithful, up to 10% for iris,
  G=3). EVE's and VVE's MM converges slowly, so stopping at a relative change of sqrt(eps)
  of its objective leaves the covariances within about 1e-3 (relative) of the exact
  maximiser.
- The G = 1 fits mclust reports are its single-component closed forms (XII, XXI, XXX),
  which these M-steps reach for K = 1 (the iterative ones to their tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskem._covariance import ill_defined_error
from daskem._mclust_iterative import (
    RTEPS,
    eigen_decreasing,
    geometric_mean,
    iterative_m_step,
    require_positive,
    split_volume,
)

MODELS: tuple[str, ...] = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip
"""mclust's 14 covariance models, in mclust's order (``mclust.options("emModelNames")``)."""

SKLEARN_EQUIVALENT: dict[str, str] = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
"""The mclust models that are scikit-learn's covariance types."""

ITERATIVE_MODELS: tuple[str, ...] = ("VEI", "VEE", "EVE", "VVE", "VEV")
"""The models whose M-step iterates (the others are closed forms)."""

DEFAULT_TOL: float = float(np.sqrt(np.finfo(np.float64).eps))
"""mclust's inner tolerance, ``emControl()$tol[2]`` = sqrt(.Machine$double.eps)."""

DEFAULT_MAX_ITER: int = 10_000
"""Inner iterations at most (mclust's default is .Machine$integer.max)."""


@dataclass(frozen=True)
class MclustCovariances:
    """The covariances of an mclust model and their decomposition.

    Attributes
    ----------
    covariances : ndarray of shape (K, d, d)
        Sigma_k = volumes[k] * orientations[k] @ diag(shapes[k]) @ orientations[k].T.
    volumes : ndarray of shape (K,)
        lambda_k = |Sigma_k|^(1/d): mclust's ``scale``.
    shapes : ndarray of shape (K, d)
        The diagonal of A_k, each row with product 1: mclust's ``shape`` (see the module
        docstring for its order).
    orientations : ndarray of shape (K, d, d)
        D_k, orthogonal, its columns the principal directions; the identity for the
        diagonal and spherical models.
    n_iter : int
        Inner iterations the M-step made (0 for a closed form).
    converged : bool
        Whether the inner iterations met ``tol`` within ``max_iter`` (True for a closed form).
    """

    covariances: np.ndarray
    volumes: np.ndarray
    shapes: np.ndarray
    orientations: np.ndarray
    n_iter: int = 0
    converged: bool = True


def n_parameters(model: str, n_components: int, n_features: int) -> int:
    """mclust's number of free parameters (its ``df``) of a mixture.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    n_components, n_features : int
        K and d.

    Returns
    -------
    int
        K - 1 mixing proportions, K d means and the covariance parameters of the model,
        as mclust's ``nMclustParams`` counts them.
    """
    k, d = int(n_components), int(n_features)
    orient = d * (d - 1) // 2
    cov = {
        "EII": 1,
        "VII": k,
        "EEI": d,
        "VEI": k + (d - 1),
        "EVI": 1 + k * (d - 1),
        "VVI": k * d,
        "EEE": d * (d + 1) // 2,
        "VEE": k + (d - 1) + orient,
        "EVE": 1 + k * (d - 1) + orient,
        "VVE": k + k * (d - 1) + orient,
        "EEV": 1 + (d - 1) + k * orient,
        "VEV": k + (d - 1) + k * orient,
        "EVV": 1 - k + k * d * (d + 1) // 2,
        "VVV": k * d * (d + 1) // 2,
    }[_check_model(model)]
    return cov + k * d + k - 1


def decompose(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Volumes, shapes and orientations of covariance matrices, by eigendecomposition.

    Parameters
    ----------
    covariances : ndarray of shape (K, d, d)
        Symmetric positive definite matrices.

    Returns
    -------
    volumes : ndarray of shape (K,)
        |Sigma_k|^(1/d).
    shapes : ndarray of shape (K, d)
        Eigenvalues over the volume, in decreasing order.
    orientations : ndarray of shape (K, d, d)
        The matching unit eigenvectors, as columns.

    Raises
    ------
    ValueError
        If a matrix is not positive definite.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        raise ill_defined_error()
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[:, ::-1], vectors[:, :, ::-1]
    if not np.all(values > 0.0):
        raise ill_defined_error()
    volumes = geometric_mean(values)
    return volumes, values / volumes[:, None], vectors


def m_step_covariances(
    model: str,
    counts: np.ndarray,
    scatter: np.ndarray,
    reg_covar: float = 0.0,
    previous: MclustCovariances | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> MclustCovariances:
    """The covariances of mclust's M-step for a model, from the reduced statistics.

    Parameters
    ----------
    model : str
        One of :data:`MODELS`.
    counts : ndarray of shape (K,)
        N_k = sum_i r_ik, positive.
    scatter : ndarray of shape (K, d, d)
        W_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T about the new means mu_k.
    reg_covar : float, default 0
        Added to the diagonal of every empirical covariance W_k / N_k before the
        model's fit (mclust has none): the fit is that of the scatter W_k + N_k reg_covar I,
        so the covariances keep the model's constraints exactly and the fit is defined
        where a scatter is singular (a constant column, a component on d points or
        fewer). For the models linear in the scatter (EII, VII, EEI, VVI, EEE, EEV, VVV)
        this is reg_covar added to the diagonal of every fitted covariance, as
        scikit-learn does.
    previous : MclustCovariances, optional
        The previous EM iteration's result for the same model: VEI and VEV start their
        inner iterations from its volumes and shape, EVE and VVE from its shapes and
        orientation, as mclust's EM does. Ignored by the other models.
    tol : float, default sqrt(machine epsilon)
        The inner iterations' tolerance (mclust's ``emControl()$tol[2]``).
    max_iter : int, default 10000
        Inner iterations at most.

    Returns
    -------
    MclustCovariances

    Raises
    ------
    ValueError
        scikit-learn's ill-defined-covariance error, where the statistics are not finite,
        a covariance is not positive definite or the M-step is singular.
    """
    model = _check_model(model)
    counts = np.asarray(counts, dtype=np.float64)
    scatter = np.asarray(scatter, dtype=np.float64)
    if counts.ndim != 1 or scatter.ndim != 3 or scatter.shape != (counts.shape[0],) + scatter.shape[1:2] * 2:
        raise ValueError(
            f"counts must have shape (K,) and scatter (K, d, d); got {counts.shape} and {scatter.shape}"
        )
    if not (np.all(np.isfinite(counts)) and np.all(np.isfinite(scatter))) or not np.all(counts > 0.0):
        raise ill_defined_error()
    if reg_covar:
        scatter = scatter + (float(reg_covar) * counts)[:, None, None] * np.eye(scatter.shape[1])
    if model in ITERATIVE_MODELS:
        volumes, shapes, orientations, n_iter, converged = iterative_m_step(
            model, counts, scatter, previous, tol, max_iter
        )
    else:
        volumes, shapes, orientations = _CLOSED_FORMS[model](counts, scatter)
        n_iter, converged = 0, True
    direct = None  # scikit-learn's own formulas for full and tied, not the rebuilt product
    if model == "VVV":
        direct = scatter / counts[:, None, None]
    elif model == "EEE":
        direct = np.broadcast_to(scatter.sum(axis=0) / counts.sum(), scatter.shape)
    return assemble(volumes, shapes, orientations, n_iter, converged, direct)


def assemble(
    volumes: np.ndarray,
    shapes: np.ndarray,
    orientations: np.ndarray,
    n_iter: int = 0,
    converged: bool = True,
    direct: np.ndarray | None = None,
) -> MclustCovariances:
    """Covariances from their parts, checked positive definite.

    Parameters
    ----------
    volumes : ndarray of shape (K,)
    shapes : ndarray of shape (K, d)
    orientations : ndarray of shape (K, d, d)
    n_iter : int, default 0
    converged : bool, default True
    direct : ndarray of shape (K, d, d), optional
        The same covariances computed directly (then returned instead of the product of
        the parts, which differs by rounding only).

    Returns
    -------
    MclustCovariances

    Raises
    ------
    ValueError
        If a covariance is not positive definite (or not finite).
    """
    eig = volumes[:, None] * shapes
    if not (np.all(np.isfinite(eig)) and np.all(np.isfinite(orientations))) or not np.all(eig > 0.0):
        raise ill_defined_error()
    vol = geometric_mean(eig)
    if direct is None:
        cov = (orientations * eig[:, None, :]) @ np.swapaxes(orientations, 1, 2)
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    else:
        cov = np.array(direct, dtype=np.float64)
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ill_defined_error() from None
    return MclustCovariances(cov, vol, eig / vol[:, None], orientations, int(n_iter), bool(converged))


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
    return model


def _diagonals(scatter: np.ndarray) -> np.ndarray:
    return np.diagonal(scatter, axis1=1, axis2=2).copy()


def _identity(k: int, d: int) -> np.ndarray:
    return np.broadcast_to(np.eye(d), (k, d, d)).copy()


# ---------------------------------------------------------------------------------------------
# the nine closed forms: (counts, scatter) -> (volumes (K,), shapes (K, d), orientations (K, d, d))


def _eii(counts, scatter):
    k, d = scatter.shape[:2]
    lam = np.trace(scatter, axis1=1, axis2=2).sum() / (counts.sum() * d)
    require_positive(np.atleast_1d(lam))
    return np.full(k, lam), np.ones((k, d)), _identity(k, d)


def _vii(counts, scatter):
    k, d = scatter.shape[:2]
    lam = np.trace(scatter, axis1=1, axis2=2) / (counts * d)
    require_positive(lam)
    return lam, np.ones((k, d)), _identity(k, d)


def _eei(counts, scatter):
    k, d = scatter.shape[:2]
    lam, shape = split_volume(_diagonals(scatter).sum(axis=0) / counts.sum())
    return np.full(k, lam), np.broadcast_to(shape, (k, d)).copy(), _identity(k, d)


def _evi(counts, scatter):
    k, d = scatter.shape[:2]
    g, shapes = split_volume(_diagonals(scatter))
    return np.full(k, g.sum() / counts.sum()), shapes, _identity(k, d)


def _vvi(counts, scatter):
    k, d = scatter.shape[:2]
    lam, shapes = split_volume(_diagonals(scatter) / counts[:, None])
    return lam, shapes, _identity(k, d)


def _eee(counts, scatter):
    k, d = scatter.shape[:2]
    values, vectors = eigen_decreasing(scatter.sum(axis=0) / counts.sum())
    lam, shape = split_volume(values)
    return (
        np.full(k, lam),
        np.broadcast_to(shape, (k, d)).copy(),
        np.broadcast_to(vectors, (k, d, d)).copy(),
    )


def _eev(counts, scatter):
    k, d = scatter.shape[:2]
    values, vectors = eigen_decreasing(scatter)
    g, shape = split_volume(values.sum(axis=0))
    return np.full(k, g / counts.sum()), np.broadcast_to(shape, (k, d)).copy(), vectors


def _evv(counts, scatter):
    values, vectors = eigen_decreasing(scatter)
    g, shapes = split_volume(values)
    if shapes.min() <= RTEPS:  # mclust's msevv check of the normalised shapes
        raise ill_defined_error()
    return np.full(scatter.shape[0], g.sum() / counts.sum()), shapes, vectors


def _vvv(counts, scatter):
    values, vectors = eigen_decreasing(scatter / counts[:, None, None])
    lam, shapes = split_volume(values)
    return lam, shapes, vectors


_CLOSED_FORMS = {
    "EII": _eii,
    "VII": _vii,
    "EEI": _eei,
    "EVI": _evi,
    "VVI": _vvi,
    "EEE": _eee,
    "EEV": _eev,
    "EVV": _evv,
    "VVV": _vvv,
}
