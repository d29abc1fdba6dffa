"""Export a trained run as a model file that runs with jax and numpy alone (``jaxdenoise.export``).

    python scripts/export.py --workdir runs/unet_faces --out unet_faces.jaxdn [--checkpoint best|latest|STEP]
        [--platforms cpu,cuda] [--overwrite]

The file holds the denoiser lowered by ``jax.export`` (symbolic batch, height and width; heights and widths
multiples of the model's stride) with its weights, and a JSON header (model, parameters, stride, training
noise, validation scores). ``jaxdenoise.load(FILE)`` reads it; the module docstring of ``jaxdenoise.export``
shows the ten lines that run it without this project. --out is checked before any work: never a file of
the run, and an existing file only with --overwrite.
"""
from jaxdenoise.commands import export

if __name__ == "__main__":
    export.run()
