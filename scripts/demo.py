"""The demo (``make demo``): train the paper's model (configs/demo.py) and a small U-Net (configs/demo_unet.py)
on the built-in photos, then score both on held-out photos, beside the noisy input and the zoo's generic-photo
model (``jaxdenoise.load("photos")``, trained by us for an hour: what a longer run buys), in one table and grid.

    python scripts/demo.py --workdir runs/demo [--paper_config configs/demo.py] [--unet_config configs/demo_unet.py]

Runs go to WORKDIR/paper and WORKDIR/unet; rerunning resumes (or, when complete, only evaluates).
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import os

from absl import flags, logging
from ml_collections import config_flags

from jaxdenoise import cli, evaluate, train

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
config_flags.DEFINE_config_file("paper_config", os.path.join(_CONFIGS, "demo.py"), "the paper model's config",
                                lock_config=True)
config_flags.DEFINE_config_file("unet_config", os.path.join(_CONFIGS, "demo_unet.py"), "the U-Net's config",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/demo", "directory of the demo runs")
FLAGS = flags.FLAGS
LEVELS = ("poisson:5", "poisson:10", "poisson:30")
ZOO = "photos"  # the shipped model shown beside the two the demo trains


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    runs = {"paper": FLAGS.paper_config, "unet": FLAGS.unet_config}
    for name, config in runs.items():
        print(f"\n=== training {name} ===")
        train.train_and_evaluate(config, os.path.join(FLAGS.workdir, name))
    grid = os.path.join(FLAGS.workdir, "grid.png")
    dirs = [os.path.join(FLAGS.workdir, name) for name in runs]
    # the grid is the demo's own output in its own folder: a rerun of the demo replaces it
    rows = evaluate.run(dirs[0], "best", noise_specs=LEVELS, also=dirs[1:], models=[ZOO], grid_path=grid,
                        overwrite=True)
    print("\nheld-out photos (never seen in training), best checkpoints:")
    print(evaluate.format_table(rows))
    for spec in LEVELS:
        noisy, *models = [r for r in rows if r["noise"] == spec]
        label = lambda m: f"zoo {ZOO}" if "zoo:" in m["method"] else m["method"].split(" ")[0]
        gains = ", ".join(f"{label(m)} {m['psnr'] - noisy['psnr']:+.2f} dB" for m in models)
        print(f"  {spec}: over the noisy input: {gains}")
    print(f"image grid (clean | noisy | paper | unet | zoo {ZOO}): {grid}")
    print(f"the zoo model on your own photos: python scripts/denoise.py --model {ZOO} --input PHOTO_OR_FOLDER")


if __name__ == "__main__":
    cli.run(main)
