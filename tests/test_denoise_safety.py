"""scripts/denoise.py never loses or clobbers a file: collision-free names, no overwrite without --overwrite,
inputs never written, real formats with --keep-format, one-line errors, each skip reason printed once."""
import os

import numpy as np
import pytest
from PIL import Image

from jaxdenoise.inference import files as denoise_files
from tests.helpers import script
from tests.conftest import tree_hashes

pytestmark = pytest.mark.imagemagick  # reads or writes images through Wand

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(tile=96, overlap=8, batch=2, progress=False)


def _image(h=24, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, fmt, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(_image(seed=seed)).save(path, format=fmt)


def _script(*args):
    return script("denoise.py", *args)


def test_same_stem_in_two_formats_gives_distinct_outputs(run_dir, tmp_path):
    src = tmp_path / "in"
    _save(str(src / "photo.jpg"), "JPEG")
    _save(str(src / "photo.png"), "PNG", 1)
    _save(str(src / "photo_jpg.png"), "PNG", 2)  # a unique name is kept; the disambiguated one gets a number
    _save(str(src / "sub" / "photo.png"), "PNG", 3)
    res = denoise_files.denoise_paths(run_dir, str(src), str(tmp_path / "out"), **SMALL)
    names = sorted(os.path.relpath(p, tmp_path / "out") for p in res["written"])
    assert names == ["photo_jpg.png", "photo_jpg_2.png", "photo_png.png", os.path.join("sub", "photo.png")]
    assert res["skipped"] == []
    assert sorted(tree_hashes(tmp_path / "out")) == names  # four real files, none written twice


def test_output_equal_to_input_folder_never_changes_an_input(run_dir, tmp_path):
    _save(str(tmp_path / "photo.jpg"), "JPEG")
    _save(str(tmp_path / "photo.png"), "PNG", 1)
    _save(str(tmp_path / "other.png"), "PNG", 2)
    before = tree_hashes(tmp_path)
    res = denoise_files.denoise_paths(run_dir, str(tmp_path), str(tmp_path), **SMALL)
    after = tree_hashes(tmp_path)
    assert {k: after[k] for k in before} == before
    assert sorted(os.path.basename(p) for p in res["written"]) == ["other_png.png", "photo_jpg.png", "photo_png.png"]
    assert len(after) == len(before) + 3 and res["skipped"] == []
    # a rerun with --overwrite sees the outputs as inputs too: it replaces none of them, nor any other input
    res = denoise_files.denoise_paths(run_dir, str(tmp_path), str(tmp_path), overwrite=True, **SMALL)
    assert len(res["written"]) == 6 and not set(res["written"]) & {str(tmp_path / k) for k in after}
    assert {k: v for k, v in tree_hashes(tmp_path).items() if k in after} == after
    # one file into its own folder, with --keep-format and --overwrite: a new name, the input untouched
    _save(str(tmp_path / "single" / "odd.png"), "PNG", 3)
    single = (tmp_path / "single" / "odd.png").read_bytes()
    res = denoise_files.denoise_paths(run_dir, str(tmp_path / "single" / "odd.png"), str(tmp_path / "single"),
                                keep_format=True, overwrite=True, **SMALL)
    assert res["written"] == [str(tmp_path / "single" / "odd_png.png")]
    assert (tmp_path / "single" / "odd.png").read_bytes() == single


def test_an_output_is_kept_unless_overwrite_and_a_users_file_is_never_an_outputs_name(run_dir, tmp_path):
    _save(str(tmp_path / "in" / "a.png"), "PNG")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")  # the user's own file, where a.png's output would go
    res = denoise_files.denoise_paths(run_dir, str(tmp_path / "in"), str(out), overwrite=True, **SMALL)
    assert res["written"] == [str(out / "a_png.png")] and res["skipped"] == []  # the next name, even with overwrite
    assert (out / "a.png").read_bytes() == b"keep me"
    res = denoise_files.denoise_paths(run_dir, str(tmp_path / "in"), str(out), **SMALL)  # its own output: kept
    assert res["written"] == [] and res["skipped"] == [
        {"path": "a.png", "output": str(out / "a_png.png"), "reason": "exists (use --overwrite to replace it)"}]
    res = denoise_files.denoise_paths(run_dir, str(tmp_path / "in"), str(out), overwrite=True, **SMALL)
    assert res["written"] == [str(out / "a_png.png")] and res["skipped"] == []  # its own output: replaced
    assert np.asarray(Image.open(out / "a_png.png")).shape == (24, 20, 3)
    assert sorted(os.listdir(out)) == ["a.png", "a_png.png"]  # no temporary file left behind


def test_keep_format_writes_the_real_format_with_its_extension(run_dir, tmp_path):
    src = tmp_path / "in"
    _save(str(src / "png_noext"), "PNG")
    _save(str(src / "jpeg_noext"), "JPEG", 1)
    _save(str(src / "mislabelled.png"), "JPEG", 2)
    _save(str(src / "shot.jpeg"), "JPEG", 3)
    res = denoise_files.denoise_paths(run_dir, str(src), str(tmp_path / "out"), keep_format=True, **SMALL)
    got = {os.path.basename(p): Image.open(p).format for p in res["written"]}
    assert got == {"png_noext.png": "PNG", "jpeg_noext.jpg": "JPEG", "mislabelled.png.jpg": "JPEG",
                   "shot.jpeg": "JPEG"}
    assert Image.open(tmp_path / "out" / "png_noext.png").size == (20, 24)


def test_outputs_inside_the_input_folder_are_not_inputs_on_a_rerun(run_dir, tmp_path):
    _save(str(tmp_path / "a.png"), "PNG")
    _save(str(tmp_path / "b.jpg"), "JPEG", 1)
    out = tmp_path / "denoised"
    first = denoise_files.denoise_paths(run_dir, str(tmp_path), str(out), **SMALL)
    assert len(first["written"]) == 2
    again = denoise_files.denoise_paths(run_dir, str(tmp_path), str(out), **SMALL)
    assert again["written"] == []
    assert sorted(s["path"] for s in again["skipped"]) == ["a.png", "b.jpg"]
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]


