"""tools/benchmark.py's modes for the reliability checks run and report positive costs."""

import json

import numpy as np
import pytest

from tools import benchmark


@pytest.mark.slow
def test_state_check_mode(tmp_path):
    out = tmp_path / "state.json"
    args = ["--mode", "state", "--crop", "32", "--batch", "2", "--steps", "1", "--warmup", "0"]
    assert benchmark.main([*args, "--device", "cpu", "--threads", "1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    # student + teacher + momentum: the parameters three times, and the BN buffers twice
    assert result["checked_tensors"] > 300 and result["checked_mib"] > 0 and result["state_check_s"] > 0


@pytest.mark.slow
def test_preflight_mode(tmp_path):
    out = tmp_path / "preflight.json"
    args = ["--mode", "preflight", "--steps", "1", "--threads", "1"]
    assert benchmark.main([*args, "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["entries"] == {"voc": 20, "cityscapes": 2}
    assert result["voc_ms_per_entry"] > 0 and result["cityscapes_ms_per_entry"] > result["voc_ms_per_entry"]


def test_data_mode_reports_per_worker_rates(tmp_path):
    """--mode data on tiny files (every size x 0.1): both datasets' labeled and unlabeled rates per worker,
    where the time goes, and the comparison with what one GPU consumes."""
    out = tmp_path / "data.json"
    args = ["--mode", "data", "--data-scale", "0.1", "--steps", "1", "--output", str(out)]
    assert benchmark.main(args) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and "native bf16" in result["device"]
    # 16 + 16 images per 0.27 s step, twice over, from 16 workers: 14.8 samples per second each
    assert result["target"]["needed_per_worker_samples_per_s"] == 14.8
    for kind, crop in (("voc", 51), ("cityscapes", 77)):
        rates = result[kind]
        assert rates["crop"] == crop
        assert rates["labeled_samples_per_s"] > 0 and rates["unlabeled_samples_per_s"] > 0
        assert set(rates["ms_per_call"]) == {"read_image", "read_label", "weak_transform"}
        assert (
            isinstance(rates["meets_target_with_margin"], bool)
            and rates["shortest_step_fed_with_margin_s"] > 0
        )


def test_synthetic_scene_is_a_valid_sample():
    """The generated photo-like image and label: same size, RGB with smooth variation, labels in [0, K) or 255
    (the VOC borders), which imas.data's reader accepts."""
    rng = np.random.default_rng(0)
    image, label = benchmark.synthetic_scene(rng, 60, 80, 21, border=2)
    assert image.size == label.size == (80, 60) and image.mode == "RGB" and label.mode == "L"
    values = np.unique(np.asarray(label))
    assert set(values) <= set(range(21)) | {255} and 255 in values and len(values) > 3
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 10  # not flat
    assert np.abs(np.diff(pixels, axis=1)).mean() < 20  # but smooth: neighbours are alike, unlike noise
