"""Step and input-path throughput: prints a table (and JSON with --json); optionally beside PyTorch.

    python scripts/benchmark.py --config configs/paper.py [--config.batch_size=16] [--steps N]
        [--json out.json] [--compare-torch] [--store PREPARED_STORE]
    python scripts/benchmark.py --config configs/unet_faces.py --models all     (one row per registered model)
    python scripts/benchmark.py --config configs/unet_faces.py --inference config   (s/MP: whole, tiles, export)

With --compare-torch, the PyTorch peer of the config's model (shared/peers: torch_paper_ae.py for `paper`,
torch_unet.py for `unet`; needs torch, e.g. `pip install torch==2.13.0` on CPU) runs in the same invocation,
alternated with our step (--passes rounds of: our step as configured, like-for-like (the peer's noise and
loss, no EMA), and the peer's fastest configuration, channels_last with our malloc settings); medians and
ratios; the peer's other layouts once each, for the record. With --inference config, the peer's whole-image inference beside ours.

    python scripts/benchmark.py --config configs/unet_photos.py --config.data.dir=PHOTOS --compare-torch
    python scripts/benchmark.py --config configs/unet_photos.py --inference config --compare-torch
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
import os

from absl import flags, logging
from ml_collections import config_flags

from jaxdenoise import benchmark, cli, marks, outputs, parallel

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
_PEERS = os.path.join(_REPO, "..", "shared", "peers")
config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "paper.py"), "experiment config",
                                lock_config=True)
flags.DEFINE_integer("steps", 20, "timed train steps")
flags.DEFINE_string("json", None, "write the results as JSON here (a new file, or one to replace with --overwrite)")
flags.DEFINE_bool("overwrite", False, "replace an existing --json file (never an input: the config, the store)")
flags.DEFINE_bool("compare-torch", False, "also run the PyTorch peer of the config's model, alternated, and "
                  "print the ratios")
flags.DEFINE_string("torch-peer", None, "path of the PyTorch peer (default: the model's own in ../shared/peers)")
flags.DEFINE_integer("passes", 3, "alternated rounds of ours and the PyTorch peer (--compare-torch)")
flags.DEFINE_string("torch-device", "cpu", "device for the PyTorch reference (cpu | cuda)")
flags.DEFINE_list("models", [], "benchmark these registered models (or 'all') at their default fields, "
                  "with the rest of --config, and print one row each")
flags.DEFINE_list("inference", [], "instead of training steps: inference speed (s/MP whole, tiled and exported) "
                  "of these models (or 'config': the config's model; 'all': every registered one)")
flags.DEFINE_bool("layers", False, "instead of training steps: each U-Net convolution's forward and both gradients "
                  "timed alone (ms), with XLA's convolutions, oneDNN's and PyTorch's (with --compare-torch), at the "
                  "config's batch and patch side")
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
    if FLAGS.passes < 1:
        raise ValueError(f"--passes must be >= 1 (alternated rounds), got {FLAGS.passes}")
    peer = None
    if FLAGS["compare-torch"].value:
        peer = FLAGS["torch-peer"].value or benchmark.peer_path(config.model.name, _PEERS)
        if not os.path.isfile(peer):
            raise FileNotFoundError(f"--torch-peer: PyTorch peer not found at {peer}")
    inputs = [("--config", config_flags.get_config_filename(FLAGS["config"])), ("--store", FLAGS.store),
              ("--torch-peer", peer)]
    target = FLAGS.json and parallel.is_main() and outputs.claim(FLAGS.json, "--json", inputs=inputs,
                                                                 overwrite=FLAGS.overwrite)
    if config.data.source == "dir" and not config.data.dir:
        with config.unlocked():  # the loader needs real photos: --store, else the built-in ones
            if FLAGS.store:
                config.data.dir = FLAGS.store
            else:
                config.data.source = "builtin"
    if FLAGS.layers:
        rows = benchmark.layer_times(config.batch_size, config.data.patch or config.data.size,
                                     torch_too=FLAGS["compare-torch"].value)
        print(benchmark.format_layer_table(rows))
        if target:
            target.write(marks.json_text(rows))
        return
    if FLAGS.inference:
        from jaxdenoise import models
        names = {"config": [config.model.name], "all": sorted(models.REGISTRY)}.get(",".join(FLAGS.inference),
                                                                                    FLAGS.inference)
        for n in names:
            if n not in models.REGISTRY:
                raise ValueError(f"--inference: unknown model {n!r}: choose from {', '.join(sorted(models.REGISTRY))}, "
                                 f"config or all")
        rows = benchmark.run_inference(config, names)
        if peer:
            rows += benchmark.compare_torch_inference(config, peer, FLAGS.passes)
        print(benchmark.format_inference_table(rows))
        if target:
            target.write(marks.json_text(rows))
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
            target.write(marks.json_text(results))
        return
    res = benchmark.run(config, FLAGS.steps, FLAGS.store)
    if not parallel.is_main():  # the measurements ran on every process; process 0 reports them
        return
    if peer:
        res.update(benchmark.compare_torch(config, peer, FLAGS.steps, FLAGS.passes, FLAGS["torch-device"].value))
    print(benchmark.format_table(res))
    if target:
        target.write(marks.json_text(res))


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
