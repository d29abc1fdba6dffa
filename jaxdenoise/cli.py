"""What every command-line script shares: flag parsing and errors as one line, not a traceback.

``cli.run(main)`` replaces ``absl.app.run(main)``. A mistyped config field, a bad flag value, a config file
that is missing, and every error jaxdenoise raises for the user (``ValueError`` and its subclasses,
``errors.RunError``, an ``OSError`` such as a full disk or a read-only folder) end the process with
``error: <one line>`` on stderr and exit status 1.

``define_distributed_flags()`` (train, evaluate, benchmark) adds the flags that join a multi-process run;
``run`` then joins it (``parallel.initialize``) before ``main`` touches a device.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable, List, Optional

from absl import app, flags

from jaxdenoise import errors, fsutil

_DID_YOU_MEAN = re.compile(r"Did you mean \"([\w.]+)\" instead of \"([\w.]+)\"")


def describe(e: BaseException) -> str:
    """One line for the user: what went wrong and, where we know it, what to do."""
    if isinstance(e, OSError) and not isinstance(e, errors.RunError):
        return fsutil.describe(e)
    text = str(e)
    m = _DID_YOU_MEAN.search(text.replace("\\n", "\n").replace('\\"', '"'))
    if m:
        return f"unknown config field {m.group(2)!r} (did you mean {m.group(1)!r}?)"
    if isinstance(e, (AttributeError, KeyError)):
        name = fsutil.first_line(e).strip("'\"\\")
        return f"unknown config field {name!r}"
    return fsutil.first_line(e, limit=400)


def parse_flags(argv: List[str]) -> List[str]:
    """absl's parsing, with every failure (bad value, unknown config field, missing config file, a config file
    without ``get_config`` or whose ``get_config`` fails) one line naming the flag and the file."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        text = str(e)
        if "Error whilst parsing config file" in text:  # ml_collections puts get_config's traceback inside
            last = [line.strip() for line in text.splitlines() if line.strip()][-1]
            files = _config_files(argv)
            where = f"--{files[0][0]} {files[0][1]}" if files else "the config file"
            sys.exit(f"error: {where}: get_config() failed: {last}")
        sys.exit(f"error: {_config_file_problem(argv, e) or fsutil.first_line(e) + ' (--helpshort lists the flags)'}")
    except (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError, ImportError) as e:
        sys.exit(f"error: {_config_file_problem(argv, e) or describe(e)}")
    for name, path in _config_files(argv):  # a file that could not be read fails only when first used
        value = flags.FLAGS[name].value
        if type(value).__name__ == "_ErrorConfig":
            sys.exit(f"error: --{name} {path} {_unreadable(path)}")
        if not hasattr(value, "to_dict"):
            sys.exit(f"error: --{name} {path}: get_config() returned {type(value).__name__}, not an "
                     f"ml_collections ConfigDict")
    return rest


def _unreadable(path: str) -> str:
    if os.path.isdir(path):
        return "is a folder, not a config file"
    return "does not exist" if not os.path.exists(path) else "cannot be read"


def _config_files(argv: List[str]) -> List[tuple]:
    """(flag name, path) of every config-file flag given on the command line."""
    out = []
    for i, arg in enumerate(argv[1:], 1):
        if not arg.startswith("--") or "." in arg.split("=")[0]:
            continue
        name, eq, value = arg[2:].partition("=")
        if name in flags.FLAGS and type(flags.FLAGS[name].parser).__name__ == "ConfigFileFlagParser":
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            out.append((name, value.split(":", 1)[0]))
    return out


def _config_file_problem(argv: List[str], e: BaseException) -> str | None:
    """What is wrong with the config file behind a parse error, when that is the cause."""
    files = _config_files(argv)
    for name, path in files:
        if not os.path.isfile(path):
            return f"--{name} {path} {_unreadable(path)}"
    if not files:
        return None
    name, path = files[0]
    if isinstance(e, AttributeError) and "get_config" in str(e):
        return f"--{name} {path} has no get_config() function (a config file defines get_config(), see configs/)"
    if isinstance(e, SyntaxError):
        return f"--{name} {path}: {e.msg} at line {e.lineno}"
    unknown = re.match(r"Unknown command line flag '(\w+)\.([\w.]+)'", str(e))
    if unknown and unknown.group(1) == name:  # an override of a config that did not load as a ConfigDict?
        from jaxdenoise import config as config_lib
        try:
            loaded = config_lib.load_file(path)
        except Exception:  # noqa: BLE001 - the probe only refines the message
            return None
        if not hasattr(loaded, "to_dict"):
            return f"--{name} {path}: get_config() returned {type(loaded).__name__}, not an ml_collections ConfigDict"
        return f"unknown config field {unknown.group(2)!r}"
    if "does not support indexing" in str(e) or "object has no attribute" in str(e):
        return f"--{name} {path}: get_config() did not return an ml_collections ConfigDict ({fsutil.first_line(e)})"
    return None


def paths(*names: str) -> None:
    """Refuse an empty value for these path flags at parsing (``--workdir=`` would mean the current folder)."""
    def nonempty(value) -> bool:
        values = value if isinstance(value, list) else [value]
        return all(v is None or str(v).strip() for v in values)
    for name in names:
        flags.register_validator(name, nonempty, message=f"--{name} needs a path, got an empty value")


