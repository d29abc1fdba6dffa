"""Denoise a file, or every image under a folder, into an output folder (``scripts/denoise.py``): output
names that never collide, formats kept on request, atomic writes that never lose or clobber a file.
The pixels go through ``denoiser.Denoiser``; this module is the naming and encoding around it.
"""
from __future__ import annotations

import dataclasses
import io
import os
import sys
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from jaxdenoise import fsutil, marks
from jaxdenoise.inference import load
from jaxdenoise.inference.tiling import check_tiling

# --keep-format: sniffed format -> (the extension appended when the name does not say it, the extensions
# that do). PNM comes in as PBM/PGM/PPM and always goes out as binary PPM, since the output is RGB.
_EXTENSIONS = {
    "png": (".png", {".png"}),
    "jpeg": (".jpg", {".jpg", ".jpeg", ".jpe", ".jfif"}),
    "tiff": (".tif", {".tif", ".tiff"}),
    "bmp": (".bmp", {".bmp", ".dib"}),
    "webp": (".webp", {".webp"}),
    "gif": (".gif", {".gif"}),
    "pnm": (".ppm", {".ppm", ".pnm"}),
}
_CODER = {"pnm": "ppm"}  # ImageMagick coder for writing, where it differs from the sniffed name
EXISTS = "exists (use --overwrite to replace it)"
FOREIGN = "exists and jaxdenoise did not write it: never replaced"  # appeared after the names were chosen


@dataclasses.dataclass(frozen=True)
class Job:
    """What ``denoise_paths`` denoises, with what, where and how (``scripts/denoise.py``'s flags)."""
    workdir: Optional[str]
    input_path: str
    output_dir: str
    which: str | int = "best"
    model: Optional[str] = None
    tile: Optional[int] = None
    overlap: int = 32
    batch: int = 8
    ensemble: int = 1
    noise_level: Optional[str] = None
    keep_format: bool = False
    overwrite: bool = False
    progress: bool = True


def denoise_paths(workdir: Optional[str], input_path: str, output_dir: str, which: str | int = "best",
                  **options) -> Dict:
    """Denoise a file, or every image under a folder, into ``output_dir``; subfolders mirror the input's.

    The denoiser: a training run's ``workdir`` (checkpoint ``which``), or ``model``, a zoo model's name or an
    exported ``.jaxdn`` file (``inference.load``); exactly one of the two. ``options``: the fields of ``Job``
    after these four (an unknown one is a TypeError naming it).

    Names: each input ``dir/stem.ext`` first asks for ``dir/stem.png``. With ``keep_format`` it keeps its
    own name if ``ext`` names its real format (from the magic bytes), else the format's usual extension is
    appended (``photo`` holding a JPEG -> ``photo.jpg``, ``shot.png`` holding a JPEG -> ``shot.png.jpg``),
    and the file is written in that format. A name asked for by one input only, and not the path of an input
    of this run, is kept. The others become ``stem_ext`` + the output extension (``photo.jpg`` and
    ``photo.png`` -> ``photo_jpg.png`` and ``photo_png.png``), then ``stem_ext_2``, ``_3``, ... while that
    is taken, in sorted order of the inputs. Names are compared case-insensitively, so they stay distinct on
    case-insensitive file systems, and depend only on this run's inputs (and their formats), not on what the
    output folder holds: a rerun asks for the same names.

    An output name never takes the place of a file jaxdenoise did not write (``marks.ours``): with ``--output``
    the input's own folder, ``photo.jpg``'s output is ``photo_jpg.png`` when a ``photo.png`` of the user's is
    there. Writes: atomic (temporary file, then rename). An existing output is skipped with the reason ``EXISTS``
    unless ``overwrite``; an input of this run is never written over. When ``output_dir`` lies inside the
    input folder, files under it are not inputs (a rerun does not denoise its own outputs); when it is the
    input folder itself, every file there is an input, earlier outputs included.

    tile, overlap, batch: ``Denoiser.__call__``'s. noise_level: for a non-blind model, the photos' noise as a
    fixed-value spec (``with_level``); None estimates a Gaussian level per image; blind models ignore it.
    ensemble: average over this many flips and turns of each photo (1, 2, 4, 8: ``self_ensemble``).

    Returns ``{"written": [output paths], "skipped": [{"path": input relative path, "reason": one line,
    "output": output path (only for EXISTS)}]}``. Raises ValueError (one line) for bad arguments and for an
    output folder that cannot be created or written.
    """
    job = Job(workdir, input_path, output_dir, which, **options)
    _check_job(job)
    out_root = _check_output(job.output_dir)
    root, files = _list_inputs(job.input_path, out_root)
    if not files:
        raise ValueError(f"--input {job.input_path} holds no files")
    formats = {rel: _sniff(os.path.join(root, rel)) if job.keep_format else "png" for rel in files}
    names = _output_names(root, files, out_root, formats, job.keep_format)
    created = []
    try:
        _makedirs(out_root, created)  # now, so that a folder that cannot be made fails before any work
        den = _load_denoiser(job.workdir, job.model, job.which, job.tile, job.overlap)
        noise_level = job.noise_level
        if noise_level and den.blind:
            print(f"note: --noise-level {noise_level} is not used: the model is blind (3 input channels)",
                  file=sys.stderr)
            noise_level = None
        written, skipped = _denoise_each(job, den, noise_level, root, files, formats,
                                         {rel: os.path.join(out_root, n) for rel, n in names.items()}, created)
    finally:
        fsutil.remove_empty(created)  # a failed or empty run leaves no folder it made
    unreadable = [s for s in skipped if s["reason"] not in (EXISTS, FOREIGN)]
    if not written and len(unreadable) == len(files):  # nothing could be read: a wrong --input
        first = unreadable[0]
        raise ValueError(f"--input {job.input_path}: no readable image among its {len(files)} file(s) (the first, "
                         f"{first['path']}: {first['reason']})")
    return {"written": written, "skipped": skipped}


