"""orbax checkpoints of a run: ``WORKDIR/checkpoints/<step>/{state,data}``.

Each checkpoint holds the train state (params, optimiser state, step), the run's rng and the grain
iterator state, so a rerun continues bit for bit. Retention keeps both the latest checkpoint (resume) and
the best by validation PSNR (use): a ``best_fn`` with ``max_to_keep`` alone would keep the two best and
delete the latest, so we use a preservation policy ``LatestN(1) | BestN(1)`` and keep ``best_fn`` for
``best_step()``. Saves are asynchronous; ``wait`` blocks until the last one is on disk.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "psnr"


class CheckpointError(ValueError):
    """A missing, half-written or incompatible checkpoint; the message is one line."""


def _best(metrics) -> float:
    return float(metrics[BEST_METRIC])


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with our retention and item layout."""

    def __init__(self, directory: str, *, read_only: bool = False, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=1),
            pp.BestN(get_metric_fn=_best, reverse=False, n=1, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            best_fn=_best, best_mode="max", preservation_policy=policy, create=not read_only,
            read_only=read_only, enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def best_step(self) -> Optional[int]:
        return self.manager.best_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Optional[dict] = None,
             metrics: Optional[dict] = None) -> bool:
        """Save asynchronously (returns once device arrays are copied). ``metrics`` marks an eval checkpoint.

        data_state: the grain iterator's state (``iterator.get_state()``) matching ``state``'s step.
        """
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(self, step: int, abstract_state: Any, with_data: bool = False) -> Tuple[Any, Optional[dict]]:
        """(state restored onto ``abstract_state`` (ShapeDtypeStructs with shardings), data state or None)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if with_data:
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint {self.directory}/{step} is incomplete ({_first_line(e)})") from e
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {self.directory}/{step} does not match this model/config "
                                  f"({_first_line(e)})") from e
        return restored["state"], (restored["data"] if with_data else None)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def resolve_step(ckpt: Checkpointer, which: str | int) -> int:
    """'best' | 'latest' | a step number -> a step that exists; CheckpointError otherwise."""
    steps = ckpt.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint in {ckpt.directory} (was the run started? is the path right?)")
    if which == "latest":
        return ckpt.latest_step()
    if which == "best":
        return ckpt.best_step() if ckpt.best_step() is not None else ckpt.latest_step()
    try:
        step = int(which)
    except (TypeError, ValueError):
        raise CheckpointError(f"--checkpoint must be best, latest or a step number, got {which!r}") from None
    if step not in steps:
        raise CheckpointError(f"no checkpoint at step {step} in {ckpt.directory}; saved steps: {sorted(steps)}")
    return step


def abstract_like(tree: Any, sharding: Optional[jax.sharding.Sharding] = None) -> Any:
    """ShapeDtypeStructs of a pytree (of arrays or ShapeDtypeStructs), with ``sharding`` on every leaf."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def read_run_config(workdir: str):
    """The config a run saved in ``WORKDIR/config.json`` as a ConfigDict; CheckpointError when absent."""
    import ml_collections
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{workdir} is not a training workdir (no config.json)")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:240] if lines else type(e).__name__



def load_params(workdir: str, which: str | int = "best") -> Tuple[Any, Any, int]:
    """(config, params, step) of a run's checkpoint, restored onto abstract shapes built from its config.

    Needs nothing but the workdir (its config.json and checkpoints/); CheckpointError (one line) when the
    workdir, the checkpoint or its compatibility with the saved config is missing.
    """
    from jaxdenoise import models, steps

    config = read_run_config(workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"no checkpoints directory in {workdir} (no checkpoint was saved yet)")
    ckpt = Checkpointer(ckpt_dir, read_only=True)
    try:
        step = resolve_step(ckpt, which)
        model = models.create(config.model, config.dtype)
        tx = steps.make_optimizer(config, total_steps=1)
        size = config.data.size

        def init(rng):
            return {"train_state": steps.init_state(model, tx, rng, (size, size, 3)), "rng": rng}
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = abstract_like(jax.eval_shape(init, jax.random.PRNGKey(0)), sharding)
        state, _ = ckpt.restore(step, abstract)
    finally:
        ckpt.close()
    return config, state["train_state"].params, step
