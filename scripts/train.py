"""Train a denoiser: ``python scripts/train.py --config configs/paper.py --workdir runs/x [--config.FIELD=...]``.

Rerunning the same command resumes from the latest checkpoint in the workdir.
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdenoise import train

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "directory of this run (checkpoints, metrics, plots)", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, train.TrainingDiverged, train.Interrupted) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
