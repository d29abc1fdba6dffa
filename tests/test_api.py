"""The user-facing API: ``jaxdenoise.load`` -> ``Denoiser`` (dtypes, sizes, errors, tiles) and the exported
model (``jaxdenoise.inference.export``), which must run in a process that cannot import this project, flax or orbax."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxdenoise
from jaxdenoise import models
from jaxdenoise.inference import denoiser, export, exported, tiling


@pytest.fixture()
def run(run_dir):
    """The session's shared tiny run (conftest ``trained``: the paper model, 3 steps); tests only read it."""
    return pathlib.Path(run_dir)


def _photo(h=37, w=53, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_load_gives_a_denoiser_that_keeps_dtype_and_size_and_says_what_it_is(run):
    den = jaxdenoise.load(str(run))
    img = _photo()
    out = den(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    f = den(img.astype(np.float32) / 255.0)
    assert f.dtype == np.float32 and f.shape == img.shape and 0.0 <= f.min() and f.max() <= 1.0
    assert np.array_equal(out, np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8))
    assert den(img.astype(np.float64) / 255.0).dtype == np.float64
    # the same as the engine on the EMA weights of the best checkpoint, whole image (padded to the bucket)
    from jaxdenoise import checkpointing
    config, params, _ = checkpointing.load_params(str(run), "best")
    model = models.create(config.model)
    ref = tiling.denoise(denoiser.make_apply(model, params), img.astype(np.float32) / 255, stride=model.stride, tile=0,
                         bucket=denoiser.BUCKET)
    np.testing.assert_allclose(f, ref, atol=1e-6)
    outs = den.batch([img, _photo(16, 24, 1)])
    assert [o.shape for o in outs] == [img.shape, (16, 24, 3)]
    info = den.info
    assert info["model"] == "paper" and info["blind"] and info["stride"] == model.stride
    assert info["parameters"] == sum(x.size for x in jax.tree.leaves(params)) and info["weights"] == "raw"
    assert info["noise"] == "poisson:30" and info["validation"]["psnr"] > 0
    # "latest" and a step number load too
    assert jaxdenoise.load(str(run), "latest").info["step"] == jaxdenoise.load(str(run), 3).info["step"] == 3


def test_large_images_are_tiled_and_match_whole_image_inference(run):
    den = jaxdenoise.load(str(run), max_pixels=64 * 64, tile=96, overlap=16)
    img = _photo(100, 140, 2).astype(np.float32) / 255
    tiled = den(img)
    whole = den(img, tile=0)
    assert np.abs(tiled - whole).mean() < 2e-3


def test_tiles_equal_the_whole_image_on_a_model_with_structure_and_memory_picks_the_plan():
    """A U-Net with randomised weights (a near-constant output would hide seams): with an overlap of half
    its receptive field, evenly spread tiles give the whole image's output."""
    model = models.create(models.default_config("unet", widths=(8, 16, 16)))
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32))["params"]
    params = jax.tree.map(lambda p: p + 0.2 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    den = denoiser.Denoiser(denoiser.make_apply(model, params), denoiser.Geometry.of(model),
                            overlap=model.receptive_field // 2)
    img = np.random.default_rng(5).random((136, 200, 3)).astype(np.float32)
    whole = den.run(img, tile=0)
    assert whole.std() > 0.05  # structure, not a constant
    for tile in (112, 128):
        np.testing.assert_allclose(den.run(img, tile=tile), whole, atol=2e-5)
    # the plan: whole while the working memory fits the budget, else tiles, as many per call as fit
    assert den.bytes_per_pixel > 0
    bpp = den.bytes_per_pixel
    assert den.plan(136, 200) == (0, 1)
    small = denoiser.Denoiser(den.forward, denoiser.Geometry(4, 3, model.receptive_field), tile=112, overlap=16,
                              memory_budget=int(112 * 112 * bpp * 2.5))
    assert small.plan(2000, 2000) == (112, 2)  # over 1 MP: the probed figure decides
    np.testing.assert_allclose(small.run(img), whole, atol=2e-5)  # budget-driven tiles: the same image
    with pytest.raises(ValueError, match="memory_budget"):
        denoiser.Denoiser(den.forward, denoiser.Geometry(4, 3, 9), memory_budget=0)


@pytest.mark.parametrize("image,needle", [
    (np.zeros((8, 8), np.uint8), "H x W x 3"),
    (np.zeros((8, 8, 4), np.uint8), "alpha"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8, 3), 200.0, np.float32), "must be in \\[0, 1\\].*divide 0..255"),
    (np.linspace(-0.5, 1.5, 192, dtype=np.float32).reshape(8, 8, 3), "must be in \\[0, 1\\].*np.clip"),
    (np.full((8, 8, 3), 1.001, np.float32), "must be in \\[0, 1\\]"),
    (np.zeros((8, 8, 3), np.int32), "uint8"),
])
def test_bad_images_are_one_line_value_errors(run, image, needle):
    den = jaxdenoise.load(str(run))
    with pytest.raises(ValueError, match=needle) as e:
        den(image)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="blind"):
        den(_photo(), noise_level="poisson:30")


