"""Plots of a fitted mixture: convergence curve and 2-sigma ellipses over a data sample.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot,
no GUI backend, no global state), so this works on headless machines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._cluster import no_workers_watch
from .io import replace_local_file

__all__ = ["component_covariances", "projection", "sample_rows", "plot_model", "save_figure"]


def component_covariances(est):
    """Full (K, d, d) covariance matrices of a fitted model, whatever its covariance type."""
    cov = np.asarray(est.covariances_)
    k, d = est.means_.shape
    if est.covariance_type == "full":
        return cov
    if est.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if est.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)[None]


def projection(est, features=None, pca=False):
    """A (d, 2) matrix mapping features to the plotted plane, and axis labels.

    ``features`` picks two feature indices (default the first two); ``pca``
    uses the two leading eigenvectors of the mixture's total covariance
    (computed from the model, so no pass over the data is needed).
    """
    d = est.means_.shape[1]
    names = getattr(est, "feature_names_in_", None)
    label = (lambda i: str(names[i])) if names is not None else (lambda i: f"feature {i}")
    if pca:
        w = est.weights_ / est.weights_.sum()
        mean = w @ est.means_
        covs = component_covariances(est)
        centred = est.means_ - mean
        total = np.einsum("k,kij->ij", w, covs) + (centred * w[:, None]).T @ centred
        vals, vecs = np.linalg.eigh(total)
        order = np.argsort(vals)[::-1][:2]
        share = vals[order] / vals.sum()
        return vecs[:, order], [f"PC{j + 1} ({100 * s:.0f}% of variance)" for j, s in enumerate(share)]
    i, j = features if features is not None else (0, 1)
    W = np.zeros((d, 2))
    W[i, 0] = W[j, 1] = 1.0
    return W, [label(i), label(j)]


def sample_rows(X, n, random_state=0):
    """At most ``n`` rows of a Dask array, drawn uniformly without replacement (computed)."""
    total = X.shape[0]
    with no_workers_watch(collections=[X]):
        if total <= n:
            return np.asarray(X.compute())
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(total, size=n, replace=False))
        return np.asarray(X[idx].compute())


def _ellipse(ax, mean, cov, color, n_sigma=2.0):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    width, height = 2 * n_sigma * np.sqrt(vals[1]), 2 * n_sigma * np.sqrt(vals[0])
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, lw=2, color=color))


# components of smaller weight are not drawn (a variational mixture's switched-off ones)
_SHOWN_WEIGHT = 1e-3


def _named(est: Any, rows: np.ndarray) -> Any:
    """The sampled rows under the model's feature names, if it has them: they are in its
    feature order, and scikit-learn warns about rows without names."""
    names = getattr(est, "feature_names_in_", None)
    if names is None:
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=names)


def plot_model(est, sample=None, features=None, pca=False, title=None, n_sigma=2.0, true_means=None):
    """A figure: the fit's lower bound per iteration, and the components over the data.

    Parameters
    ----------
    est : fitted GaussianMixture
    sample : ndarray (m, d), optional
        Rows to scatter, coloured by predicted component.
    features : pair of int, optional
        Features to draw (default the first two).
    pca : bool
        Draw the mixture's two principal directions instead.
    title : str, optional
    true_means : ndarray (K', d), optional
        Means the data were drawn from (synthetic data), drawn against the
        fitted ones.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_curve, ax_data = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    if title:
        fig.suptitle(title)

    bounds = np.asarray(getattr(est, "lower_bounds_", []), dtype=float)
    if len(bounds):
        ax_curve.plot(np.arange(1, len(bounds) + 1), bounds, marker="o", ms=3)
        ax_curve.set_xlabel("iteration")
        # a variational mixture's bound is scikit-learn's total ELBO, not a mean log-likelihood
        bayesian = hasattr(est, "weight_concentration_")
        ax_curve.set_ylabel("variational lower bound" if bayesian else "mean log-likelihood")
        status = "converged" if est.converged_ else "not converged"
        ax_curve.set_title(f"convergence ({status}, {len(bounds)} iterations)")
        ax_curve.grid(alpha=0.3)
    else:
        ax_curve.text(0.5, 0.5, "no iterations recorded", ha="center", va="center",
                      transform=ax_curve.transAxes)
        ax_curve.set_axis_off()

    colors = [f"C{k % 10}" for k in range(est.n_components)]
    d = est.means_.shape[1]
    if d == 1:
        _plot_1d(ax_data, est, sample, colors)
        return fig

    W, labels = projection(est, features, pca)
    covs = component_covariances(est)
    means2 = est.means_ @ W
    if sample is not None and len(sample):
        labels_k = est.predict(_named(est, sample))
        pts = sample @ W
        ax_data.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.35, c=[colors[k] for k in labels_k],
                        linewidths=0, rasterized=True)
    # components a prior switched off (variational mixtures) are left out
    shown = [k for k in range(est.n_components) if est.weights_[k] > _SHOWN_WEIGHT]
    for k in shown:
        _ellipse(ax_data, means2[k], W.T @ covs[k] @ W, colors[k], n_sigma)
    ax_data.scatter(means2[shown, 0], means2[shown, 1], marker="x", s=60, c="black", zorder=3,
                    label="fitted means")
    if true_means is not None:
        true2 = np.asarray(true_means, dtype=float) @ W
        ax_data.scatter(true2[:, 0], true2[:, 1], marker="+", s=160, c="red", linewidths=2, zorder=4,
                        label="true means")
        ax_data.legend(loc="best")
    if sample is None or not len(sample):
        spread = np.sqrt(np.max([np.diag(W.T @ c @ W) for c in covs], axis=0))
        lo = means2.min(axis=0) - 3 * spread
        hi = means2.max(axis=0) + 3 * spread
        ax_data.set_xlim(lo[0], hi[0])
        ax_data.set_ylim(lo[1], hi[1])
    ax_data.set_xlabel(labels[0])
    ax_data.set_ylabel(labels[1])
    what = (f"{len(shown)} of {est.n_components}" if len(shown) < est.n_components
            else f"{est.n_components}")
    ax_data.set_title(f"{what} {est.covariance_type} components ({n_sigma:g}-sigma ellipses)")
    ax_data.grid(alpha=0.3)
    return fig


