"""Cross pseudo supervision (Chen et al., CVPR 2021).

Two networks of the same architecture, the backbone of both from the same pretrained weights and the rest
initialised from different seeds. On labeled images and on CutMix-mixed unlabeled images, each network's
hard pseudo-label (argmax, no threshold, no gradient) supervises the other with cross-entropy:

    L = L_s(f1) + L_s(f2) + lambda * (L_cps^l + L_cps^u),
    L_cps = CE(f1, argmax f2) + CE(f2, argmax f1).

This is the paper's loss. The released CutMix training code applies the CPS term to the mixed unlabeled
images only (its labeled CPS term belongs to the variant without CutMix); here both terms are kept, as the
paper writes them. As in the released code, the unlabeled pseudo-labels are predicted on the unmixed images
and mixed with the same mask as the images, and every forward runs in train mode. The first network is the
reported one (the released evaluation runs branch 1); the second is evaluated and logged beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imas import cutmix
from imas.methods.base import Method, StepOutput, labeled_part, main_logits
from imas.normalization import normalize
from imas.precision import autocast_context


class CPS(Method):
    section = "cps"
    trained = ("model", "model2")
    evaluated = ("model", "model2")

    def step(
        self,
        nets: dict[str, nn.Module],
        labeled: dict[str, torch.Tensor],
        unlabeled: dict[str, torch.Tensor] | None,
        keep_views: bool = False,
    ) -> StepOutput:
        assert unlabeled is not None
        s = self.settings
        weak = unlabeled["image"]
        b, _, h, w = weak.shape
        n = labeled["image"].shape[0]
        source = cutmix.other_image(b, device=self.device)
        masks = cutmix.multi_box_masks(b, h, w, s.n_boxes, s.box_area, device=self.device)
        mixed = cutmix.paste(weak, masks, source)

        # Pseudo-labels: each network on the unmixed images, mixed like the images.
        pseudo = []
        with torch.no_grad(), autocast_context(self.cfg, self.device):
            for name in self.trained:
                label = main_logits(self.models[name](normalize(weak))).argmax(1)
                pseudo.append(cutmix.paste(label, masks, source))

        batch = torch.cat([normalize(labeled["image"]), normalize(mixed)])
        with autocast_context(self.cfg, self.device):
            outputs = [nets[name](batch) for name in self.trained]
        logits = [main_logits(out).float() for out in outputs]
        loss_x = sum(self.criterion(labeled_part(out, n), labeled["mask"]) for out in outputs)
        # Each network's labeled-image prediction (detached) is the other's target there.
        labeled_pseudo = [lg[:n].detach().argmax(1) for lg in logits]
        loss_cps_l = F.cross_entropy(logits[0][:n], labeled_pseudo[1]) + F.cross_entropy(
            logits[1][:n], labeled_pseudo[0]
        )
        loss_cps_u = F.cross_entropy(logits[0][n:], pseudo[1]) + F.cross_entropy(logits[1][n:], pseudo[0])
        loss_cps = s.weight * (loss_cps_l + loss_cps_u)
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
                "prediction_1": logits[0][n:].detach().argmax(1),
            }
        return StepOutput(loss_x + loss_cps, scalars, {}, views)
