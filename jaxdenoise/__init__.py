"""jaxdenoise: a JAX/Flax image-denoising trainer, and the trained denoisers it makes.

    import jaxdenoise
    den = jaxdenoise.load("runs/unet_faces")     # a training workdir, or an exported .jaxdn file
    clean = den(noisy)                          # H x W x 3, uint8 or float in [0, 1]; the same dtype back

Training, evaluation and export are the scripts' jobs (``scripts/`` in a checkout); the modules below hold
them. Importing the package stays light: jax and flax load when a model does.
"""
from jaxdenoise.denoiser import Denoiser, load

__all__ = ["Denoiser", "load"]
