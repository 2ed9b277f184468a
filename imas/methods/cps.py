"""Cross pseudo supervision (Chen et al., CVPR 2021).

Two networks of the same architecture, the backbone of both from the same pretrained weights and the rest
initialised from different seeds. On CutMix-mixed unlabeled images, each network's hard pseudo-label
(argmax, no threshold, no gradient) supervises the other with cross-entropy, as the released CutMix training
code does (docs/methods.md):

    L = L_s(f1) + L_s(f2) + lambda * L_cps^u,   L_cps = CE(f1, argmax f2) + CE(f2, argmax f1),

each CE a mean over the mixed pixels, lambda 1 on VOC and 5 on Cityscapes as in the released CutMix configs.
`cps.labeled_term` adds the paper's term on labeled images, L_cps^l (the released code has it only without
CutMix). As released, the unlabeled pseudo-labels are predicted on the unmixed images and mixed with the same
mask as the images, and every forward runs in train mode. The first network is the
reported one (the released evaluation runs branch 1); the second is evaluated and logged beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from imas import cutmix
from imas.config import Config, ConfigError, check_at_least, short_repr
from imas.methods.base import Method, Network, Progress, StepOutput, forward_views
from imas.normalization import normalize
from imas.precision import autocast_context

MAX_BOXES = 16  # cps.n_boxes: each box is a [B, H, W] mask while the CutMix mask is made


@dataclass
class CPSSettings:
    """Cross pseudo supervision (train.method cps): two networks, each one's hard pseudo-label supervises the
    other on CutMix-mixed unlabeled images (and on labeled images with labeled_term)."""

    weight: float = 1.0  # lambda (released CPS+CutMix configs: 1 VOC, 5 Cityscapes; 1.5 / 6 without CutMix)
    labeled_term: bool = False  # the paper's CPS term on labeled images (the released CutMix code has none)
    n_boxes: int = 3  # CutMix boxes per image (CPS's mask generator)
    # The boxes' total area fraction, drawn from U[low, high] per image.
    box_area: list[float] = field(default_factory=lambda: [0.25, 0.5])

    def check(self, cfg: Config) -> None:
        check_at_least("cps.weight", self.weight, 0)
        check_at_least("cps.n_boxes", self.n_boxes, 1)
        if self.n_boxes > MAX_BOXES:
            raise ConfigError(f"cps.n_boxes must be at most {MAX_BOXES}, got {self.n_boxes}")
        low_high = self.box_area
        if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] <= 1:
            raise ConfigError(
                f"cps.box_area must be [low, high] with 0 < low <= high <= 1, got {short_repr(low_high)}"
            )


class CPS(Method):
    Settings = CPSSettings
    networks = (
        Network("model", "student", noun="first network"),
        Network("model2", "second network", noun="second network"),
    )

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        progress: Progress,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        s = self.settings
        weak = unlabeled["image"]
        b, _, h, w = weak.shape
        source = cutmix.other_image(b, device=self.device)
        masks = cutmix.multi_box_masks(b, h, w, s.n_boxes, s.box_area, device=self.device)
        mixed = cutmix.paste(weak, masks, source)

        # Pseudo-labels: each network on the unmixed images, mixed like the images.
        pseudo = []
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            for name in self.trained_keys():
                label = self.models[name](normalize(weak)).logits.argmax(1)
                pseudo.append(cutmix.paste(label, masks, source))

        inputs = {"labeled": labeled["image"], "mixed": mixed}
        with autocast_context(self.cfg, self.device):
            outputs = [forward_views(nets[name], inputs) for name in self.trained_keys()]
        loss_x = sum(self.supervised_loss(out["labeled"], labeled["mask"]) for out in outputs)
        # Each network's hard label on the unmixed images (mixed like them) is the other's target.
        on_mixed = [out["mixed"].logits.float() for out in outputs]
        loss_cps = F.cross_entropy(on_mixed[0], pseudo[1]) + F.cross_entropy(on_mixed[1], pseudo[0])
        if s.labeled_term:  # the paper's term on labeled images: each one's detached prediction there
            on_labeled = [out["labeled"].logits.float() for out in outputs]
            labeled_pseudo = [lg.detach().argmax(1) for lg in on_labeled]
            loss_cps_l = F.cross_entropy(on_labeled[0], labeled_pseudo[1]) + F.cross_entropy(
                on_labeled[1], labeled_pseudo[0]
            )
            loss_cps = loss_cps_l + loss_cps
        loss_cps = s.weight * loss_cps
        scalars = {
            "loss_x": loss_x.detach(),
            "loss_cps": loss_cps.detach(),
            "agreement": (pseudo[0] == pseudo[1]).float().mean(),
            "mixed_area": masks.float().mean(),
        }
        views = {}
        if keep_views:
            views = {
                "weak": weak,
                "mixed": mixed,
                "pseudo_label_2": pseudo[1],
                "prediction_1": on_mixed[0].detach().argmax(1),
            }
        return StepOutput(loss_x + loss_cps, scalars, {}, views)
