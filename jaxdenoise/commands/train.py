"""Train a denoiser: ``python scripts/train.py --config configs/paper.py --workdir runs/x [--config.FIELD=...]``.

Rerunning the same command resumes from the latest intact checkpoint in the workdir. Errors (a bad config
value, a workdir in use, a full disk, a diverged run) print one line and exit non-zero.
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()

from absl import flags, logging
from ml_collections import config_flags

from jaxdenoise import cli, train

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "directory of this run (checkpoints, metrics, plots)", required=True)
cli.define_distributed_flags()
cli.paths("workdir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    flags.mark_flags_as_required(["config"])
    cli.run(main)
