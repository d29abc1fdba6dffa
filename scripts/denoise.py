"""Denoise your own photos with a trained run: any size and format, tiled when large.

    python scripts/denoise.py --workdir runs/x --input PATH [--output DIR] [--tile 256 --overlap 32] [--batch 8]
"""
import sys

from absl import app, flags, logging

from jaxdenoise import checkpointing, denoise

flags.DEFINE_string("workdir", None, "training workdir", required=True)
flags.DEFINE_string("input", None, "an image file or a folder of images", required=True)
flags.DEFINE_string("output", "denoised", "output folder (same relative names)")
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number")
flags.DEFINE_integer("tile", 256, "tile side for images larger than this (0: whole image always)")
flags.DEFINE_integer("overlap", 32, "tile overlap in pixels (blended with a smooth window)")
flags.DEFINE_integer("batch", 8, "tiles per device call")
flags.DEFINE_bool("keep-format", False, "write the input's format instead of PNG")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    try:
        res = denoise.denoise_paths(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.checkpoint, FLAGS.tile,
                                    FLAGS.overlap, FLAGS.batch, FLAGS["keep-format"].value)
    except (ValueError, checkpointing.CheckpointError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {len(res['written'])} image(s) to {FLAGS.output}; skipped {len(res['skipped'])}")
    for s in res["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}")


if __name__ == "__main__":
    app.run(main)
