"""Figures of a run: validation PSNR and MSE per epoch (the paper's Figs. 7 and 8) or against wall-clock
minutes (learning curves of runs on the same machine), and image grids."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from jaxdenoise import fsutil, layout, marks, run_io


def read_eval_rows(workdir: str) -> List[Dict]:
    """Eval rows of ``WORKDIR/metrics.jsonl`` (the last one per epoch; torn lines skipped)."""
    need = ("epoch", "psnr", "mse", "noisy_psnr")
    rows = {r["epoch"]: r for r in run_io.read_rows(workdir, "eval") if all(k in r for k in need)}
    return [rows[e] for e in sorted(rows)]


X_AXES = ("epoch", "minutes")


def training_minutes(rows: Sequence[Dict]) -> List[float]:
    """Minutes of training at each eval row: its ``wall_s`` (the run's wall clock, summed over sessions, set-up
    and compilation included) less the ``eval_s`` of the validations up to it, which cost the same whatever
    the run learned and which a run may do more or less often."""
    spent, out = 0.0, []
    for r in rows:
        spent += float(r.get("eval_s", 0.0))
        out.append((float(r["wall_s"]) - spent) / 60)
    return out


def plot_curves(workdirs: Sequence[str], out_dir: str, labels: Sequence[str] | None = None,
                overwrite: bool = False, x: str = "epoch") -> List[str]:
    """Write ``psnr_per_epoch.png`` and ``mse_per_epoch.png`` (``x="epoch"``) or ``psnr_vs_minutes.png`` and
    ``mse_vs_minutes.png`` (``x="minutes"``: the rows' ``wall_s``, the run's wall-clock time summed over its
    sessions, set-up and evaluations included) into ``out_dir``; several runs share the axes.

    The noisy-input PSNR of the first run is drawn dashed beside the PSNR curves. Returns the paths.
    ``out_dir`` is checked first (``outputs.claim_folder``): in a workdir these names are the run's own
    and are replaced; elsewhere an existing file of those names is replaced only with ``overwrite``.
    A run whose eval rows lack ``wall_s`` (logged before it was recorded) cannot be drawn against minutes:
    ValueError naming it.
    """
    if x not in X_AXES:
        raise ValueError(f"x axis {x!r}: choose one of {', '.join(X_AXES)}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxdenoise import outputs
    names = layout.PLOT_FILES if x == "epoch" else layout.TIME_PLOT_FILES
    labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    if len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} runs: give one label per run")
    runs = [(label, read_eval_rows(w)) for label, w in zip(labels, workdirs)]
    if x == "minutes":
        for w, (_, rows) in zip(workdirs, runs):
            if any("wall_s" not in r for r in rows):
                raise ValueError(f"{os.path.join(w, layout.METRICS_FILE)} has evaluation rows without wall_s (logged "
                                 f"before runs recorded their wall-clock time): plot it with --x=epoch")
    xs = (lambda rows: [r["epoch"] for r in rows]) if x == "epoch" else training_minutes
    own = [os.path.join(w, n) for w in workdirs for n in names]  # the plotted runs' own figures
    targets = outputs.claim_folder(out_dir, "--out", names, overwrite=overwrite, own=own)
    if not any(rows for _, rows in runs):  # a run still in its first epoch: empty axes, and a word
        print(f"warning: no evaluation rows yet in {', '.join(os.path.join(w, layout.METRICS_FILE) for w in workdirs)} "
              f"(a run logs one per evaluated epoch): the figures are empty", file=sys.stderr)
    paths = []
    for (key, ylabel), target in zip((("psnr", "validation PSNR (dB)"), ("mse", "validation MSE")), targets):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for label, rows in runs:
            if rows:
                ax.plot(xs(rows), [r[key] for r in rows], marker="o", label=label)
        if key == "psnr" and runs and runs[0][1]:
            rows = runs[0][1]
            ax.plot(xs(rows), [r["noisy_psnr"] for r in rows], ls="--", color="grey",
                    label=f"{runs[0][0]}: noisy input")
        ax.set_xlabel("epoch" if x == "epoch" else "training minutes (wall clock, validations excluded)")
        ax.set_ylabel(ylabel)
        per = "per epoch" if x == "epoch" else "against training time"
        ax.set_title(f"{ylabel} {per} (data range 1, RGB, no border crop)", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        try:
            paths.append(target.write(lambda tmp: fig.savefig(tmp, format="png", metadata=marks.PNG_METADATA)))
        finally:
            plt.close(fig)
    return paths


LABEL_HEIGHT = 14  # px of the band above the columns that names them (PIL's built-in bitmap font)


def image_grid(columns: Sequence[np.ndarray], pad: int = 2, labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Rows of images side by side: columns is a list of ``[N, H, W, 3]`` arrays (float in [0, 1] or uint8).

    Returns ``uint8 [N*(H+pad)+pad, C*(W+pad)+pad, 3]`` with white gutters (e.g. clean | noisy | denoised);
    with ``labels`` (one per column) a band of ``LABEL_HEIGHT`` px above names each column, cut to its width.
    """
    cols = [np.asarray(c) for c in columns]
    cols = [c if c.dtype == np.uint8 else (np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8) for c in cols]
    n, h, w, _ = cols[0].shape
    top = LABEL_HEIGHT if labels else 0
    grid = np.full((top + n * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
    for j, c in enumerate(cols):
        for i in range(n):
            y, x = top + pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = c[i]
    if labels:
        if len(labels) != len(cols):
            raise ValueError(f"image_grid: {len(labels)} labels for {len(cols)} columns")
        from PIL import Image, ImageDraw, ImageFont
        img = Image.fromarray(grid)
        draw, font = ImageDraw.Draw(img), ImageFont.load_default()
        for j, text in enumerate(labels):
            text = str(text)
            while text and draw.textlength(text, font=font) > w:  # cut to the column's width
                text = text[:-1]
            x = pad + j * (w + pad) + (w - draw.textlength(text, font=font)) / 2
            draw.text((x, 1), text, fill=(0, 0, 0), font=font)
        grid = np.asarray(img)
    return grid


def png_writer(image: np.ndarray):
    """A callable that writes ``uint8 [H, W, 3]`` as a PNG at the path it is given (``fsutil.atomic_write``)."""
    from PIL import Image
    return lambda tmp: Image.fromarray(image).save(tmp, format="PNG", pnginfo=marks.png_info())


def save_png(image: np.ndarray, path: str) -> str:
    """Write ``uint8 [H, W, 3]`` as a PNG, atomically (a full disk never leaves a torn file), replacing the file:
    for a run's own files (its grid); a path a user named goes through ``outputs.claim`` first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fsutil.atomic_write(path, png_writer(image))
    return path
