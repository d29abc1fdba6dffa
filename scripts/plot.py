"""Validation PSNR and MSE per epoch (the paper's Figs. 7 and 8) from one or more runs' metrics.jsonl.

    python scripts/plot.py --workdir runs/a [--workdir runs/b ...] [--out DIR]
"""
import sys

from absl import app, flags

from jaxdenoise import plots

flags.DEFINE_multi_string("workdir", None, "training workdir(s); several share the axes", required=True)
flags.DEFINE_string("out", None, "output folder (default: the first workdir)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        paths = plots.plot_curves(FLAGS.workdir, FLAGS.out or FLAGS.workdir[0])
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print("\n".join(paths))


if __name__ == "__main__":
    app.run(main)
