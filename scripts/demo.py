"""The demo (``make demo``): train configs/demo.py on the built-in photos, then evaluate on held-out photos.

    python scripts/demo.py --workdir runs/demo [--config configs/demo.py] [--config.FIELD=...]
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdenoise import evaluate, train

config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "demo.py"),
    "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", "runs/demo", "directory of the demo run")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        evaluate.demo(FLAGS.config, FLAGS.workdir)
    except (ValueError, train.TrainingDiverged, train.Interrupted) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
