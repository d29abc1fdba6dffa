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
from jaxdenoise.commands import benchmark

if __name__ == "__main__":
    benchmark.run()
