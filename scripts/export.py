"""Export a trained run as a model file that runs with jax and numpy alone (``jaxdenoise.inference.export``).

The command-line entry point of a checkout; its flags, usage and behaviour: jaxdenoise/commands/export.py
(installed: ``jaxdenoise export``).
"""
from jaxdenoise.commands import export

if __name__ == "__main__":
    export.run()
