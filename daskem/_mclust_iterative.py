"""The five iterative M-steps of mclust's covariance models, and the helpers they share.

VEI, VEV and VEE follow Celeux and Govaert (1995), section 3; EVE and VVE the MM
algorithms of Browne and McNicholas (2014), in the variant mclust 6.0.0 implements. Each
works on the responsibility sums N_k and the centred scatter matrices W_k only; each stops
as mclust's inner loop stops (see :func:`iterative_m_step`). :mod:`daskem._mclust` is the
interface; this module does not import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskem._covariance import ill_defined_error

RTEPS: float = float(np.sqrt(np.finfo(np.float64).eps))
"""sqrt(machine epsilon): mclust's smallest admissible normalised shape entry."""


def geometric_mean(values: np.ndarray) -> np.ndarray:
    """exp(mean(log v)) over the last axis, as mclust normalises shapes (positive v)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.mean(np.log(values), axis=-1))


def require_positive(values: np.ndarray) -> None:
    """Raise the ill-defined-covariance error unless every value is finite and positive."""
    if not (np.all(np.isfinite(values)) and np.all(values > 0.0)):
        raise ill_defined_error()


def eigen_decreasing(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (decreasing) and unit eigenvectors (columns) of symmetric (..., d, d)."""
    values, vectors = np.linalg.eigh(matrices)
    return values[..., ::-1], vectors[..., ::-1]


