"""Denoise your own photos with a trained run: any size and format, tiled when large.

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/denoise.py
(installed: ``jaxdenoise denoise``).
"""
from jaxdenoise.commands import denoise

if __name__ == "__main__":
    denoise.run()