def test_bad_arguments_are_value_errors(run_dir, tmp_path):
    _save(str(tmp_path / "a.png"), "PNG")
    for kw, match in [(dict(batch=0), "--batch"), (dict(tile=-1), "--tile"), (dict(overlap=-2), "--overlap")]:
        with pytest.raises(ValueError, match=match):
            denoise_files.denoise_paths(run_dir, str(tmp_path), str(tmp_path / "out"), progress=False, **kw)
    with pytest.raises(ValueError, match="--input"):
        denoise_files.denoise_paths(run_dir, "", str(tmp_path / "out"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        denoise_files.denoise_paths(run_dir, str(tmp_path), str(tmp_path / "a.png"), progress=False)


def test_script_report_counts_writes_and_prints_each_reason_once(run_dir, tmp_path):
    src = tmp_path / "in"
    _save(str(src / "photo.jpg"), "JPEG")
    _save(str(src / "photo.png"), "PNG", 1)
    _save(str(src / "kept.png"), "PNG", 2)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.png").write_bytes(b"keep me")
    r = _script("--workdir", run_dir, "--input", str(src), "--output", str(out), "--tile", "96", "--overlap", "8")
    assert r.returncode == 0, r.stderr
    assert f"wrote 3 image(s) to {out}; skipped 1" in r.stdout  # kept.png (the user's) is not an output's name
    assert sorted(os.listdir(out)) == ["kept.png", "kept_png.png", "photo_jpg.png", "photo_png.png"]
    assert (out / "kept.png").read_bytes() == b"keep me"
    r = _script("--workdir", run_dir, "--input", str(src), "--output", str(out), "--tile", "96", "--overlap", "8")
    both = r.stdout + r.stderr
    assert f"wrote 0 image(s) to {out}; skipped 4" in r.stdout, r.stdout
    assert both.count("broken.png") == 1 and both.count("exists (use --overwrite to replace it)") == 3  # one each


def test_script_errors_are_one_line(run_dir, tmp_path):
    _save(str(tmp_path / "a.png"), "PNG")
    (tmp_path / "file").write_text("not a folder")
    for extra, words in [(["--batch", "0"], "--batch"), (["--output", str(tmp_path / "file" / "out")], "file")]:
        r = _script("--workdir", run_dir, "--input", str(tmp_path / "a.png"), *extra)
        assert r.returncode != 0, r.stdout
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and words in last, r.stderr
        assert "Traceback" not in r.stderr


def test_a_fifo_socket_or_device_in_an_input_folder_is_skipped_not_waited_on(run_dir, tmp_path):
    import socket
    from jaxdenoise.data import imageio
    src = tmp_path / "in"
    _save(str(src / "a.png"), "PNG")
    os.mkfifo(src / "pipe.png")  # no writer: a plain open() would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.png"))
    try:
        with pytest.raises(imageio.ImageReadError, match="a FIFO, not a regular file"):
            imageio.load_rgb(src / "pipe.png")
        with pytest.raises(imageio.ImageReadError, match="not a regular file"):
            imageio.load_rgb("/dev/zero")
        res = denoise_files.denoise_paths(run_dir, str(src), str(tmp_path / "out"), **SMALL)
        assert res["written"] == [str(tmp_path / "out" / "a.png")]
        assert sorted((s["path"], "not a regular file" in s["reason"]) for s in res["skipped"]) == [
            ("pipe.png", True), ("sock.png", True)]
    finally:
        sock.close()