def test_bad_arguments_are_one_line_value_errors_and_a_shadowed_zoo_name_says_so(run, tmp_path, monkeypatch):
    den = jaxdenoise.load(str(run))
    for kw, needle in [(dict(overlap=-5), "overlap must be an integer >= 0"), (dict(tile=-1), "tile must be"),
                       (dict(ensemble=True), "ensemble must be one of"), (dict(ensemble=3), "ensemble must be one of"),
                       (dict(batch=0), "batch must be")]:
        with pytest.raises(ValueError, match=needle):
            den(_photo(), **kw)
    with pytest.raises(ValueError, match="overlap must be"):
        jaxdenoise.load(str(run), overlap=-5)
    assert den(np.full((8, 8, 3), 1.0 + 1e-7, np.float32)).shape == (8, 8, 3)  # a rounding step over: accepted
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="a folder named photos .* is in the way .* use 'zoo:photos'"):
        jaxdenoise.load("photos")
    assert jaxdenoise.load("zoo:photos").info["zoo"] == "photos"


def test_load_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        jaxdenoise.load(str(tmp_path / "nothing"))
    (tmp_path / "junk.jaxdn").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an exported jaxdenoise model"):
        jaxdenoise.load(str(tmp_path / "junk.jaxdn"))


# A process that cannot import the project, flax or orbax (the editable install's finder removed, the
# packages blocked): what a user's deployment box with only jax and numpy looks like.
_STANDALONE = r"""
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jaxdenoise", "flax", "orbax", "optax", "grain"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
for name in ("jaxdenoise", "flax", "orbax"):
    try:
        __import__(name)
        raise SystemExit(name + " is importable")
    except ImportError:
        pass
import json, zipfile
import numpy as np
from jax import export
with zipfile.ZipFile(sys.argv[1]) as z:
    info = json.loads(z.read("info.json"))
    fn = export.deserialize(bytearray(z.read("function.bin")))
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(fn.call(x[None]))[0])
print(json.dumps({"platforms": info["platforms"], "stride": info["stride"]}))
"""


def test_exported_model_runs_without_the_project_and_matches_the_workdir_model(run, tmp_path):
    out = tmp_path / "model.jaxdn"
    header = export.export_workdir(str(run), str(out))
    assert set(header["platforms"]) == {"cpu", "cuda"} and header["model"] == "paper"
    den = jaxdenoise.load(str(run))
    s = den.stride
    x = np.random.default_rng(3).random((64, 128, 3)).astype(np.float32)  # multiples of the stride and bucket
    np.save(tmp_path / "x.npy", x)
    res = subprocess.run([sys.executable, "-I", "-c", _STANDALONE, str(out), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["stride"] == s
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), den(x), atol=1e-5)
    # jaxdenoise.load reads the file into the same Denoiser, any size (padding inside)
    exp = jaxdenoise.load(str(out))
    img = _photo(29, 41, 4)
    np.testing.assert_allclose(exp(img.astype(np.float32) / 255), den(img.astype(np.float32) / 255), atol=1e-5)
    assert exp.info["validation"]["psnr"] == den.info["validation"]["psnr"]
    # never over a file it did not write, unless asked; never over the run's own files
    with pytest.raises(ValueError, match="exists"):
        export.export_workdir(str(run), str(out))
    with pytest.raises(ValueError, match="training workdir|run"):
        export.export_workdir(str(run), str(run / "config.json"), overwrite=True)
    assert os.path.getsize(out) > 0