def split_volume(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(geometric mean, values / geometric mean) over the last axis of positive values."""
    require_positive(values)
    g = geometric_mean(values)
    require_positive(g)
    return g, values / g[..., None]


def iterative_m_step(
    model: str,
    counts: np.ndarray,
    scatter: np.ndarray,
    previous: Any,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """The M-step of VEI, VEV, VEE, EVE or VVE.

    Parameters
    ----------
    model : {'VEI', 'VEV', 'VEE', 'EVE', 'VVE'}
    counts : ndarray of shape (K,)
        N_k, positive.
    scatter : ndarray of shape (K, d, d)
        W_k.
    previous : MclustCovariances or None
        The previous EM iteration's result (``volumes``, ``shapes``, ``orientations``), the
        warm start of VEI and VEV (volumes, shape) and of EVE and VVE (shapes, orientation),
        as in mclust's EM. Without it, or for VEE, the start is that of mclust's ``mstep``:
        VEI lambda_k = 1 and A = I; VEV A from the summed eigenvalues; VEE lambda_k = 1;
        EVE and VVE A_k = I and D = I.
    tol : float
        Stop when the relative change is at most ``tol`` (mclust's rules: VEI and VEV the
        largest change |old - new| / (1 + |new|) of a volume or shape entry; VEE, EVE and
        VVE the change of the objective |t - t_old| / (1 + |t|)).
    max_iter : int
        Inner iterations at most.

    Returns
    -------
    volumes : ndarray of shape (K,)
    shapes : ndarray of shape (K, d)
    orientations : ndarray of shape (K, d, d)
    n_iter : int
    converged : bool

    Raises
    ------
    ValueError
        The ill-defined-covariance error where the iteration meets a singular matrix.
    """
    solver = {"VEI": _vei, "VEV": _vev, "VEE": _vee, "EVE": _eve_vve, "VVE": _eve_vve}[model]
    max_iter = max(int(max_iter), 1)
    return solver(model, counts, scatter, previous, float(tol), max_iter)


def _warm(previous: Any, k: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if previous is None:
        return None
    volumes = np.array(previous.volumes, dtype=np.float64).reshape(-1)
    shapes = np.array(previous.shapes, dtype=np.float64)
    orientations = np.array(previous.orientations, dtype=np.float64)
    if volumes.shape != (k,) or shapes.shape != (k, d) or orientations.shape != (k, d, d):
        raise ValueError(
            f"previous must describe {k} components of {d} features; got volumes {volumes.shape}, "
            f"shapes {shapes.shape} and orientations {orientations.shape}"
        )
    if not (np.all(volumes > 0.0) and np.all(shapes > 0.0) and np.all(np.isfinite(orientations))):
        return None
    return volumes, shapes, orientations


def _relative_change(old: np.ndarray, new: np.ndarray) -> float:
    return float(np.max(np.abs(old - new) / (1.0 + new)))


def _vei(model, counts, scatter, previous, tol, max_iter):
    """VEI: Sigma_k = lambda_k diag(a), mclust's msvei / mevei fixed point."""
    k, d = scatter.shape[:2]
    w = np.diagonal(scatter, axis1=1, axis2=2)
    start = _warm(previous, k, d)
    if start is None:
        scale, shape = np.ones(k), np.ones(d)
    else:
        scale, shape = start[0].copy(), start[1][0].copy()
    weight = counts * d
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        old_scale, old_shape = scale, shape
        scale = (w / shape).sum(axis=1) / weight
        require_positive(scale)
        _, shape = split_volume((w / scale[:, None]).sum(axis=0))
        err = max(_relative_change(old_scale, scale), _relative_change(old_shape, shape))
        if not err > tol:
            converged = True
            break
    shapes = np.broadcast_to(shape, (k, d)).copy()
    return scale, shapes, np.broadcast_to(np.eye(d), (k, d, d)).copy(), n_iter, converged


def _vev(model, counts, scatter, previous, tol, max_iter):
    """VEV: Sigma_k = lambda_k D_k A D_k^T, mclust's msvev / mevev fixed point."""
    k, d = scatter.shape[:2]
    omega, vectors = eigen_decreasing(scatter)
    omega = np.maximum(omega, 0.0)
    start = _warm(previous, k, d)
    if start is None:
        g, shape = split_volume(omega.sum(axis=0))
        scale = g / (counts * counts.sum())  # msvev's start (used only in the first change)
    else:
        scale, shape = start[0].copy(), start[1][0].copy()
    weight = counts * d
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        old_scale, old_shape = scale, shape
        scale = (omega / shape).sum(axis=1) / weight
        require_positive(scale)
        _, shape = split_volume((omega / scale[:, None]).sum(axis=0))
        err = max(_relative_change(old_shape, shape), _relative_change(old_scale, scale))
        if not err >= tol:
            converged = True
            break
    return scale, np.broadcast_to(shape, (k, d)).copy(), vectors, n_iter, converged


def _vee(model, counts, scatter, previous, tol, max_iter):
    """VEE: Sigma_k = lambda_k C with |C| = 1, mclust's msvee / mevee fixed point."""
    k, d = scatter.shape[:2]
    n = counts.sum()
    scale = np.ones(k)
    target_old = np.inf
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        c = (scatter / scale[:, None, None]).sum(axis=0)
        values = np.linalg.eigvalsh(c)
        require_positive(values)
        c = c / geometric_mean(values)
        try:
            chol = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ill_defined_error() from None
        c_inv = np.linalg.inv(chol)
        c_inv = c_inv.T @ c_inv
        scale = np.einsum("kij,ji->k", scatter, c_inv) / (d * counts)
        require_positive(scale)
        target = n * d + d * float(np.sum(np.log(scale) * counts))
        err = abs(target - target_old) / (1.0 + abs(target))
        target_old = target
        if not err > tol:
            converged = True
            break
    values, vectors = eigen_decreasing(c)
    require_positive(values)
    shape = values / geometric_mean(values)
    if shape.min() <= RTEPS:
        raise ill_defined_error()
    return (
        scale,
        np.broadcast_to(shape, (k, d)).copy(),
        np.broadcast_to(vectors, (k, d, d)).copy(),
        n_iter,
        converged,
    )


def _polar(f: np.ndarray) -> np.ndarray:
    """P R^T from the SVD F = P B R^T (the orthogonal factor of F)."""
    try:
        p, _, rt = np.linalg.svd(f)
    except np.linalg.LinAlgError:
        raise ill_defined_error() from None
    return p @ rt


def _eve_vve(model, counts, scatter, previous, tol, max_iter):
    """EVE (lambda D A_k D^T) and VVE (lambda_k D A_k D^T): mclust's mseve / msvve MM.

    Each iteration makes Browne and McNicholas's MM step for D with the shapes held (the
    majoriser with the largest eigenvalue omega_k of W_k), the second MM step (with the
    largest 1 / a_kj), then the shapes from diag(D^T W_k D). The steps for D weigh the
    components by (lambda_k A_k)^-1, and VVE's objective has its volumes' term, so that each
    step lowers sum_k tr(D^T W_k D (lambda_k A_k)^-1) + N_k d log lambda_k and EM with VVE
    never lowers the log-likelihood. mclust 6.0.0 weighs VVE's components by A_k^-1
    alone (its msvve), which makes its EM drift by about 1e-5 of the log-likelihood near
    convergence; for EVE, with one volume, the two are the same.
    """
    k, d = scatter.shape[:2]
    eig = np.linalg.eigvalsh(scatter)
    if not np.all(eig[:, 0] > 0.0):
        raise ill_defined_error()
    omega = eig[:, -1]
    start = _warm(previous, k, d)
    if start is None:
        shapes, orient, scale = np.ones((k, d)), np.eye(d), np.ones(k)
    else:
        shapes, orient = start[1].copy(), start[2][0].copy()
        scale = start[0].copy() if model == "VVE" else np.ones(k)
    target_old = np.inf
    target = np.nan
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        inv = 1.0 / (scale[:, None] * shapes)
        # MM 1: F = sum_k A_k^-1 D^T W_k - omega_k A_k^-1 D^T; new D^T = P R^T.
        t = inv[:, :, None] * orient.T[None, :, :]
        f = (t @ scatter - omega[:, None, None] * t).sum(axis=0)
        orient = _polar(f).T
        # MM 2: F = sum_k W_k D A_k^-1 - max_j(1 / a_kj) W_k D; new D = P R^T.
        wd = scatter @ orient
        f = (wd * inv[:, None, :] - inv.max(axis=1)[:, None, None] * wd).sum(axis=0)
        orient = _polar(f)
        # shapes, and the objective sum_k tr(D^T W_k D A_k^-1)
        diag = np.einsum("ji,kjl,li->ki", orient, scatter, orient)
        require_positive(diag)
        if model == "EVE":
            shapes = diag / geometric_mean(diag)[:, None]
        else:
            per = diag / counts[:, None]
            scale = geometric_mean(per)
            shapes = per / scale[:, None]
        if not (np.all(np.isfinite(shapes)) and shapes.min() >= RTEPS):
            raise ill_defined_error()
        target = float(np.sum(diag / (scale[:, None] * shapes)))
        if model == "VVE":
            target += float(d * counts @ np.log(scale))
        err = abs(target - target_old) / (1.0 + abs(target))
        target_old = target
        if not err > tol:
            converged = True
            break
    if model == "EVE":
        scale = np.full(k, target / (counts.sum() * d))
    require_positive(scale)
    return scale, shapes, np.broadcast_to(orient, (k, d, d)).copy(), n_iter, converged
