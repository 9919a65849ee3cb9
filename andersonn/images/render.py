"""PNG rendering of node-neighbour images: one labelled panel per channel (matplotlib Agg)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from andersonn.fileio import atomic_write_files
from andersonn.images.spec import ImageSpec


def render_png(image: np.ndarray, spec: ImageSpec, row_labels: Sequence[str],
               title: str = "") -> bytes:
    """PNG bytes: a grid of panels (one per channel), rows labelled with atom symbols."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c, h, w = image.shape
    used = max(1, sum(1 for lab in row_labels if lab))
    ncol = min(4, c)
    nrow = (c + ncol - 1) // ncol
    panel_h = 0.9 + 0.16 * used
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, panel_h * nrow), squeeze=False)
    for k in range(nrow * ncol):
        ax = axes[k // ncol][k % ncol]
        if k >= c:
            ax.axis("off")
            continue
        data = image[k, :used, :]
        lim = float(np.abs(data).max()) or 1.0
        vmin = -lim if (data < 0).any() else 0.0
        cmap = "coolwarm" if vmin < 0 else "viridis"
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=lim,
                       interpolation="nearest")
        ax.set_title(spec.channels[k], fontsize=8)
        ax.set_yticks(range(used))
        ax.set_yticklabels(list(row_labels[:used]), fontsize=max(4, 8 - used // 12))
        ax.set_xticks(range(w))
        ax.set_xticklabels([str(i + 1) for i in range(w)], fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=5)
    fig.suptitle(title or f"{spec.name} image {c}x{h}x{w} (rows: atoms, columns: neighbour slots)",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_image_files(stem: str | os.PathLike[str], image: np.ndarray, spec: ImageSpec,
                      row_labels: Sequence[str], title: str = "") -> tuple[str, str]:
    """Write ``stem.png`` and ``stem.npy`` atomically, as a pair: both are rendered and both
    targets checked before either is replaced. Returns both paths."""
    stem = os.fspath(stem)
    if stem.endswith((".png", ".npy")):
        stem = stem[:-4]
    png, npy = stem + ".png", stem + ".npy"
    buf = io.BytesIO()
    np.save(buf, np.asarray(image, dtype=np.float32))
    atomic_write_files({npy: buf.getvalue(), png: render_png(image, spec, row_labels, title)})
    return png, npy
