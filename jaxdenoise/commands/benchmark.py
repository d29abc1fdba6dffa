"""Step and input-path throughput: prints a table (and JSON with --json); optionally beside PyTorch.

    python scripts/benchmark.py --config configs/paper.py [--config.batch_size=16] [--steps N]
        [--json out.json] [--compare-torch] [--store PREPARED_STORE]
    python scripts/benchmark.py --config configs/unet_faces.py --models all     (one row per registered model)
    python scripts/benchmark.py --config configs/unet_faces.py --inference config   (s/MP: whole, tiles, export)

With --compare-torch, the PyTorch reference (shared/peers/torch_paper_ae.py; needs torch, e.g.
`pip install torch==2.13.0` on CPU) runs in the same invocation, NCHW and channels_last, best of both.
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import json
import os

from absl import flags, logging
from ml_collections import config_flags

from jaxdenoise import benchmark, cli, outputs, parallel

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "paper.py"), "experiment config",
                                lock_config=True)
flags.DEFINE_integer("steps", 20, "timed train steps")
flags.DEFINE_string("json", None, "write the results as JSON here (a new file, or one to replace with --overwrite)")
flags.DEFINE_bool("overwrite", False, "replace an existing --json file (never an input: the config, the store)")
flags.DEFINE_bool("compare-torch", False, "also run the PyTorch reference and print the ratio")
flags.DEFINE_string("torch-peer", os.path.join(_REPO, "..", "shared", "peers", "torch_paper_ae.py"),
                    "path of the PyTorch reference trainer")
flags.DEFINE_string("torch-device", "cpu", "device for the PyTorch reference (cpu | cuda)")
flags.DEFINE_list("models", [], "benchmark these registered models (or 'all') at their default fields, "
                  "with the rest of --config, and print one row each")
flags.DEFINE_list("inference", [], "instead of training steps: inference speed (s/MP whole, tiled and exported) "
                  "of these models (or 'config': the config's model; 'all': every registered one)")
flags.DEFINE_string("store", None, "prepared store for the loader measurements (default: the config's data)")
cli.define_distributed_flags()
cli.paths("json", "store", "torch-peer")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    config = FLAGS.config
    if FLAGS.steps < 1:
        raise ValueError(f"--steps must be >= 1 (timed train steps), got {FLAGS.steps}")
    inputs = [("--config", config_flags.get_config_filename(FLAGS["config"])), ("--store", FLAGS.store),
              ("--torch-peer", FLAGS["torch-peer"].value if FLAGS["compare-torch"].value else None)]
    target = FLAGS.json and parallel.is_main() and outputs.claim(FLAGS.json, "--json", inputs=inputs,
                                                                 overwrite=FLAGS.overwrite)
    if config.data.source == "dir" and not config.data.dir:
        with config.unlocked():  # the loader needs real photos: --store, else the built-in ones
            if FLAGS.store:
                config.data.dir = FLAGS.store
            else:
                config.data.source = "builtin"
    if FLAGS.inference:
        from jaxdenoise import models
        names = {"config": [config.model.name], "all": sorted(models.REGISTRY)}.get(",".join(FLAGS.inference),
                                                                                    FLAGS.inference)
        for n in names:
            if n not in models.REGISTRY:
                raise ValueError(f"--inference: unknown model {n!r}: choose from {', '.join(sorted(models.REGISTRY))}, "
                                 f"config or all")
        rows = benchmark.run_inference(config, names)
        print(benchmark.format_inference_table(rows))
        if target:
            target.write(json.dumps(rows, indent=1) + "\n")
        return
    if FLAGS.models:
        from jaxdenoise import models
        names = sorted(models.REGISTRY) if FLAGS.models == ["all"] else FLAGS.models
        for n in names:
            if n not in models.REGISTRY:
                raise ValueError(f"--models: unknown model {n!r}: choose from {', '.join(sorted(models.REGISTRY))} or all")
        results = benchmark.run_models(config, names, FLAGS.steps, FLAGS.store)
        if not parallel.is_main():
            return
        print(benchmark.format_models_table(results))
        if target:
            target.write(json.dumps(results, indent=1) + "\n")
        return
    res = benchmark.run(config, FLAGS.steps, FLAGS.store)
    if not parallel.is_main():  # the measurements ran on every process; process 0 reports them
        return
    if FLAGS["compare-torch"].value:
        res.update(benchmark.compare_torch(FLAGS["torch-peer"].value, config.batch_size, config.data.size,
                                           max(FLAGS.steps, 10), FLAGS["torch-device"].value))
    print(benchmark.format_table(res))
    if target:
        target.write(json.dumps(res, indent=1) + "\n")


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
