"""Inference: running a trained denoiser, one module per job (none imports training).

- ``denoiser``: the ``Denoiser`` (an apply function, a stride, the noise-level input, ensemble, tiling): arrays
  in, arrays out; it knows no files;
- ``tiling``: whole-image inference or overlapping, blended tiles of an apply function;
- ``exported``: the ``.jaxdn`` format and reading it (header, function, weights, card);
- ``export``: writing a ``.jaxdn`` from a run's checkpoint;
- ``load``: ``jaxdenoise.load``, a ``Denoiser`` from a workdir, a ``.jaxdn`` or a zoo name: the only module
  that reads checkpoints, exported files and the zoo together;
- ``files``: denoising image files on disk (``scripts/denoise.py``): names, formats, never replacing a
  user's file.
"""