def _plot_1d(ax, est, sample, colors):
    sd = np.sqrt(component_covariances(est)[:, 0, 0])
    mu = est.means_[:, 0]
    lo, hi = (mu - 4 * sd).min(), (mu + 4 * sd).max()
    if sample is not None and len(sample):
        ax.hist(sample[:, 0], bins=60, density=True, alpha=0.3, color="gray")
        lo, hi = min(lo, sample[:, 0].min()), max(hi, sample[:, 0].max())
    x = np.linspace(lo, hi, 400)
    w = est.weights_ / est.weights_.sum()
    for k in range(len(mu)):
        pdf = w[k] * np.exp(-0.5 * ((x - mu[k]) / sd[k]) ** 2) / (sd[k] * np.sqrt(2 * np.pi))
        ax.plot(x, pdf, color=colors[k])
    ax.set_xlabel("feature 0")
    ax.set_ylabel("density")
    ax.set_title(f"{est.n_components} components")


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure rendered as PNG, in memory (so that rendering can fail before anything is written)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(png: bytes, path) -> None:
    """Write PNG bytes atomically (temporary file in the same folder, then os.replace)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(png)

    replace_local_file(path, write, suffix=".png")


def save_figure(fig, path, dpi=100):
    """Write a figure as PNG atomically (temporary file in the same folder, then os.replace)."""
    save_png(figure_png(fig, dpi), path)


def plot_selection(table, criterion="bic"):
    """The criterion against the number of components, one line per covariance type.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`daskem.select_model`.
    criterion : {'bic', 'aic', 'icl'}
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    groups = list(table.groupby("covariance_type", sort=False))
    many = len(groups) > 6  # mclust's fourteen models: the legend goes beside the axes
    fig = Figure(figsize=(8.4 if many else 6.4, 4.6 if many else 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # 10 colours, then the same colours dashed with other markers: every model tells apart
    styles = [("-", "o"), ("--", "s"), (":", "^")]
    for i, (cov, rows) in enumerate(groups):
        rows = rows.sort_values("n_components")
        line, marker = styles[(i // 10) % len(styles)]
        ax.plot(rows["n_components"], rows[criterion], marker=marker, linestyle=line,
                color=f"C{i % 10}", label=cov)
    best = table.loc[table[criterion].idxmin()]
    ax.scatter([best["n_components"]], [best[criterion]], s=160, facecolors="none",
               edgecolors="black", zorder=3, label=f"best: {best['n_components']}, {best['covariance_type']}")
    ax.set_xlabel("number of components")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    if many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    else:
        ax.legend()
    fig.tight_layout()
    return fig
