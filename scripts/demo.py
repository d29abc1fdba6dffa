"""The demo (``make demo``): train configs/demo.py on the built-in photos, then evaluate on held-out photos.

    python scripts/demo.py --workdir runs/demo [--config configs/demo.py] [--config.FIELD=...]

Rerunning resumes (or, when the run is complete, only evaluates).
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import os

from absl import flags, logging
from ml_collections import config_flags

from jaxdenoise import cli, evaluate, train

config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "demo.py"),
    "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", "runs/demo", "directory of the demo run")
FLAGS = flags.FLAGS
LEVELS = ("poisson:5", "poisson:10", "poisson:30")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    rows = evaluate.run(FLAGS.workdir, "best", noise_specs=LEVELS)
    print("\nheld-out photos (never seen in training), best checkpoint:")
    print(evaluate.format_table(rows))
    for spec in LEVELS:
        noisy, model = [r for r in rows if r["noise"] == spec]
        print(f"  {spec}: {model['psnr'] - noisy['psnr']:+.2f} dB over the noisy input")
    print(f"image grid (clean | noisy | denoised): {os.path.join(FLAGS.workdir, 'grid.png')}")


if __name__ == "__main__":
    cli.run(main)
