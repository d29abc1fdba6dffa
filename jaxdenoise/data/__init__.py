"""The data room: image reading (``imageio``), preparing folders into stores (``prepare``, ``store``), the
built-in photos (``builtin``), the grain loader (``loader``) and what a run feeds from (``feed``). It reads
no config schema: callers pass the fields it needs."""


def data_dirs(dirs: str) -> list:
    """The folders a ``data.dir`` value names: one path, or several separated by commas ("" -> [])."""
    return [p.strip() for p in str(dirs).split(",")] if dirs else []