def test_every_workdir_gets_a_model_card_that_evaluate_extends_and_that_never_clobbers_a_users_file(run, tmp_path):
    import shutil
    from jaxdenoise import evaluate, layout, model_card
    card = json.loads((run / layout.MODEL_CARD_JSON).read_text())
    md = (run / layout.MODEL_CARD_FILE).read_text()
    assert md.splitlines()[0] == model_card.MARKER
    assert card["model"]["name"] == "paper" and card["model"]["parameters"] == jaxdenoise.load(str(run)).info["parameters"]
    assert card["data"]["train_images"] == 64 and card["data"]["val_images"] == 6
    assert card["noise"] == {"train": "poisson:30", "eval": "poisson:30", "setting": "renoised", "target": "clean",
                             "loss": "mse"}
    assert card["training"]["steps"] == 3 and card["validation"][-1]["step"] == 3 and "cpu" in card["training"]["hardware"]
    assert f"{card['model']['parameters']:,} parameters" in md
    # evaluate.py adds its table; the same evaluation again replaces it instead of piling up
    w = tmp_path / "run"
    shutil.copytree(run, w)
    before = len(json.loads((w / layout.MODEL_CARD_JSON).read_text())["evaluations"])  # other tests evaluate it too
    for _ in range(2):
        rows = evaluate.run(str(w), "latest", noise_specs=["gaussian:25"], limit=2)
    card = json.loads((w / layout.MODEL_CARD_JSON).read_text())
    assert len(card["evaluations"]) == before + 1 and card["evaluations"][-1]["rows"] == json.loads(json.dumps(rows))
    assert "## Evaluation: validation split" in (w / layout.MODEL_CARD_FILE).read_text()
    # a card a person wrote is left as it is (the JSON, ours, is still updated)
    (w / layout.MODEL_CARD_FILE).write_text("# my notes\n")
    evaluate.run(str(w), "latest", noise_specs=["poisson:10"], limit=2)
    assert (w / layout.MODEL_CARD_FILE).read_text() == "# my notes\n"
    assert len(json.loads((w / layout.MODEL_CARD_JSON).read_text())["evaluations"]) == before + 2


def test_the_console_command_runs_each_job_with_the_scripts_flags(run, tmp_path):
    """``jaxdenoise COMMAND`` (here as ``python -m jaxdenoise``, what the installed console script calls)."""
    py = lambda *a: subprocess.run([sys.executable, "-m", "jaxdenoise", *a], capture_output=True, text=True,
                                   timeout=300, cwd=str(tmp_path))
    res = py()
    assert res.returncode == 2 and "train|evaluate|denoise|export|benchmark|prepare" in res.stdout
    assert "unknown command 'fit'" in py("fit").stderr
    res = py("export", "--workdir", str(run), "--out", str(tmp_path / "m.jaxdn"), "--platforms", "cpu")
    assert res.returncode == 0, res.stderr[-1500:]
    assert "lowered for cpu" in res.stdout and jaxdenoise.load(str(tmp_path / "m.jaxdn")).info["platforms"] == ["cpu"]
    res = py("export", "--workdir", str(run), "--out", str(tmp_path / "m.jaxdn"))
    assert res.returncode == 1 and res.stderr.strip().startswith("error: --out") and "exists" in res.stderr


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_self_ensemble_undoes_each_flip_and_turn_on_the_output(n):
    """A stand-in model that adds its input's column index: each transform is undone on the output, so the
    image comes back exact and the offset is the mean column index over the orientations used."""
    from jaxdenoise.inference.denoiser import self_ensemble
    h, w = 6, 10
    x = np.random.default_rng(0).random((2, h, w, 3)).astype(np.float32)
    out = self_ensemble(lambda t: t + np.arange(t.shape[2], dtype=np.float32)[None, None, :, None], n)(x)
    # identity / flips / half turn: columns run 0..W-1 or back (mean (W-1)/2); quarter turns: rows (mean (H-1)/2)
    offset = {1: np.arange(w, dtype=np.float32)[None, None, :, None], 2: (w - 1) / 2, 4: (w - 1) / 2,
              8: ((w - 1) / 2 + (h - 1) / 2) / 2}[n]
    np.testing.assert_allclose(out, x + offset, atol=1e-5)


