"""The model zoo shipped inside the package (``jaxdenoise.zoo``): each model loads offline by name, is small,
carries its card, and beats its noisy input on a built-in photo; ``zoo_build.build`` (scripts/tools) makes an entry from a run;
``denoise`` and ``evaluate`` take ``--model``."""
import os
import pathlib

import jax
import numpy as np
import pytest

import jaxdenoise
from jaxdenoise import evaluate, noise, plots, zoo
from jaxdenoise.inference import exported, files as denoise_files, load
from tools import zoo_build
from jaxdenoise.data import builtin


def _psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def photo():
    """The centre 160x160 of a built-in photo none of the zoo models was trained on, float32 in [0, 1]."""
    img = builtin.load_photo(builtin.photo_path("skimage", "chelsea.png")).astype(np.float32) / 255
    h, w = img.shape[:2]
    return img[(h - 160) // 2:(h + 160) // 2, (w - 160) // 2:(w + 160) // 2]


# dB each model must gain over its noisy input on this photo at its own validation noise: about 1 dB under
# what it gains today (docs/quality.md, "Model zoo"), so that a rebuilt entry that lost its edge fails here
MIN_GAIN = {"faces": 9.0, "photos": 9.0, "real": 6.0}


@pytest.mark.parametrize("name", zoo.names())
def test_each_zoo_model_ships_small_with_its_card_and_beats_its_noisy_input(name, photo):
    path = zoo.path(name)
    assert os.path.getsize(path) <= zoo.MAX_BYTES
    card = zoo.card(name)
    assert zoo.MODELS[name].terms in card and f"jaxdenoise.load({name!r})" in card
    assert exported.read_card(path)["zoo"]["name"] == name  # the card travels inside the file too
    assert sum(a.size for a in jax.tree.leaves(exported.read_params(path))) == exported.read(path)[0]["parameters"]
    den = jaxdenoise.load(name)  # a name, not a path: offline, from the package
    assert den.blind and den.info["zoo"] == name and den.info["parameters"] > 0
    spec = den.info["eval_noise"]
    noisy = np.asarray(noise.parse(spec)(jax.random.PRNGKey(0), photo[None]))[0]
    gain = _psnr(den.run(noisy), photo) - _psnr(noisy, photo)  # run: unclipped noisy floats as they are
    assert gain > MIN_GAIN[name], f"{name} at {spec}: {gain:+.2f} dB over the noisy input"


def test_unknown_names_and_paths_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="does not exist: not a training workdir.*faces, photos, real"):
        jaxdenoise.load("nafnet_zoo")
    with pytest.raises(ValueError, match="no zoo model 'x'"):
        zoo.path("x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()  # a folder of that name wins over the zoo name, and is not a workdir
    with pytest.raises(ValueError, match="not a training workdir"):
        jaxdenoise.load("photos")


def test_build_ships_only_a_better_model_with_a_card_from_the_run_and_cleans_what_a_kill_left(run_dir, tmp_path,
                                                                                                monkeypatch):
    from jaxdenoise import outputs
    monkeypatch.setattr(zoo, "folder", lambda: str(tmp_path))
    # the zoo folder lies inside the package, which every other writer refuses (outputs.claim): the builder,
    # the one writer allowed there, must not go through that check
    monkeypatch.setattr(outputs, "PACKAGE", os.path.realpath(tmp_path))
    (tmp_path / "photos.jaxdn.new").write_bytes(b"half")  # what a killed build left
    (tmp_path / ".photos.md.abc123.tmp").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    scored = []
    score = lambda w, shipped: scored.append(shipped) or {"noisy": 20.0, "model": 25.0, "shipped": None}
    h = zoo_build.build("photos", run_dir, "latest", score=score)
    assert scored == [""] and sorted(os.listdir(tmp_path)) == ["notes.txt", "photos.jaxdn", "photos.md"]
    assert h["bytes"] == os.path.getsize(tmp_path / "photos.jaxdn")
    den, ref = load.load_zoo("photos"), jaxdenoise.load(run_dir, "latest")
    img = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(den(img.astype(np.float32) / 255), ref(img.astype(np.float32) / 255), atol=1e-5)
    card = (tmp_path / "photos.md").read_text()
    assert card == zoo.card("photos")  # the copy beside is the card inside
    assert zoo.MODELS["photos"].terms in card and "jaxdenoise.load('photos')" in card and "| data |" in card
    assert zoo.MODELS["photos"].command not in card and "paper" in card  # the run's recipe, not the entry's
    before = (tmp_path / "photos.jaxdn").read_bytes()
    for worse, needle in [({"noisy": 20.0, "model": 19.0, "shipped": None}, "not above its noisy input"),
                          ({"noisy": 20.0, "model": 25.0, "shipped": 26.0}, "below the shipped 'photos'")]:
        with pytest.raises(ValueError, match=needle):
            zoo_build.build("photos", run_dir, "latest", score=lambda w, s, r=worse: r)
        assert (tmp_path / "photos.jaxdn").read_bytes() == before
    monkeypatch.setattr(zoo, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="over the zoo's"):
        zoo_build.build("photos", run_dir, "latest", score=score)
    assert (tmp_path / "photos.jaxdn").read_bytes() == before and not (tmp_path / "photos.jaxdn.new").exists()
    with pytest.raises(ValueError, match="the zoo has"):
        zoo_build.build("nope", run_dir)


@pytest.mark.imagemagick
def test_denoise_and_evaluate_take_a_zoo_model(photo, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    plots.save_png((photo * 255 + 0.5).astype(np.uint8), str(folder / "cat.png"))
    res = denoise_files.denoise_paths(None, str(folder), str(tmp_path / "out"), model="photos", progress=False)
    assert [pathlib.Path(p).name for p in res["written"]] == ["cat.png"]
    with pytest.raises(ValueError, match="either --workdir .* or --model"):
        denoise_files.denoise_paths(None, str(folder), str(tmp_path / "out2"))
    rows = evaluate.run(None, data=str(folder), noise_specs=["gaussian:25"], models=["photos"], ensemble=2)
    noisy, model, ensembled = rows
    assert model["method"].endswith("(zoo: photos)") and model["psnr"] > noisy["psnr"] + 1
    assert ensembled["method"] == model["method"] + ", x2 self-ensemble" and ensembled["psnr"] > model["psnr"]
    with pytest.raises(ValueError, match="--ensemble must be one of 1, 2, 4, 8"):
        evaluate.run(None, data=str(folder), models=["photos"], ensemble=3)
    with pytest.raises(ValueError, match="needs --data"):
        evaluate.run(None, models=["photos"])


def test_the_x8_self_ensemble_beats_one_pass_and_keeps_size_and_dtype(photo):
    den = jaxdenoise.load("photos")
    odd = photo[:77, :101]  # neither side a multiple of the stride, and H != W (the quarter turns swap them)
    noisy = np.clip(odd + np.random.default_rng(3).normal(0, 25 / 255, odd.shape), 0, 1).astype(np.float32)
    one, eight = den(noisy), den(noisy, ensemble=8)
    assert eight.shape == odd.shape and eight.dtype == np.float32
    assert _psnr(eight, odd) > _psnr(one, odd) + 0.05  # misaligned undoing would blur it below one pass
    u8 = den((noisy * 255 + 0.5).astype(np.uint8), ensemble=4)
    assert u8.dtype == np.uint8 and u8.shape == odd.shape
    with pytest.raises(ValueError, match="ensemble must be one of 1, 2, 4, 8"):
        den(noisy, ensemble=3)
