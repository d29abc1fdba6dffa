"""Export a trained run as a model file that runs with jax and numpy alone (``jaxdenoise.inference.export``).

    python scripts/export.py --workdir runs/unet_faces --out unet_faces.jaxdn [--checkpoint best|latest|STEP]
        [--platforms cpu,cuda] [--overwrite]

The file holds the denoiser lowered by ``jax.export`` (symbolic batch, height and width; heights and widths
multiples of the model's stride) with its weights, and a JSON header (model, parameters, stride, training
noise, validation scores). ``jaxdenoise.load(FILE)`` reads it; the module docstring of ``jaxdenoise.inference.exported``
shows the ten lines that run it without this project. --out is checked before any work: never a file of
the run, and an existing file only with --overwrite.
"""
from absl import flags, logging

from jaxdenoise import cli
from jaxdenoise.inference import export

flags.DEFINE_string("workdir", None, "training workdir (its config.json and checkpoints/)", required=True)
flags.DEFINE_string("out", None, "the model file to write (e.g. model.jaxdn)", required=True)
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number")
flags.DEFINE_list("platforms", list(export.PLATFORMS), "platforms to lower for (cpu, cuda, rocm, tpu)")
flags.DEFINE_bool("overwrite", False, "replace an existing --out file (never a file of the run)")
cli.paths("workdir", "out")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    which = int(FLAGS.checkpoint) if FLAGS.checkpoint.isdigit() else FLAGS.checkpoint
    h = export.export_workdir(FLAGS.workdir, FLAGS.out, which, FLAGS.platforms, FLAGS.overwrite)
    print(f"wrote {FLAGS.out}: {h['model']} ({h['parameters']:,} parameters, step {h['step']}, {h['weights']} "
          f"weights), stride {h['stride']}, lowered for {', '.join(h['platforms'])}")


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
