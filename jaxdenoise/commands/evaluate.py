"""Evaluate a trained run from its workdir: a table of PSNR/SSIM per noise spec, model vs noisy vs baselines.

    python scripts/evaluate.py --workdir runs/x [--checkpoint best|latest|STEP] [--data DIR]
        [--noise poisson:30 --noise gaussian:25] [--baselines bm3d,nlm] [--json out.json] [--resize 128]
    python scripts/evaluate.py --workdir runs/x --data CLEAN_DIR --noisy NOISY_DIR --baselines bm3d,nlm
        (real noise: each noisy photo against the clean reference of the same name; baselines estimate
        the noise level from the image)
    python scripts/evaluate.py --model photos --data DIR --noise gaussian:25   (a zoo model or a .jaxdn file;
        --model also adds rows beside a --workdir run)

The table is printed first; a comparison grid that cannot be written (a read-only workdir) is a warning.
--json and --grid are checked before any work: never an input (--data, --noisy) or a file a training run owns
(config.json, checkpoints, ...), and an existing file only with --overwrite.
"""
import os

from absl import flags, logging

from jaxdenoise import cli, evaluate, layout, parallel

flags.DEFINE_string("workdir", None, "training workdir (its config.json and checkpoints/); or --model alone")
flags.DEFINE_multi_string("model", [], "a zoo model (faces, photos, real) or an exported .jaxdn file, scored "
                          "on the same noisy images (repeatable)")
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number")
flags.DEFINE_string("data", None, "a file or folder of images of any size (default: the run's validation split)")
flags.DEFINE_string("noisy", None, "a folder of real noisy photos, scored against the clean references in "
                    "--data with the same names (any formats)")
flags.DEFINE_multi_string("also", [], "another run's workdir, scored on the same noisy images (repeatable)")
flags.DEFINE_multi_string("noise", [], "noise spec(s), one row group each (default: the run's eval noise)")
flags.DEFINE_string("noise-level", None, "non-blind models on --noisy photos: their noise as a fixed spec "
                    "(poisson:30); default: a Gaussian level estimated per image")
flags.DEFINE_list("baselines", [], "classical denoisers to compare: bm3d, nlm")
flags.DEFINE_string("json", None, "also write the rows as JSON here (a new file, or one to replace with --overwrite)")
flags.DEFINE_integer("resize", None, "resize every image to this square size first")
flags.DEFINE_integer("seed", None, "noise seed (default: the run's eval_seed)")
flags.DEFINE_integer("tile", None, "tile side for images larger than this (default: whole images up to 16 MP, "
                     "tiles of 1024 px beyond; 0: whole images always)")
flags.DEFINE_integer("overlap", 32, "tile overlap in pixels")
flags.DEFINE_integer("ensemble", 1, "also score each model averaged over this many flips/rotations of its input "
                     "(2, 4, 8: a second row per model)")
flags.DEFINE_integer("limit", None, "evaluate only the first N images (e.g. to keep slow baselines short)")
flags.DEFINE_string("grid", None, "comparison grid PNG (default: WORKDIR/eval_grid.png, replaced on each run)")
flags.DEFINE_bool("overwrite", False, "replace an existing --json / --grid file (never an input or a run's own file)")
cli.define_distributed_flags()
cli.paths("workdir", "model", "data", "noisy", "also", "json", "grid")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    grid = FLAGS.grid or (FLAGS.workdir and os.path.join(FLAGS.workdir, layout.EVAL_GRID_FILE))
    rows = evaluate.run(FLAGS.workdir, FLAGS.checkpoint, data=FLAGS.data, noise_specs=FLAGS.noise,
                        baselines=FLAGS.baselines, resize=FLAGS.resize, seed=FLAGS.seed, tile=FLAGS.tile,
                        overlap=FLAGS.overlap, grid_path=grid, limit=FLAGS.limit, noisy=FLAGS.noisy, also=FLAGS.also,
                        noise_level=FLAGS["noise-level"].value, json_path=FLAGS.json, overwrite=FLAGS.overwrite,
                        models=FLAGS.model, ensemble=FLAGS.ensemble)
    if not parallel.is_main():  # every process computed its share; process 0 reports
        return
    print(evaluate.format_table(rows))
    if grid and os.path.isfile(grid):
        print(f"comparison grid (clean | noisy | model | baselines): {grid}")


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
