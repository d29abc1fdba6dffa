"""Step and input-path throughput: prints a table (and JSON with --json); optionally beside PyTorch.

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/benchmark.py
(installed: ``jaxdenoise benchmark``).
"""
from jaxdenoise import hostmem  # first: glibc's malloc settings must precede the threads jax starts
hostmem.retain_freed_memory()
from jaxdenoise.commands import benchmark

if __name__ == "__main__":
    benchmark.run()
