"""Evaluation from checkpoints, tiled denoising of any-size photos, plots."""
import json
import os

import numpy as np

import jaxdenoise
import pytest
from PIL import Image

from jaxdenoise import checkpointing, evaluate, metrics, plots
from jaxdenoise.inference import files as denoise_files
from tests.helpers import script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smooth(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * x + rng.random()), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(_smooth(37, 53)).save(d / "odd.png")
    Image.fromarray(_smooth(40, 30, 1)[..., 0]).save(d / "grey.png")            # greyscale
    Image.fromarray(_smooth(64, 64, 2)).save(d / "sq.jpg", quality=95)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)           # corrupt
    return d


@pytest.mark.imagemagick
def test_evaluate_writes_rows_and_is_deterministic(own_run, photo_dir, tmp_path):
    kw = dict(data=str(photo_dir), noise_specs=["poisson:30", "gaussian:25"], baselines=["nlm"],
              grid_path=str(tmp_path / "grid.png"))
    rows = evaluate.run(own_run, "best", **kw)
    assert [(r["noise"], r["method"].split(" ")[0]) for r in rows] == [
        ("poisson:30", "noisy"), ("poisson:30", "paper"), ("poisson:30", "nlm"),
        ("gaussian:25", "noisy"), ("gaussian:25", "paper"), ("gaussian:25", "nlm")]
    for r in rows:
        assert r["images"] == 3
        assert np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 and r["sec_per_mp"] >= 0
    # classical NLM must beat the noisy input on smooth images
    assert rows[2]["psnr"] > rows[0]["psnr"]
    evaluate.write_json(rows, str(tmp_path / "out.json"))
    back = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert set(back[0]) == {"noise", "method", "psnr", "ssim", "sec_per_mp", "images"}
    assert (tmp_path / "grid.png").is_file()
    with pytest.raises(ValueError, match=r"--grid .*grid.png exists: use --overwrite"):
        evaluate.run(own_run, "best", **kw)  # a rerun names a file that now exists: refused before any work
    again = evaluate.run(own_run, "best", overwrite=True, **kw)
    assert [(r["psnr"], r["ssim"]) for r in again] == [(r["psnr"], r["ssim"]) for r in rows]


def test_evaluate_defaults_to_the_validation_split(own_run):
    rows = evaluate.run(own_run, "latest")
    assert len(rows) == 2 and rows[0]["images"] == 6
    text = evaluate.format_table(rows)
    assert "noisy input" in text and "data range 1" in text


def test_tiled_equals_whole_image_where_it_fits(run_dir):
    den = jaxdenoise.load(run_dir)
    img = _smooth(150, 118).astype(np.float32) / 255
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.05, img.shape), 0, 1).astype(np.float32)
    whole = den(img, tile=0)
    tiled = den(img, tile=96, overlap=32, batch=3)
    assert whole.shape == tiled.shape == img.shape
    psnr = float(metrics.psnr_per_image(whole[None], tiled[None])[0])
    assert psnr >= 45.0, psnr


@pytest.mark.imagemagick
def test_denoise_folder_handles_odd_sizes_grey_and_bad_files(run_dir, photo_dir, tmp_path):
    before = {p: (photo_dir / p).read_bytes() for p in os.listdir(photo_dir)}
    res = denoise_files.denoise_paths(run_dir, str(photo_dir), str(tmp_path / "out"), tile=96, overlap=8, batch=2,
                                progress=False)
    assert sorted(os.path.basename(p) for p in res["written"]) == ["grey.png", "odd.png", "sq.png"]
    assert [s["path"] for s in res["skipped"]] == ["broken.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "odd.png")).shape == (37, 53, 3)
    assert np.asarray(Image.open(tmp_path / "out" / "grey.png")).shape == (40, 30, 3)
    assert {p: (photo_dir / p).read_bytes() for p in os.listdir(photo_dir)} == before
    # an output folder equal to the input never overwrites it: the output takes another name
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "odd.png").write_bytes(before["odd.png"])
    res = denoise_files.denoise_paths(run_dir, str(tmp_path / "own" / "odd.png"), str(tmp_path / "own"),
                                keep_format=True, overwrite=True, progress=False)
    assert res["written"] == [str(tmp_path / "own" / "odd_png.png")] and res["skipped"] == []
    assert (tmp_path / "own" / "odd.png").read_bytes() == before["odd.png"]


