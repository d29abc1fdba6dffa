"""Validation PSNR and MSE per epoch (the paper's Figs. 7 and 8) from one or more runs' metrics.jsonl.

    python scripts/plot.py --workdir runs/a [--workdir runs/b ...] [--out DIR]
"""
from absl import flags

from jaxdenoise import cli, plots

flags.DEFINE_multi_string("workdir", None, "training workdir(s); several share the axes", required=True)
flags.DEFINE_string("out", None, "output folder (default: the first workdir)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    print("\n".join(plots.plot_curves(FLAGS.workdir, FLAGS.out or FLAGS.workdir[0])))


if __name__ == "__main__":
    cli.run(main)
