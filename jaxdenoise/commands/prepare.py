"""Prepare a folder of images into a jaxdenoise store (PNG folder, packed uint8 arrays, manifest.json).

    python scripts/prepare_data.py --src ~/photos --out data/faces128 [--size 128] [--val-fraction 0.2]

--out must be a new or empty folder, or a store this script wrote (it is then replaced whole, only once the
new one is complete); --src is never written.
"""
from absl import flags

from jaxdenoise import cli
from jaxdenoise.data import prepare

flags.DEFINE_string("src", None, "folder of images (searched recursively; never modified)", required=True)
flags.DEFINE_string("out", None, "output folder for the prepared store (new, empty, or a store to replace)",
                    required=True)
flags.DEFINE_integer("size", 128, "output side in pixels")
flags.DEFINE_float("val-fraction", 0.2, "fraction of images in the validation split")
flags.DEFINE_integer("seed", 0, "seed of the split hash")
flags.DEFINE_enum("mode", "resize", ["resize", "center_crop", "full"],
                  "resize whole images, centre-crop a square first, or keep each image's own size (full: for "
                  "patch training; --size is then the smallest short side kept)")
flags.DEFINE_integer("max-side", 1024, "full mode: shrink images whose longer side exceeds this (0 = no cap)")
flags.DEFINE_integer("workers", 0, "processes (0: all cores)")
cli.paths("src", "out")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    prepare.prepare_folder(FLAGS.src, FLAGS.out, size=FLAGS.size, val_fraction=FLAGS["val-fraction"].value,
                           seed=FLAGS.seed, mode=FLAGS.mode, workers=FLAGS.workers or None,
                           max_side=FLAGS["max-side"].value)


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
