"""Errors that stop a job for a reason the user can act on. Every message is one line: the scripts print
``error: <message>`` and exit non-zero (``jaxdenoise.cli``).

``ValueError`` (and its subclasses ``CheckpointError``, ``StoreError``, ``ImageReadError``) is for bad input:
a config value, a path, a file. ``RunError`` is for a run that had to stop.
"""


class RunError(RuntimeError):
    """A training run stopped; the message says why, what was kept, and what to do."""


class TrainingDiverged(RunError):
    """Loss or gradient norm became NaN/inf."""


class TrainingStalled(RunError):
    """The gradient was exactly zero for many steps in a row: the model can no longer learn."""


class Interrupted(RunError):
    """SIGTERM/SIGINT: a checkpoint was saved; the message says where."""


class WorkdirBusy(RunError):
    """Another process holds the workdir's lock."""


class DiskFull(RunError):
    """No space left in the workdir; the message names the last good checkpoint."""
