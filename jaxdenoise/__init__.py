"""jaxdenoise: a JAX/Flax image-denoising trainer, and the trained denoisers it makes.

    import jaxdenoise
    den = jaxdenoise.load("photos")              # a zoo name, a training workdir, or an exported .jaxdn file
    clean = den(noisy)                          # H x W x 3, uint8 or float in [0, 1]; the same dtype back

What a user calls from Python (each documented where it is defined):

- ``load(source, checkpoint="best", **kw)`` -> ``Denoiser`` (``jaxdenoise.inference.load``): a zoo model
  (``zoo_models()``), a training workdir (its best checkpoint, EMA weights when kept) or an exported file;
- ``Denoiser`` (``jaxdenoise.inference.denoiser``): ``den(image)``, ``den.batch(images)``, ``den.run(x)``
  for unclipped floats, ``den.info``, ``den.plan(h, w)`` (whole image or tiles);
- ``export(workdir, out, checkpoint="best")`` (``jaxdenoise.inference.export.export_workdir``): a ``.jaxdn``
  file that runs with jax and numpy alone;
- ``get_config(path, arg=None)`` (``jaxdenoise.config.load_file``): a ``configs/NAME.py`` experiment as a
  ``ConfigDict``; ``train_and_evaluate(config, workdir)`` (``jaxdenoise.train``): train or resume a run;
- ``jaxdenoise.evaluate.run(workdir, ...)`` (a module, not a name here): score a run, zoo models or exported
  files on a validation split or a folder of photos, beside baselines (the rows ``scripts/evaluate.py`` prints);
- ``zoo_models()``: the names of the models shipped inside the package (``jaxdenoise.zoo``).

Training, evaluation, export and the rest are also the ``jaxdenoise COMMAND`` console command's jobs
(``jaxdenoise.commands``; ``scripts/`` in a checkout). Importing the package imports nothing heavy (the
training scripts set malloc options before any thread starts): every name above loads on first use.
"""
__all__ = ["load", "Denoiser", "export", "get_config", "train_and_evaluate", "zoo_models"]

# name -> (module, attribute): resolved on first use
_LAZY = {
    "load": ("jaxdenoise.inference.load", "load"),
    "Denoiser": ("jaxdenoise.inference.denoiser", "Denoiser"),
    "export": ("jaxdenoise.inference.export", "export_workdir"),
    "get_config": ("jaxdenoise.config", "load_file"),
    "train_and_evaluate": ("jaxdenoise.train", "train_and_evaluate"),
    "zoo_models": ("jaxdenoise.zoo", "names"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'jaxdenoise' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
