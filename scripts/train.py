"""Train a denoiser: ``python scripts/train.py --config configs/paper.py --workdir runs/x [--config.FIELD=...]``.

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/train.py
(installed: ``jaxdenoise train``).
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
from jaxdenoise.commands import train

if __name__ == "__main__":
    train.run()
