"""The validation panel (TensorBoard's eval/views): each evaluated network's prediction of the first val
images beside the image and its ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from imas.config import Config
from imas.inference import inference_options, predict
from imas.normalization import normalize
from imas.precision import AUTOCAST_DTYPES
from imas.visualize import colorize, fit

PANEL_ROWS = 4  # images shown by the train/views and eval/views panels
VAL_CELL = 192  # px: the height of the validation panel's cells (whole val images, scaled to fit)


def val_panel(
    cfg: Config,
    models: dict[str, nn.Module],
    samples: Sequence[dict[str, Any]],
    colours: Sequence[tuple[int, int, int]],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """The eval/views panel's columns (image, ground truth, then each model's prediction, the reported one
    first, as `models` orders them) and row notes (each image's id), as uint8 RGB [N, 3, VAL_CELL, width].

    Each model predicts each whole image as the evaluation does (cfg.eval's mode, scales and flip). The
    images are shrunk or enlarged to VAL_CELL px high (all to one width; aspect kept, the rest grey):
    photos bilinearly, label maps nearest-neighbour after colouring. Run on rank 0 alone: the models are the
    plain modules, whose eval-mode forward needs no other process.
    """
    aspect = max(s["image"].shape[2] / s["image"].shape[1] for s in samples)
    height, width = VAL_CELL, min(3 * VAL_CELL, max(VAL_CELL // 2, round(VAL_CELL * aspect)))
    columns: dict[str, list[torch.Tensor]] = {"image": [], "ground truth": []}
    # The reported model's column says so where there are others (its mIoU is eval/miou).
    headers = {
        label: f"{label} (reported)" if i == 0 and len(models) > 1 else label
        for i, label in enumerate(models)
    }
    columns |= {headers[label]: [] for label in models}
    for sample in samples:
        columns["image"].append(fit(sample["image"], height, width, smooth=True))
        columns["ground truth"].append(fit(colorize(sample["mask"][None], colours)[0], height, width, False))
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    for label, model in models.items():
        was_training = model.training
        model.eval()
        try:
            for sample in samples:
                image = normalize(sample["image"][None].to(device))
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    labels = predict(model, image, **inference_options(cfg)).argmax(1).cpu()
                columns[headers[label]].append(fit(colorize(labels, colours)[0], height, width, smooth=False))
        finally:
            model.train(was_training)
    rows = [[str(s["id"])] for s in samples]
    return {name: torch.stack(images) for name, images in columns.items()}, rows
