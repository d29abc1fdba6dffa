"""Every shipped experiment config (and each of its ``:variant`` arguments) loads and passes the config's own
checks, so that a field renamed in ``jaxdenoise/config.py`` or a value mistyped in ``configs/`` fails here, not
an hour into a user's run; and the generic-photo config keeps the recipe its docstring measured."""
import glob
import os

import pytest

from jaxdenoise import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
# the configs that take an argument after ':' and the tuple of its choices
VARIANTS = {"photos.py": "MODELS", "selfsup_faces.py": "SETTINGS", "default.py": "IMAGES"}


def _module(path):
    return config_lib.load_file(path, module=True)


def _cases():
    for path in CONFIGS:
        name = os.path.basename(path)
        if name in VARIANTS:
            for arg in getattr(_module(path), VARIANTS[name]):
                yield pytest.param(path, arg, id=f"{name}:{arg}")
        else:
            yield pytest.param(path, None, id=name)


@pytest.mark.parametrize("path,arg", list(_cases()))
def test_every_shipped_config_validates(path, arg):
    module = _module(path)
    c = module.get_config() if arg is None else module.get_config(arg)
    assert module.__doc__ and "python" in module.__doc__, f"{path}: the docstring gives no command"
    # the folders its docstring's command gives on the command line: any names will do
    if c.data.source == "dir" and not c.data.dir:
        c.data.dir = "/some/photos"
    if c.noise == "none" and not c.data.pairs and not c.data.val_dir:
        c.data.val_dir = "/some/pairs"
    config_lib.validate(c)
    assert c.num_epochs >= 1 and c.steps_per_epoch >= 0 and c.batch_size >= 1  # 0: one pass over the data


def test_a_variant_config_refuses_an_unknown_argument_in_one_line():
    for name in VARIANTS:
        module = _module(os.path.join(REPO, "configs", name))
        with pytest.raises(ValueError, match=f"configs/{name}:nope: choose one of"):
            module.get_config("nope")


def test_a_config_builds_on_its_sibling_loaded_by_path(tmp_path):
    """config.load_file: what the configs use to build on each other (unet_real on unet_photos on photos)."""
    real = config_lib.load_file(os.path.join(REPO, "configs", "unet_real.py"))
    photos = config_lib.load_file(os.path.join(REPO, "configs", "unet_photos.py"))
    assert real.loss == photos.loss == "l1" and real.noise != photos.noise  # inherited, then overridden
    unet = config_lib.load_file(os.path.join(REPO, "configs", "photos.py"), "unet")
    assert unet.model.name == "unet" and unet.batch_size == 16  # the ':arg' form; unet_photos sets batch 8
    with pytest.raises(ValueError, match="cannot be loaded"):
        config_lib.load_file(str(tmp_path / "notes.txt"))
    # the recipe block has one home: configs/default.py; a variant changes only what differs
    default = config_lib.load_file(os.path.join(REPO, "configs", "default.py"))
    faces = config_lib.load_file(os.path.join(REPO, "configs", "unet_faces.py"))
    for field in ("optimizer", "learning_rate", "schedule", "ema_decay", "batch_size", "model"):
        assert faces[field] == default[field], field
    assert "learning_rate" not in open(os.path.join(REPO, "configs", "unet_faces.py")).read()


def test_the_generic_photo_config_keeps_its_measured_recipe_and_budget():
    """configs/unet_photos.py: L1 loss and batch 8 (each measured better than MSE / batch 16 at the same
    number of patches, docs/quality.md), and the patch budget its measured figures come from:
    172,800 patches of 64x64 (8 x 2,700 steps x 8)."""
    c = _module(os.path.join(REPO, "configs", "unet_photos.py")).get_config()
    assert (c.loss, c.batch_size, c.data.patch) == ("l1", 8, 64)
    assert c.num_epochs * c.steps_per_epoch * c.batch_size == 172_800
    assert c.model.name == "unet" and tuple(c.model.widths) == (32, 64, 128)