def _check_job(job: Job) -> None:
    """A one-line ValueError for bad settings, before any work."""
    from jaxdenoise.inference.denoiser import check_ensemble
    if bool(job.workdir) == bool(job.model):
        raise ValueError("give either --workdir (a training run) or --model (a zoo name or an exported file), "
                         f"not {'both' if job.workdir else 'neither'}")
    if job.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {job.batch}")
    check_ensemble(job.ensemble, "--ensemble")
    if (job.tile is not None and job.tile < 0) or job.overlap < 0:
        raise ValueError(f"--tile and --overlap must be >= 0, got {job.tile} and {job.overlap}")
    if not job.input_path:
        raise ValueError("--input is required: an image file or a folder of images")
    if job.noise_level:
        from jaxdenoise import noise as noise_lib
        noise_lib.level_map(job.noise_level, np.zeros((1, 1, 1, 3), np.float32))  # a bad spec fails here


def _denoise_each(job: Job, den, noise_level: Optional[str], root: str, files: List[str],
                  formats: Dict[str, Optional[str]], outputs: Dict[str, str], created: list) -> Tuple[list, list]:
    """Denoise ``files`` (relative to ``root``) into their ``outputs`` paths, one at a time: (written output
    paths, skipped ``{"path", "reason"[, "output"]}``). Output folders are made with their first image."""
    from tqdm import tqdm

    from jaxdenoise.data import imageio
    written, skipped = [], []
    for rel in tqdm(files, desc="denoising", unit="img", disable=not job.progress or len(files) < 2, file=sys.stderr):
        dst = outputs[rel]
        # only to save the work: the write re-checks
        if os.path.lexists(dst) and not (job.overwrite and marks.ours(dst)):
            skipped.append({"path": rel, "output": dst, "reason": EXISTS if marks.ours(dst) else FOREIGN})
            continue
        try:
            image = imageio.load_rgb(os.path.join(root, rel))
        except imageio.ImageReadError as e:
            skipped.append({"path": rel, "reason": str(e)})
            continue
        data = _encode(den(image, noise_level, tile=job.tile, batch=job.batch, ensemble=job.ensemble), formats[rel])
        _makedirs(os.path.dirname(dst), created)
        try:
            ok = fsutil.atomic_write(dst, data, overwrite=job.overwrite)
        except OSError as e:
            raise ValueError(fsutil.describe(e, dst)) from e
        if ok:
            written.append(dst)
        else:  # appeared while we worked
            skipped.append({"path": rel, "output": dst, "reason": EXISTS})
    return written, skipped


def _check_output(output_dir: str) -> str:
    """The output folder's absolute path, or a one-line ValueError before any work: empty, a file, among a
    run's own files, or not creatable / writable."""
    from jaxdenoise import outputs
    if not str(output_dir).strip():
        raise ValueError("--output needs a folder, got an empty value")
    out_root = os.path.abspath(output_dir)
    if os.path.lexists(out_root) and not os.path.isdir(out_root):
        raise ValueError(f"--output {output_dir} is a file, not a folder")
    inside = outputs.protected(out_root)
    if inside:  # e.g. --output RUN/checkpoints: images among a run's own files
        raise ValueError(f"--output {output_dir} {inside}: choose another folder")
    why = fsutil.creatable(os.path.join(out_root, "x")) if os.path.isdir(out_root) else fsutil.creatable(out_root)
    if why:  # before loading the model: an unusable --output fails at once
        raise ValueError(f"--output {output_dir}: {why}")
    return out_root