def test_missing_checkpoint_is_a_clear_error(tmp_path, run_dir):
    with pytest.raises(checkpointing.CheckpointError, match="not a training workdir"):
        evaluate.run(str(tmp_path))
    with pytest.raises(checkpointing.CheckpointError, match="no checkpoint at step 999"):
        evaluate.run(run_dir, "999")
    r = script("evaluate.py", "--workdir", str(tmp_path))
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_plot_is_written(run_dir, tmp_path):
    paths = plots.plot_curves([run_dir, run_dir], str(tmp_path), labels=["a", "b"])
    assert [os.path.basename(p) for p in paths] == ["psnr_per_epoch.png", "mse_per_epoch.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)


@pytest.mark.imagemagick
def test_timing_excludes_compilation_for_every_image_shape(own_run, tmp_path, monkeypatch):
    """sec_per_mp over images of mixed sizes: every bucket shape is compiled before the clock starts."""
    import jax
    for name, (h, w) in {"a.png": (37, 53), "b.png": (40, 70), "c.png": (90, 30)}.items():
        Image.fromarray(_smooth(h, w)).save(tmp_path / name)

    clock = {"timing": False, "compiles_while_timing": 0}
    real = evaluate.time.perf_counter

    class Clock:  # evaluate reads perf_counter at the start and at the end of each timed method
        @staticmethod
        def perf_counter():  # (monotonic: the progress lines)
            clock["timing"] = not clock["timing"]
            return real()

        monotonic = staticmethod(evaluate.time.monotonic)

    def on_event(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration" and clock["timing"]:
            clock["compiles_while_timing"] += 1

    monkeypatch.setattr(evaluate, "time", Clock)
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        rows = evaluate.run(own_run, "best", data=str(tmp_path), noise_specs=["gaussian:25"], tile=0)
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert {evaluate._bucket_shape(img.shape) for _, img in evaluate.load_folder(str(tmp_path))[0]} == {
        (64, 64), (64, 128), (128, 64)}  # three bucket shapes
    assert rows[1]["sec_per_mp"] > 0 and clock["compiles_while_timing"] == 0


def test_grids_name_their_columns_on_the_image():
    from jaxdenoise import plots
    cols = [np.full((2, 40, 40, 3), v, np.float32) for v in (1.0, 1.0, 1.0)]
    plain, named = plots.image_grid(cols), plots.image_grid(cols, labels=["clean", "noisy input", "unet"])
    assert named.shape[0] == plain.shape[0] + plots.LABEL_HEIGHT and named.shape[1] == plain.shape[1]
    band = named[:plots.LABEL_HEIGHT]
    for j in range(3):  # dark text above every column, white images below
        assert (band[:, 2 + j * 42:2 + j * 42 + 40] < 128).any()
    np.testing.assert_array_equal(named[plots.LABEL_HEIGHT:], plain)  # the images themselves untouched
    with pytest.raises(ValueError, match="2 labels for 3 columns"):
        plots.image_grid(cols, labels=["a", "b"])


def test_a_long_evaluation_says_how_far_it_got_in_a_log(own_run, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY", 2)  # pytest's stderr is not a terminal: lines, not a bar
    rows = evaluate.run(own_run, "best", noise_specs=["poisson:30"])
    err = capsys.readouterr().err
    n = rows[0]["images"]
    for method in ("noisy input", rows[1]["method"]):
        assert f"evaluate: poisson:30: {method}: 2/{n} images" in err and f"{n}/{n} images" in err
