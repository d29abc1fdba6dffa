"""Prepare a folder of images into a jaxdenoise store (PNG folder, packed uint8 arrays, manifest.json).

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/prepare.py
(installed: ``jaxdenoise prepare``).
"""
from jaxdenoise.commands import prepare

if __name__ == "__main__":
    prepare.run()
