"""Denoise your own photos with a trained run: any size and format, tiled when large.

    python scripts/denoise.py --workdir runs/x --input PATH [--output DIR] [--tile 1024 --overlap 32] [--batch 8]
        [--keep-format] [--overwrite] [--noise-level poisson:30]
    python scripts/denoise.py --model photos --input PATH ...    (a zoo model: faces, photos, real; or a .jaxdn)

Output names, formats and the no-clobber rules: ``jaxdenoise.inference.files.denoise_paths``.
"""
from absl import flags, logging

from jaxdenoise import cli
from jaxdenoise.inference import files

flags.DEFINE_string("workdir", None, "training workdir (or --model)")
flags.DEFINE_string("model", None, "instead of --workdir: a zoo model (faces, photos, real) or an exported .jaxdn file")
flags.DEFINE_string("input", None, "an image file or a folder of images", required=True)
flags.DEFINE_string("output", "denoised", "output folder (subfolders mirror the input's)")
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number")
flags.DEFINE_integer("tile", None, "tile side for images larger than this (default: whole images up to 16 MP, "
                     "tiles of 1024 px beyond; 0: whole image always)")
flags.DEFINE_integer("overlap", 32, "tile overlap in pixels (blended with a smooth window)")
flags.DEFINE_integer("batch", 8, "tiles per device call")
flags.DEFINE_integer("ensemble", 1, "average over this many flips/rotations of each photo (1, 2, 4, 8; "
                     "8: the x8 self-ensemble, 8x the time)")
flags.DEFINE_bool("keep-format", False, "write each input's real format (from its magic bytes) instead of PNG")
flags.DEFINE_bool("overwrite", False, "replace existing outputs (atomically); inputs are never replaced")
flags.DEFINE_string("noise-level", None, "non-blind models only: the photos' noise as a fixed spec "
                    "(poisson:30, gaussian:25); default: a Gaussian level estimated per image")
cli.paths("workdir", "model", "input", "output")
flags.register_multi_flags_validator(["workdir", "model"], lambda f: bool(f["workdir"]) != bool(f["model"]),
                                     "give either --workdir (a training run) or --model (a zoo name or a .jaxdn file)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    res = files.denoise_paths(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.checkpoint, tile=FLAGS.tile,
                              overlap=FLAGS.overlap, batch=FLAGS.batch, keep_format=FLAGS["keep-format"].value,
                              overwrite=FLAGS.overwrite, noise_level=FLAGS["noise-level"].value, model=FLAGS.model,
                              ensemble=FLAGS.ensemble)
    print(f"wrote {len(res['written'])} image(s) to {FLAGS.output}; skipped {len(res['skipped'])}")
    for s in res["skipped"]:
        to = f" -> {s['output']}" if "output" in s else ""
        print(f"  skipped {s['path']}{to}: {s['reason']}")


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
