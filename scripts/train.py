"""Train a denoiser: ``python scripts/train.py --config configs/paper.py --workdir runs/x [--config.FIELD=...]``.

Rerunning the same command resumes from the latest intact checkpoint in the workdir. Errors (a bad config
value, a workdir in use, a full disk, a diverged run) print one line and exit non-zero.
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
from jaxdenoise.commands import train

if __name__ == "__main__":
    train.run()