USER_ERRORS = (ValueError, ImportError, errors.RunError, OSError)
_distributed_flags = False
_command_module = None  # set by ``run``: ``settings`` reads the flags that module defined


def define_distributed_flags() -> None:
    """The flags of ``jax.distributed.initialize`` (same names), for scripts that can run in several processes."""
    global _distributed_flags
    flags.DEFINE_enum("distributed", "off", ["off", "auto"],
                      "auto: join the multi-process run that JAX detects from the cluster (SLURM, Kubernetes/GKE, "
                      "TPU pods); off: only with --coordinator_address (or JAX_COORDINATOR_ADDRESS)")
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator (several processes)")
    flags.DEFINE_integer("num_processes", None, "number of processes in the run (one per host)")
    flags.DEFINE_integer("process_id", None, "this process's index, 0 .. num_processes - 1")
    flags.DEFINE_integer("heartbeat_timeout_seconds", 100, "a process silent this long stops the others with an error")
    flags.DEFINE_integer("initialization_timeout", 300, "seconds to wait for every process to join; then one error "
                         "line (a wrong address, a process that was not started)")
    _distributed_flags = True


def join_distributed() -> bool:
    """``parallel.initialize`` from the flags (and JAX_* environment); True when a multi-process run was joined."""
    from jaxdenoise import parallel
    f = flags.FLAGS
    joined = parallel.initialize(f.distributed, f.coordinator_address, f.num_processes, f.process_id,
                                 f.heartbeat_timeout_seconds, f.initialization_timeout)
    if joined:
        parallel.check_same_settings(settings())
    return joined


# what may differ between the processes of one run: who they are, and host-local speed and cache settings
HOST_LOCAL = frozenset({"process_id", "coordinator_address", "distributed", "config.data.num_threads",
                        "config.data.prefetch", "config.data.cache_dir"})


def settings() -> dict:
    """The script's own flags (a config flag field by field) as JSON texts, but ``HOST_LOCAL``: what every
    process of a multi-process run must have alike."""
    from jaxdenoise import config as config_lib
    import json
    out = {}
    own = flags.FLAGS.get_key_flags_for_module(_command_module) if _command_module else []
    for fl in own + flags.FLAGS.get_key_flags_for_module(sys.argv[0]) + flags.FLAGS.get_key_flags_for_module(__name__):
        value = fl.value
        if hasattr(value, "to_dict"):
            out.update({f"{fl.name}.{k}": json.dumps(v, default=str) for k, v in config_lib.flatten(value).items()})
        else:
            out[fl.name] = json.dumps(value, default=str)
    return {k: v for k, v in out.items() if k not in HOST_LOCAL}


def _own_flags_in_help(module: Optional[str]) -> None:
    """absl's ``--help`` / ``--helpshort`` list the key flags of the main module (``sys.argv[0]``, a thin
    script or the console command), which defines none: make the command module's flags, and the shared ones
    it uses (``define_distributed_flags``, config files), key flags of the main module."""
    fv = flags.FLAGS
    own = fv.get_key_flags_for_module(module) if module else []
    shared = fv.get_key_flags_for_module(__name__) if _distributed_flags else []
    for flag in own + shared:
        fv.register_key_flag_for_module(sys.argv[0], flag)


def run(main: Callable[[List[str]], None]) -> None:
    """``app.run(main)`` with one-line errors for bad flags and for every user-facing error ``main`` raises;
    joins a multi-process run first when the script defined the distributed flags."""
    global _command_module
    _command_module = getattr(main, "__module__", None)  # the module that defined the command's flags
    _own_flags_in_help(_command_module)
    def wrapped(argv):
        try:
            if _distributed_flags:
                join_distributed()
            main(argv)
        except USER_ERRORS as e:
            from jaxdenoise import run_io
            run_io.quiet_echoes()  # background threads may still echo the error while the process exits
            sys.exit(f"error: {describe(e)}")
    app.run(wrapped, flags_parser=parse_flags)


# The console command's table: name -> module jaxdenoise.commands.NAME (imported only when chosen).
COMMANDS = ("train", "evaluate", "denoise", "export", "benchmark", "prepare")


def console() -> None:
    """The ``jaxdenoise`` console command (``pyproject.toml``): ``jaxdenoise COMMAND [flags]`` runs
    ``jaxdenoise.commands.COMMAND`` with the same flags as ``scripts/COMMAND.py`` in a checkout."""
    import importlib
    usage = f"usage: jaxdenoise {{{'|'.join(COMMANDS)}}} [flags]   (jaxdenoise COMMAND --helpshort: its flags)"
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        print(usage)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    name = sys.argv[1]
    if name not in COMMANDS:
        sys.exit(f"error: unknown command {name!r}; {usage}")
    if name in ("train", "benchmark"):
        from jaxdenoise import hostmem  # before jax starts its threads, as the scripts do
        hostmem.retain_freed_memory()
    module = importlib.import_module(f"jaxdenoise.commands.{name}")
    sys.argv = [f"jaxdenoise {name}"] + sys.argv[2:]
    module.run()
