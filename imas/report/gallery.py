"""The galleries' pictures: an unlabeled image, the teacher's pseudo-label and the student's prediction on
it, predicted by the models of the run's latest.pth with the config's eval settings; and, for the hardness,
the whole image scored from those two predictions by the hardness function training uses."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imas.checkpoint import load_checkpoint
from imas.config import Config
from imas.data.io import read_image
from imas.data.layouts import resolve_entries
from imas.data.splits import read_split
from imas.dist import DistInfo
from imas.errors import UserError, user_message
from imas.hardness import instance_hardness
from imas.inference import inference_options, predict
from imas.networks import declared, held, load_trained_model
from imas.normalization import normalize
from imas.visualize import colorize

THUMB_SIDE = 240  # longest side of a gallery image as stored in the page (larger images are scaled down)


def png_uri(pixels: np.ndarray, nearest: bool) -> str:
    """An RGB uint8 [H, W, 3] array as a PNG data URI, its longest side scaled down to THUMB_SIDE."""
    image = Image.fromarray(pixels)
    scale = THUMB_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Models:
    """The models of latest.pth that the gallery shows ({"teacher": ..., "student": ...}, either may be
    missing) and what to tell the reader about them."""

    nets: dict[str, torch.nn.Module]
    note: str
    device: torch.device
    epoch: int | None = None

    def describe(self, method: str, threshold: float | None) -> str:
        """What the prediction columns show, or why there are none."""
        if not self.nets:
            return self.note
        columns = []
        if "teacher" in self.nets:
            below = (
                f", white where its confidence is below {method}.threshold {threshold:g}" if threshold else ""
            )
            columns.append(f"pseudo-label: the teacher's prediction{below} (training ignores those pixels)")
        if "student" in self.nets:
            columns.append("student: the student's prediction")
        text = f"Predicted by the models of latest.pth (epoch {self.epoch}) with the run's eval settings; "
        return text + "; ".join(columns) + (f". {self.note}" if self.note else ".")


def load_models(cfg: Config, run_dir: Path, device: torch.device) -> Models:
    """The teacher and student of latest.pth; none (and a note why) when there is no usable checkpoint, so
    that a folder copied without its checkpoints still gets its galleries of images."""
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    latest = run_dir / "latest.pth"
    if not latest.is_file():
        return Models(
            {}, "No latest.pth in the run directory: the images are shown without predictions.", info.device
        )
    try:
        ckpt = load_checkpoint(latest, mmap=True)
        nets = {}
        for network in declared(ckpt):  # the pseudo-labeling teacher and the student, where it has them
            role = "teacher" if network.members else network.name  # PS-MT: its teachers' ensemble
            if role in ("teacher", "student") and role not in nets and held(ckpt, network):
                nets[role] = load_trained_model(cfg, ckpt, latest, network.name, info)[0]
    except UserError as exc:
        return Models(
            {}, f"latest.pth cannot be used ({user_message(exc)}): no predictions shown.", info.device
        )
    note = "" if "teacher" in nets else f"This {cfg.train.method} run has no teacher: no pseudo-label column."
    epoch = ckpt.get("epoch")
    return Models(nets, note, info.device, int(epoch) if isinstance(epoch, int) else None)


def colour_labels(labels: torch.Tensor, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A label map [1, H, W] (255: none) in the dataset palette -> uint8 [H, W, 3]."""
    return colorize(labels.cpu(), colours)[0].permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class Scoring:
    """The settings training scores the hardness with (the method's section: imas, mean_teacher)."""

    section: str
    threshold: float
    class_weighted: bool
    ignore_class0: bool

    @classmethod
    def of(cls, cfg: Config) -> Scoring | None:
        """The run's settings; None for a method that measures no hardness."""
        settings = getattr(cfg, cfg.train.method, None)
        if not all(hasattr(settings, key) for key in ("threshold", "class_weighted", "ignore_class0")):
            return None
        return cls(cfg.train.method, settings.threshold, settings.class_weighted, settings.ignore_class0)

    def describe(self) -> str:
        weights = "class-weighted IoU" if self.class_weighted else "mean IoU over the classes present"
        background = ", background left out" if self.class_weighted and self.ignore_class0 else ""
        return f"{self.section}.threshold {self.threshold:g}, {weights}{background}"

    def score(self, student: torch.Tensor, teacher: torch.Tensor) -> float:
        """The hardness of one image from the student's and the teacher's class probabilities [1, K, H, W]
        (their logarithms are logits whose softmax gives them back)."""
        args = (self.threshold, self.class_weighted, self.ignore_class0)
        return float(instance_hardness(student.log(), teacher.log(), *args)[0])


@torch.no_grad()
def gallery_panels(
    path: Path,
    models: Models,
    cfg: Config,
    colours: list[tuple[int, int, int]],
    threshold: float | None,
    scoring: Scoring | None = None,
) -> tuple[list[tuple[str, str]], float | None]:
    """(title, PNG data URI) of the image, the teacher's pseudo-label and the student's prediction; and the
    whole image's hardness from those two predictions where `scoring` is given and both models are there
    (else None)."""
    pixels = np.array(read_image(path))
    panels = [("image", png_uri(pixels, nearest=False))]
    if not models.nets:
        return panels, None
    x = normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None].to(models.device))
    options = inference_options(cfg)
    probs = {which: predict(net, x, **options) for which, net in models.nets.items()}
    if "teacher" in probs:
        confidence, label = probs["teacher"].max(dim=1)
        if threshold is not None:
            label[confidence < threshold] = 255
        panels.append(("pseudo-label", png_uri(colour_labels(label, colours), nearest=True)))
    if "student" in probs:
        label = probs["student"].argmax(dim=1)
        panels.append(("student", png_uri(colour_labels(label, colours), nearest=True)))
    whole = None
    if scoring is not None and len(probs) == 2:
        # Training scores one forward of each model at one scale, unflipped: so is the whole image, whatever
        # the eval settings the panels follow.
        if options | PLAIN != options:
            probs = {which: predict(net, x, **(options | PLAIN)) for which, net in models.nets.items()}
        whole = scoring.score(probs["student"], probs["teacher"])
    return panels, whole


PLAIN = {"mode": "whole", "scales": [1.0], "flip": False}  # one forward of the whole image


def unlabeled_paths(cfg: Config) -> dict[str, Path]:
    """Image path by id of the unlabeled split (a user error when the split cannot be read)."""
    split = cfg.data.unlabeled_split
    if not split:
        raise UserError("the config names no unlabeled split")
    return {entry[0]: entry[1] for entry in resolve_entries(read_split(split), cfg.data, split)}
