"""Validation PSNR and MSE per epoch (the paper's Figs. 7 and 8) from one or more runs' metrics.jsonl.

    python scripts/plot.py --workdir runs/a [--workdir runs/b ...] [--out DIR] [--overwrite]

Writes psnr_per_epoch.png and mse_per_epoch.png into --out (default: the first workdir, where they are the
run's own files and are replaced); elsewhere existing files of those names are kept unless --overwrite.
"""
from absl import flags

from jaxdenoise import cli, plots

flags.DEFINE_multi_string("workdir", None, "training workdir(s); several share the axes", required=True)
flags.DEFINE_string("out", None, "output folder (default: the first workdir)")
flags.DEFINE_bool("overwrite", False, "replace psnr_per_epoch.png / mse_per_epoch.png already in --out (never a "
                  "run's own files elsewhere)")
cli.paths("workdir", "out")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    print("\n".join(plots.plot_curves(FLAGS.workdir, FLAGS.out or FLAGS.workdir[0], overwrite=FLAGS.overwrite)))


if __name__ == "__main__":
    cli.run(main)
