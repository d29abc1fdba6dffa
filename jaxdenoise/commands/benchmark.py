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
flags.DEFINE_string("inference-size", "512x768", "HxW of the --inference image (a photo of Kodak's size by "
                    "default; small for a quick check of every path)")
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
    # one measurement per invocation: the layers, inference, every model's step, or this config's step
    measure = _layers if FLAGS.layers else _inference if FLAGS.inference else _models if FLAGS.models else _step
    table, result = measure(config, peer)
    if not parallel.is_main():  # the measurements ran on every process; process 0 reports them
        return
    print(table)
    if target:
        target.write(marks.json_text(result))


def _layers(config, peer):
    """Each U-Net convolution alone (XLA, oneDNN, and PyTorch with --compare-torch)."""
    rows = benchmark.layer_times(config.batch_size, config.data.patch or config.data.size, torch_too=bool(peer))
    return benchmark.format_layer_table(rows), rows


def _inference_size():
    """--inference-size as (height, width), or one line naming the flag."""
    given = FLAGS["inference-size"].value
    try:
        h, w = (int(v) for v in given.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 16 or w < 16:
        raise ValueError(f"--inference-size must be HxW, both >= 16 (e.g. 512x768), got {given!r}")
    return h, w


def _inference(config, peer):
    """Whole-image and tiled inference of --inference's models (and the peer's, with --compare-torch)."""
    names = _model_names({"config": [config.model.name]}.get(",".join(FLAGS.inference), FLAGS.inference),
                         "--inference", ", config or all")
    shape = _inference_size()
    rows = benchmark.run_inference(config, names, shape=shape)
    if peer:
        rows += benchmark.compare_torch_inference(config, peer, FLAGS.passes, shape=shape)
    return benchmark.format_inference_table(rows), rows


def _models(config, peer):
    """The train step of each of --models' models, at the config's batch."""
    results = benchmark.run_models(config, _model_names(FLAGS.models, "--models", " or all"), FLAGS.steps, FLAGS.store)
    return benchmark.format_models_table(results), results


def _step(config, peer):
    """The config's train step, input path and roofline (beside the peer's, with --compare-torch)."""
    res = benchmark.run(config, FLAGS.steps, FLAGS.store)
    if peer and parallel.is_main():
        res.update(benchmark.compare_torch(config, peer, FLAGS.steps, FLAGS.passes, FLAGS["torch-device"].value))
    return benchmark.format_table(res), res


def _model_names(names, flag: str, also: str):
    """Registered model names (``["all"]``: every one); a one-line error naming ``flag`` for an unknown one."""
    from jaxdenoise import models
    names = sorted(models.REGISTRY) if list(names) == ["all"] else list(names)
    for n in names:
        if n not in models.REGISTRY:
            raise ValueError(f"{flag}: unknown model {n!r}: choose from {', '.join(sorted(models.REGISTRY))}{also}")
    return names


def run() -> None:
    """Parse ``sys.argv`` and run ``main`` (``cli.run``)."""
    cli.run(main)