def test_init_from_an_exported_file_starts_from_its_weights_keeps_the_lineage_and_refuses_another_model(run, tmp_path):
    from jaxdenoise import checkpointing, model_card, train
    from tests.test_train import tiny_config
    out = tmp_path / "m.jaxdn"
    export.export_workdir(str(run), str(out))
    src_config, src_params, _ = checkpointing.load_params(str(run))
    weights = exported.read_params(str(out))
    for a, b in zip(jax.tree.leaves(weights), jax.tree.leaves(src_params), strict=True):
        np.testing.assert_array_equal(a, b)  # the file carries the weights it runs
    # a fresh run from the file: its step 0 holds those weights (optimiser, EMA and step start fresh)
    cfg = tiny_config(tmp_path / "cache", num_epochs=1, steps_per_epoch=1, learning_rate=1e-12, warmup_steps=0,
                      init_from=str(out))
    cfg.model = src_config.model
    train.train_and_evaluate(cfg, str(tmp_path / "next"))
    _, params, step = checkpointing.load_params(str(tmp_path / "next"), "latest")
    assert step == 1
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(weights), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    card = model_card.read(str(tmp_path / "next"))
    assert [g["init"] for g in card["lineage"]] == ["scratch", str(out)] and card["lineage"][1]["steps"] == 1
    assert "Lineage" in (tmp_path / "next" / "MODEL_CARD.md").read_text()
    # another model, a file without weights: one line each, nothing written
    bad = tiny_config(tmp_path / "cache", init_from=str(out))
    bad.model.widths = (4, 4)
    with pytest.raises(ValueError, match=r"init_from=.*model differs.*model.widths"):
        train.train_and_evaluate(bad, str(tmp_path / "other"))
    assert not (tmp_path / "other" / "config.json").exists()
    import zipfile
    bare = tmp_path / "bare.jaxdn"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(bare, "w") as zout:
        for name in zin.namelist():
            if name != exported.PARAMS:
                zout.writestr(name, zin.read(name))
    cfg.init_from = str(bare)
    with pytest.raises(ValueError, match="carries no weights"):
        train.train_and_evaluate(cfg, str(tmp_path / "third"))
    with pytest.raises(ValueError, match="no zoo model"):
        cfg.init_from = "zoo:nosuch"
        train.train_and_evaluate(cfg, str(tmp_path / "fourth"))


@pytest.fixture(scope="module")
def exported_bytes(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "m.jaxdn"
    export.export_workdir(run_dir, str(out))
    import zipfile
    with zipfile.ZipFile(out) as z:
        return {n: z.read(n) for n in z.namelist()}


def _damaged(members, case):
    import random
    info, fn = json.loads(members[exported.INFO]), members[exported.FUNCTION]
    rnd = random.Random(0)
    return {
        "random function": {exported.FUNCTION: bytes(rnd.randrange(256) for _ in range(4000))},
        "truncated function": {exported.FUNCTION: fn[:len(fn) // 2]},
        "flipped bytes": {exported.FUNCTION: fn[:len(fn) // 2] + bytes([fn[len(fn) // 2] ^ 0xFF]) + fn[len(fn) // 2 + 1:]},
        "no function": {exported.FUNCTION: None},
        "no stride": {exported.INFO: json.dumps({k: v for k, v in info.items() if k != "stride"})},
        "stride 0": {exported.INFO: json.dumps(dict(info, stride=0))},
        "stride a string": {exported.INFO: json.dumps(dict(info, stride="4"))},
        "a list": {exported.INFO: "[1, 2]"},
        "truncated info": {exported.INFO: members[exported.INFO][:40]},
        "5 channels": {exported.INFO: json.dumps(dict(info, in_channels=5))},
    }[case]


@pytest.mark.parametrize("case", ["random function", "truncated function", "flipped bytes", "no function", "no stride",
                                  "stride 0", "stride a string", "a list", "truncated info", "5 channels"])
def test_a_damaged_export_is_a_one_line_value_error(exported_bytes, tmp_path, case):
    import zipfile
    path = tmp_path / "damaged.jaxdn"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**exported_bytes, **_damaged(exported_bytes, case)}.items():
            if data is not None:
                z.writestr(name, data)
    with pytest.raises(ValueError) as e:
        jaxdenoise.load(str(path))(_photo())
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_the_package_shows_its_whole_public_api_lazily():
    """``import jaxdenoise`` names what a user calls (``__all__``), each documented where it is defined and
    listed in the package docstring, without importing jax until one is used."""
    import subprocess
    import sys
    code = ("import sys, jaxdenoise; assert 'jax' not in sys.modules, 'imported jax'; "
            "print(','.join(n for n in jaxdenoise.__all__ if callable(getattr(jaxdenoise, n))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == jaxdenoise.__all__
    for name in jaxdenoise.__all__:
        assert getattr(jaxdenoise, name).__doc__, name
        assert f"``{name}" in jaxdenoise.__doc__, name
    with pytest.raises(AttributeError):
        jaxdenoise.nothing_here