def _load_denoiser(workdir: Optional[str], model: Optional[str], which, tile: Optional[int], overlap: int):
    """The run's or the model's ``Denoiser``; its errors name the flag; the tiling checked against it."""
    try:
        den = load.load(model, overlap=overlap) if model else load.load_run(workdir, which, overlap=overlap)
    except ValueError as e:  # CheckpointError: say which flag
        raise type(e)(f"--model {model}: {e}" if model else f"--workdir {workdir}: {e}") from None
    check_tiling(tile or 0, overlap, den.stride, den.receptive_field)
    return den


def _list_inputs(input_path: str, out_root: str) -> Tuple[str, List[str]]:
    """(absolute root, sorted relative paths): the file itself, or every non-hidden file under the folder
    except those under ``out_root`` when that lies strictly inside it."""
    from jaxdenoise.data import prepare
    if os.path.isfile(input_path):
        return os.path.dirname(os.path.abspath(input_path)), [os.path.basename(input_path)]
    if not os.path.isdir(input_path):
        raise ValueError(f"--input {input_path} does not exist")
    root = os.path.abspath(input_path)
    files = prepare.list_files(root)
    if fsutil.is_within(out_root, root) and not fsutil.is_within(root, out_root):
        files = [rel for rel in files if not fsutil.is_within(os.path.join(root, rel), out_root)]
    return root, files


def _sniff(path: str) -> Optional[str]:
    """The format named by a file's magic bytes, or None (unreadable: reading it later gives the reason)."""
    from jaxdenoise.data import imageio
    try:
        return imageio.sniff_format(fsutil.read_regular(path, 16))
    except OSError:
        return None


def _output_names(root: str, files: List[str], out_root: str, formats: Dict[str, Optional[str]],
                  keep_format: bool) -> Dict[str, str]:
    """Relative input path -> relative output path, by the rule in ``denoise_paths``' docstring."""
    def key(rel_out: str) -> str:
        return os.path.realpath(os.path.join(out_root, rel_out)).casefold()

    def wanted(rel: str) -> str:
        fmt = formats[rel]
        if not keep_format:
            return os.path.splitext(rel)[0] + ".png"
        if fmt is None or os.path.splitext(rel)[1].lower() in _EXTENSIONS[fmt][1]:
            return rel  # None: unreadable, skipped later; the name only has to stay out of the others' way
        return rel + _EXTENSIONS[fmt][0]

    inputs = {os.path.realpath(os.path.join(root, rel)).casefold() for rel in files}
    first = {rel: wanted(rel) for rel in files}
    # a file already there that jaxdenoise did not write (a user's own beach.png beside beach.jpg) is never an
    # output's name: that output takes the next name, as for a clash with an input
    foreign = {key(n) for n in first.values()
               if os.path.lexists(os.path.join(out_root, n)) and not marks.ours(os.path.join(out_root, n))}
    inputs |= foreign
    askers = Counter(key(n) for n in first.values())
    names = {rel: n for rel, n in first.items() if askers[key(n)] == 1 and key(n) not in inputs}
    taken = inputs | {key(n) for n in names.values()}
    for rel in files:
        if rel in names:
            continue
        stem, ext = os.path.splitext(rel)
        base, out_ext = (stem + "_" + ext[1:] if ext else stem), os.path.splitext(first[rel])[1]
        name, n = base + out_ext, 2
        while key(name) in taken:
            name, n = f"{base}_{n}{out_ext}", n + 1
        names[rel] = name
        taken.add(key(name))
    return names


def _makedirs(path: str, created: list) -> None:
    try:
        fsutil.makedirs(path, created)
    except FileExistsError as e:
        raise ValueError(f"--output: {path} is a file, not a folder") from e
    except OSError as e:
        raise ValueError(f"--output: cannot make {path}: {fsutil.describe(e, path)}") from e


def _encode(image: np.ndarray, fmt: str) -> bytes:
    """The file bytes of ``uint8 [H, W, 3]`` in a ``sniff_format`` format; the encoder is told the format
    (never left to guess it from a file name)."""
    if fmt == "png":
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", pnginfo=marks.png_info())
        return buf.getvalue()
    from wand.image import Image  # imageio.load_rgb imported it (and set its resource limits) already
    with Image(blob=image.tobytes(), format="rgb", width=image.shape[1], height=image.shape[0], depth=8) as img:
        img.metadata["comment"] = marks.COMMENT  # JPEG, TIFF, GIF carry it (marks.ours); BMP, PPM, WebP cannot
        return img.make_blob(_CODER.get(fmt, fmt))
