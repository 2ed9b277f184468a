"""Images are never silently ruined (16-bit, EXIF orientation, decompression bombs) and predict.py never
destroys a file (outputs over inputs, colliding names, unwritable folders) and bounds its memory."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import toy_data
from PIL import Image

from imas import evaluate as eval_cli
from imas import predict as predict_cli
from imas import progress
from imas.checkpoint import save_checkpoint
from imas.config import load_config
from imas.data import build_datasets
from imas.data.commands import main as imas_data
from imas.data.io import check_same_size, read_image, read_label
from imas.data.toy import make_toy_dataset
from imas.errors import DataError

ORIENTATION = 0x0112  # the EXIF Orientation tag


def grey(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def write_png16_rgb(values: np.ndarray, path: Path) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): values uint16 [H, W, 3]."""
    h, w, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))


def write_exif_jpeg(path: Path, h: int, w: int, orientation: int) -> np.ndarray:
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[: h // 2] = (250, 20, 20)  # top half red: where it goes shows the rotation
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return pixels


# ------------------------------------------------------------------------------------- reading images


def test_16bit_grey_reads_like_its_8bit_original(tmp_path):
    eight = grey(12, 17)
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(eight.astype(np.int32) * 257).save(tmp_path / "g32.tif")  # mode I, 16-bit range
    for name in ("g16.png", "g32.tif"):
        out = np.asarray(read_image(tmp_path / name))
        assert out.shape == (12, 17, 3)
        assert np.array_equal(out, np.repeat(eight[..., None], 3, axis=2)), name
    # Values between the multiples of 257 round to the nearest 8-bit value.
    sixteen = np.random.default_rng(1).integers(0, 65536, (9, 11)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "any16.png")
    out = np.asarray(read_image(tmp_path / "any16.png"))[..., 0].astype(int)
    assert np.abs(out - sixteen / 257).max() <= 0.5 + 1e-9


def test_16bit_rgb_png_reads_like_its_8bit_original(tmp_path):
    eight = np.random.default_rng(2).integers(0, 256, (7, 5, 3)).astype(np.uint8)
    write_png16_rgb(eight.astype(np.uint16) * 257, tmp_path / "rgb16.png")
    assert np.abs(np.asarray(read_image(tmp_path / "rgb16.png")).astype(int) - eight).max() <= 1


def test_float_and_out_of_range_images_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif .*floating-point"):
        read_image(tmp_path / "f.tif")
    Image.fromarray(np.full((4, 4), -3, np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(DataError, match=r"neg\.tif .*-3"):
        read_image(tmp_path / "neg.tif")
    Image.fromarray(grey(4, 4).astype(np.int32)).save(tmp_path / "i8.tif")  # 8-bit values in a 32-bit image
    with pytest.raises(DataError, match=r"i8\.tif .*8-bit or 16-bit data"):
        read_image(tmp_path / "i8.tif")
    # A uint8 array cast to uint16 without scaling: as 16-bit data it would read as black.
    Image.fromarray(grey(4, 4).astype(np.uint16)).save(tmp_path / "cast16.png")
    with pytest.raises(DataError, match=r"cast16\.png is a 16-bit integer image .*8-bit or 16-bit data"):
        read_image(tmp_path / "cast16.png")


def test_decompression_bomb_is_one_sentence(tmp_path, monkeypatch):
    Image.fromarray(grey(30, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1200 pixels > 2 x 500: Pillow's error
    with pytest.raises(DataError, match=r"image .*big\.png has 1,200 pixels.*1,000") as info:
        read_image(tmp_path / "big.png")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"label .*big\.png has 1,200 pixels"):
        read_label(tmp_path / "big.png", 256)
    # Between 1x and 2x the limit Pillow only warns; the reader reads it without the warning.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "big.png").size == (40, 30)
        assert read_label(tmp_path / "big.png", 256).size == (40, 30)


def test_training_samples_read_16bit_and_refuse_bombs_in_one_sentence(voc_cfg, monkeypatch):
    """The datasets read through read_image/read_label: what training and eval.py get."""
    data = build_datasets(voc_cfg, with_unlabeled=False)
    path = data.val.images[0]
    eight = np.asarray(Image.open(path).convert("RGB"))
    # The val sample is the untransformed image: a 16-bit copy of it gives the same tensor.
    before = data.val[0]["image"]
    Image.fromarray(eight[..., 0].astype(np.uint16) * 257).save(path.with_suffix(".png"))
    path.with_suffix(".png").rename(path)
    assert torch.equal(data.val[0]["image"][0], before[0])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"has [\d,]+ pixels, more than the 200 that Pillow reads"):
        data.val[0]


def test_exif_orientation_raw_for_training_applied_on_request(tmp_path):
    write_exif_jpeg(tmp_path / "turned.jpg", 24, 40, orientation=6)  # stored 40x24, shown 24x40
    raw = read_image(tmp_path / "turned.jpg")
    assert raw.size == (40, 24)  # training reads the stored pixel grid, as the labels are drawn on
    upright = read_image(tmp_path / "turned.jpg", exif_transpose=True)
    assert upright.size == (24, 40)
    pixels = np.asarray(upright).astype(int)
    # Orientation 6: the viewer turns the image 90 degrees clockwise, so the red top goes to the right.
    assert pixels[:, -1, 0].mean() > 200 and pixels[:, 0, 0].mean() < 60
    # A label drawn on the upright view does not fit the stored grid: the size message says why.
    label_path = tmp_path / "turned.png"
    Image.fromarray(np.zeros((40, 24), np.uint8)).save(label_path)
    with pytest.raises(DataError, match="EXIF orientation 6"):
        check_same_size(raw, read_label(label_path, 2), label_path)


def test_data_check_reports_float_and_bomb_and_reads_16bit(tmp_path, monkeypatch, capsys):
    root = make_toy_dataset(tmp_path / "toy", sizes={"labeled": 3, "unlabeled": 2, "val": 2})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": toy_data(root), "train": {"batch_size": 2}}))
    images = root / "JPEGImages"
    # A 16-bit copy of labeled_0000 (PNG data under the .jpg name: Pillow reads the content).
    original = np.asarray(Image.open(images / "labeled_0000.jpg").convert("L"))
    Image.fromarray(original.astype(np.uint16) * 257).save(images / "labeled_0000.png")
    (images / "labeled_0000.png").rename(images / "labeled_0000.jpg")
    assert np.array_equal(np.asarray(read_image(images / "labeled_0000.jpg"))[..., 0], original)
    assert imas_data(["check", str(tmp_path / "c.yaml")]) == 0
    assert "no problems" in capsys.readouterr().out

    height, width = original.shape
    Image.fromarray(np.zeros((height, width), np.float32)).save(images / "labeled_0001.tif")
    (images / "labeled_0001.tif").rename(images / "labeled_0001.jpg")
    Image.fromarray(grey(200, 200)).save(images / "unlabeled_0000.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15_000)  # toy images are at most 90 x 90 = 8,100
    assert imas_data(["check", str(tmp_path / "c.yaml")]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert "labeled_0001.jpg is a floating-point image" in out
    assert "unlabeled_0000.jpg has 40,000 pixels" in out
    assert "unsupported pixel format" in out and "image too large (decompression-bomb guard)" in out
    assert "Traceback" not in out


# ------------------------------------------------------------------------------------------ predict.py


def run_predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(out), "--device", "cpu"]
    return predict_cli.main([*args, *extra])


def photo(path: Path, h: int, w: int, seed: int = 0) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def forbid_work(monkeypatch) -> None:
    """Loading the checkpoint is the first piece of work: a refusal must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the refusal")

    monkeypatch.setattr(predict_cli, "load_checkpoint", fail)


def test_output_over_an_input_is_refused_before_any_work(tmp_path, monkeypatch, capsys, checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(photos / "a.png", 20, 30)
    photo(photos / "b.jpg", 20, 30)
    before = (photos / "a.png").read_bytes()
    forbid_work(monkeypatch)
    assert run_predict(checkpoint, photos, photos) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(photos / "a.png") in err
    assert (photos / "a.png").read_bytes() == before
    assert run_predict(checkpoint, photos / "a.png", photos) == 2  # one file, its folder as --output


def test_unwritable_output_is_refused_before_any_work(tmp_path, monkeypatch, capsys, checkpoint):
    photo(tmp_path / "a.png", 20, 30)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    forbid_work(monkeypatch)
    for out in (blocker, blocker / "sub"):
        assert run_predict(checkpoint, tmp_path / "a.png", out) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --output {out} ") and err.count("\n") == 1
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("opts", "needle"),
    [
        (["train.method=fixmatsch"], "train.method 'fixmatsch' is unknown; valid methods: supervised"),
        (["model.encoder=resnet34"], "model.encoder 'resnet34' is unknown; valid encoders: resnet18"),
        (["train.method=cps", "data.unlabeled_split="], "train.method cps needs an unlabeled split"),
        (["train.batch_size=1"], "train.method supervised needs train.batch_size >= 2"),
    ],
)
def test_eval_and_predict_check_names_before_any_work(
    tmp_path, monkeypatch, capsys, checkpoint, opts, needle
):
    """A config that names no method or backbone of the code, or one its method cannot train, is refused
    in one sentence before a model is built, from a --config file or the checkpoint's stored config."""

    def fail(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(predict_cli, "load_trained_model", fail)
    monkeypatch.setattr(eval_cli, "load_trained_model", fail)
    photo(tmp_path / "a.png", 8, 8)
    config = ["--config", str(checkpoint.parent / "c.yaml")]
    for extra in ([], config):  # the config stored in the checkpoint, then the file
        assert run_predict(checkpoint, tmp_path / "a.png", tmp_path / "out", *extra, "--opt", *opts) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {needle}") and err.count("\n") == 1, err
    code = eval_cli.main([*config, "--checkpoint", str(checkpoint), "--opt", *opts, "--device", "cpu"])
    assert code == 2 and needle in capsys.readouterr().err


def test_colliding_names_are_kept_apart_and_counted_truly(tmp_path, capsys, checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    # Three share the stem "a" (case-insensitively: one file on macOS/Windows); a_2 is a stem of its own.
    sizes = {"a.jpg": (20, 30), "a.png": (22, 26), "a_2.png": (18, 18), "A.bmp": (21, 17), "b.png": (25, 19)}
    for seed, (name, (h, w)) in enumerate(sizes.items()):
        photo(photos / name, h, w, seed)
    out = tmp_path / "out"
    assert run_predict(checkpoint, photos, out) == 0
    assert f"wrote 5 predictions to {out}" in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == 5 + 1 and len(list(out.glob("*_overlay.jpg"))) == 5  # + legend
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        expected = stem if stem.lower() != "a" else f"{stem}_{Path(name).suffix[1:]}"
        assert Image.open(out / f"{expected}.png").size == (w, h), name


def test_output_names_unique_case_insensitively():
    files = [Path("x/a.jpg"), Path("y/a.jpg"), Path("x/A.png"), Path("x/a_jpg.png"), Path("x/c.png")]
    names = predict_cli.output_names(files)
    assert names[3:] == ["a_jpg", "c"]  # a unique stem keeps its name
    assert len({n.lower() for n in names}) == len(files)
    # The legend's name is taken: legend.jpg's index PNG must not be (or replace) legend.png.
    names = predict_cli.output_names([Path("Legend.jpg"), Path("legend"), Path("x.png")])
    assert names == ["Legend_jpg", "legend_2", "x"]


def test_16bit_exif_and_bomb_in_predict(tmp_path, monkeypatch, capsys, checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    eight = grey(30, 40)
    Image.fromarray(eight).convert("RGB").save(photos / "eight.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(photos / "sixteen.png")
    write_exif_jpeg(photos / "turned.jpg", 24, 40, orientation=8)
    Image.fromarray(grey(100, 100)).save(photos / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # bomb.png: 10,000 > 2 x 4,000
    out = tmp_path / "out"
    assert run_predict(checkpoint, photos, out) == 0  # some written: 0, the skipped ones listed
    stdout = capsys.readouterr().out
    assert "wrote 3 predictions" in stdout and "skipped 1 images" in stdout
    assert f"skipped: image {photos / 'bomb.png'} has 10,000 pixels" in stdout
    assert "1 images turned upright by their EXIF orientation" in stdout
    # The 16-bit image gives exactly what its 8-bit original gives, not a white image.
    assert np.array_equal(
        np.asarray(Image.open(out / "sixteen.png")), np.asarray(Image.open(out / "eight.png"))
    )
    same = (
        np.asarray(Image.open(out / "sixteen_overlay.jpg")),
        np.asarray(Image.open(out / "eight_overlay.jpg")),
    )
    assert np.array_equal(*same)
    # The EXIF-rotated photo's mask and overlay are as a viewer shows it: 24 wide, 40 high.
    assert Image.open(out / "turned.png").size == (24, 40)
    assert Image.open(out / "turned_overlay.jpg").size == (24, 40)
    assert not (out / "bomb.png").exists()


@pytest.mark.slow
def test_large_image_is_predicted_in_sliding_tiles(tmp_path, monkeypatch, capsys, checkpoint):
    photo(tmp_path / "wide.png", 70, 150)
    photo(tmp_path / "small.png", 40, 50)
    monkeypatch.setattr(predict_cli, "LARGE_SIDE", 60)
    monkeypatch.setattr(predict_cli, "TILE_BYTES", 1)  # the smallest tile: one window
    assert predict_cli.large_side(load_config(checkpoint.parent / "c.yaml")) == 96  # 2 x eval.window 48
    out = tmp_path / "out"
    assert run_predict(checkpoint, tmp_path / "wide.png", out, "--opt", "eval.window=32") == 0
    stdout = capsys.readouterr().out
    assert (
        "wide.png is 150x70, above 64 px on its long side: sliding windows of 32 px in 32 px tiles" in stdout
    )
    assert "wide.png tile 15/15" in stdout  # progress per tile: 3 x 5 tiles of 32 px
    mask = Image.open(out / "wide.png")
    assert mask.size == (150, 70) and int(np.asarray(mask).max()) < 6
    assert Image.open(out / "wide_overlay.jpg").size == (150, 70)
    assert run_predict(checkpoint, tmp_path / "small.png", out, "--opt", "eval.window=32") == 0
    assert "sliding windows" not in capsys.readouterr().out


def test_overlays_and_one_legend_per_folder_kept_on_a_second_run(tmp_path, capsys, checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(("a.png", "b.png", "legend.png")):  # a photo named like the legend
        photo(photos / name, 20 + seed, 30, seed)
    out = tmp_path / "out"
    assert run_predict(checkpoint, photos, out) == 0
    stdout = capsys.readouterr().out
    assert "overlays at alpha 0.5, background left as the photo" in stdout
    assert f"wrote {out / 'legend.png'}" in stdout and f"classes and colours: {out / 'legend.png'}" in stdout
    assert sorted(p.name for p in out.glob("*legend*")) == [
        "legend.png",
        "legend_png.png",
        "legend_png_overlay.jpg",
    ]
    # The legend: a swatch in each toy class's colour (the index PNGs' palette), in class order.
    legend = np.asarray(Image.open(out / "legend.png"))
    palette = np.asarray(Image.open(out / "a.png").getpalette()[: 6 * 3]).reshape(6, 3)
    for index, colour in enumerate(palette):
        left, top, right, bottom = predict_cli.legend_swatch_box(index)
        assert (legend[top + 1 : bottom - 1, left + 1 : right - 1] == colour).all(), index
    assert legend.shape[0] == 2 * predict_cli.LEGEND_MARGIN + 6 * predict_cli.LEGEND_ROW
    # The overlay is the photo with the predicted classes blended at alpha 0.5, background untouched: the
    # same JPEG as overlay() of the photo and its index PNG.
    rgb, labels = np.asarray(Image.open(photos / "a.png")), np.asarray(Image.open(out / "a.png"))
    expected = predict_cli.overlay(rgb, labels, palette.astype(np.uint8), 0.5, frozenset({0}))
    Image.fromarray(expected).save(tmp_path / "expected.jpg", quality=90)
    assert np.array_equal(
        np.asarray(Image.open(out / "a_overlay.jpg")), np.asarray(Image.open(tmp_path / "expected.jpg"))
    )
    # A second run into the same folder keeps the legend as it is; --alpha 0 gives the photo itself.
    before = (out / "legend.png").stat()
    assert run_predict(checkpoint, photos / "a.png", out, "--alpha", "0") == 0
    assert f"wrote {out / 'legend.png'}" not in capsys.readouterr().out
    after = (out / "legend.png").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    assert np.array_equal(
        np.asarray(Image.open(out / "a_overlay.jpg")), np.asarray(Image.open(tmp_path / "photo.jpg"))
    )


def test_a_legend_png_not_ours_is_refused_before_any_work(tmp_path, monkeypatch, capsys, checkpoint):
    photo(tmp_path / "a.png", 20, 30)
    out = tmp_path / "out"
    out.mkdir()
    photo(out / "legend.png", 10, 10, seed=3)  # the user's own picture
    before = (out / "legend.png").read_bytes()
    forbid_work(monkeypatch)
    assert run_predict(checkpoint, tmp_path / "a.png", out) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --output {out} holds legend.png, which is a file imas-predict did not write; move it or "
        "choose another --output folder, or add --force to replace it\n"
    )
    assert (out / "legend.png").read_bytes() == before and not (out / "a.png").exists()


@pytest.mark.parametrize("alpha", ["1.5", "-1", "abc"])
def test_bad_alpha_is_exit_2_and_one_sentence_before_any_work(
    tmp_path, monkeypatch, capsys, checkpoint, alpha
):
    photo(tmp_path / "a.png", 20, 30)
    forbid_work(monkeypatch)
    assert run_predict(checkpoint, tmp_path / "a.png", tmp_path / "out", "--alpha", alpha) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --alpha {alpha} is not a number from 0 (the photo alone) to 1 (the class colours alone)\n"
    )


PROGRESS = re.compile(
    r"^(eval|predict) (\d+)/(\d+) images \(\d+%\), [\d.]+ img/s, elapsed [\d:]+, eta \d+:\d\d:\d\d$"
)


def test_eval_and_predict_name_the_model_and_show_progress(tmp_path, monkeypatch, capsys, checkpoint):
    """The start line says which weights of which checkpoint; stderr carries images done, rate and ETA
    (here a line per image: the 10 s interval set to 0)."""
    ckpt = torch.load(checkpoint, weights_only=True)
    trained = tmp_path / "best.pth"
    save_checkpoint(ckpt | {"epoch": 12, "iteration": 3000, "best_miou": 0.4723, "best_epoch": 12}, trained)
    monkeypatch.setattr(progress, "PROGRESS_PLAIN_SECONDS", 0.0)
    photo(tmp_path / "a.png", 20, 30)
    photo(tmp_path / "b.png", 24, 30, seed=1)
    assert run_predict(trained, tmp_path / "*.png", tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert (
        f"predicting 2 images with the network of {trained} (it holds no teacher; epoch 12, iteration 3000, "
        "val mIoU 47.23 at save time), whole inference on cpu" in captured.out
    )
    lines = [PROGRESS.match(line) for line in captured.err.splitlines()]
    assert [(m.group(1), m.group(2), m.group(3)) for m in lines] == [
        ("predict", "1", "2"),
        ("predict", "2", "2"),
    ]

    args = ["--config", str(checkpoint.parent / "c.yaml"), "--checkpoint", str(trained), "--device", "cpu"]
    assert eval_cli.main([*args, "--model", "student", "--output", str(tmp_path / "r.json")]) == 0
    captured = capsys.readouterr()
    assert (
        f"evaluating the network of {trained} (epoch 12, iteration 3000, val mIoU 47.23 at save time) "
        "on 2 val images, whole inference" in captured.out
    )
    lines = [PROGRESS.match(line) for line in captured.err.splitlines()]
    assert [(m.group(1), m.group(2), m.group(3)) for m in lines] == [("eval", "1", "2"), ("eval", "2", "2")]


# --------------------------------------------------------------------------------------------- eval.py


def test_eval_refuses_unwritable_output_before_evaluating(tmp_path, monkeypatch, capsys, checkpoint):
    def fail(*args, **kwargs):
        raise AssertionError("evaluated before the refusal")

    monkeypatch.setattr(eval_cli, "evaluate_model", fail)
    config = checkpoint.parent / "c.yaml"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    args = ["--config", str(config), "--checkpoint", str(checkpoint), "--device", "cpu", "--output"]
    assert eval_cli.main([*args, str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --output {folder} ") and err.count("\n") == 1
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert eval_cli.main([*args, str(blocker / "r.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --output {blocker / 'r.json'} ")


def test_eval_creates_the_output_folder(tmp_path, checkpoint):
    out = tmp_path / "new" / "dir" / "r.json"
    args = ["--config", str(checkpoint.parent / "c.yaml"), "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert eval_cli.main([*args, "--output", str(out)]) == 0
    assert '"miou"' in out.read_text()
    assert eval_cli.main([*args, "--output", str(out)]) == 0  # an earlier result is replaced


def test_eval_never_overwrites_its_inputs_or_other_files(tmp_path, capsys, checkpoint):
    config = checkpoint.parent / "c.yaml"
    args = ["--config", str(config), "--checkpoint", str(checkpoint), "--device", "cpu", "--output"]
    before = checkpoint.read_bytes(), config.read_text()
    assert eval_cli.main([*args, str(checkpoint)]) == 2
    assert "is the checkpoint this command reads" in capsys.readouterr().err
    assert eval_cli.main([*args, str(config)]) == 2
    assert "is the config this command reads" in capsys.readouterr().err
    notes = tmp_path / "metrics.jsonl"
    notes.write_text('{"epoch": 1, "miou": 0.5}\n')
    assert eval_cli.main([*args, str(notes)]) == 2
    assert "is a file imas-eval did not write (a run's metrics)" in capsys.readouterr().err
    assert (checkpoint.read_bytes(), config.read_text()) == before
    assert notes.read_text() == '{"epoch": 1, "miou": 0.5}\n'
