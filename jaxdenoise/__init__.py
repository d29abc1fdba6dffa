"""jaxdenoise: a JAX/Flax image-denoising trainer, and the trained denoisers it makes.

    import jaxdenoise
    den = jaxdenoise.load("runs/unet_faces")     # a training workdir, or an exported .jaxdn file
    clean = den(noisy)                          # H x W x 3, uint8 or float in [0, 1]; the same dtype back

Training, evaluation, export and the rest are the ``jaxdenoise COMMAND`` console command's jobs
(``jaxdenoise.commands``; ``scripts/`` in a checkout). Importing the package imports nothing heavy (the
training scripts set malloc options before any thread starts): ``load`` and ``Denoiser`` load on first use.
"""
__all__ = ["Denoiser", "load"]


def __getattr__(name):
    if name in __all__:
        from jaxdenoise.inference import denoiser, load
        return {"Denoiser": denoiser.Denoiser, "load": load.load}[name]
    raise AttributeError(f"module 'jaxdenoise' has no attribute {name!r}")
