"""Validation PSNR and MSE per epoch (the paper's Figs. 7 and 8) from one or more runs' metrics.jsonl.

    python scripts/plot.py --workdir runs/a [--workdir runs/b ...] [--label A --label B] [--x minutes]
        [--out DIR] [--overwrite]

Writes psnr_per_epoch.png and mse_per_epoch.png (--x=epoch) or psnr_vs_minutes.png and mse_vs_minutes.png
(--x=minutes: learning curves against each run's wall-clock time, for runs on the same machine) into --out
(default: the first workdir, where they are the run's own files and are replaced); elsewhere existing files
of those names are kept unless --overwrite.
"""
from absl import flags

from jaxdenoise import cli, plots

flags.DEFINE_multi_string("workdir", None, "training workdir(s); several share the axes", required=True)
flags.DEFINE_multi_string("label", None, "legend label per --workdir, in order (default: the folder names)")
flags.DEFINE_enum("x", "epoch", plots.X_AXES, "x axis: epochs, or wall-clock minutes of training")
flags.DEFINE_string("out", None, "output folder (default: the first workdir)")
flags.DEFINE_bool("overwrite", False, "replace psnr_per_epoch.png / mse_per_epoch.png already in --out (never a "
                  "run's own files elsewhere)")
cli.paths("workdir", "out")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    print("\n".join(plots.plot_curves(FLAGS.workdir, FLAGS.out or FLAGS.workdir[0], labels=FLAGS.label,
                                         overwrite=FLAGS.overwrite, x=FLAGS.x)))


if __name__ == "__main__":
    cli.run(main)
