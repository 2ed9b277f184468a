"""The methods of imas.methods: their losses are their papers' compositions, their CutMix and strong views do
what their docstrings say, and the config refuses what a method cannot use. (Training, resume and 2-process
runs of every method: tests/test_train.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imas import augment, cutmix
from imas.config import ConfigError
from imas.experiment import load_experiment
from imas.losses import build_supervised_loss, confident_pixel_loss, confident_share
from imas.methods import METHODS, Progress, fixmatch
from imas.methods import unimatch as unimatch_module
from imas.models import SegOutput, build_deeplabv3plus, perturb
from imas.networks import reported_key
from imas.normalization import normalize

K, B, H, W = 6, 4, 16, 16
PROGRESS = Progress(iteration=0, epoch=1, iters_per_epoch=10, epochs=2)
DEVICE = torch.device("cpu")


class PixelNet(nn.Module):
    """A per-pixel linear segmenter with BN that also takes UniMatch's fp_dropout, PS-MT's decoder noise,
    UniMatch V2's complementary dropout and, with a representation width, gives U2PL's features: fast enough
    for steps."""

    def __init__(self, representation: int = 0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, K, 1)
        self.rep = nn.Conv2d(3, representation, 1) if representation else None

    def forward(
        self,
        x: torch.Tensor,
        fp_dropout: float = 0.0,
        features: bool = False,
        decoder_noise=None,
        comp_drop: bool = False,
    ) -> SegOutput:
        hidden = self.bn(x)
        if comp_drop:  # UniMatch V2: the two views' channels get complementary masks
            hidden = hidden * perturb.complementary_masks(x.shape[0], 3, x.device)[:, :, None, None]
        if decoder_noise is not None:  # PS-MT's T-VAT: the head is the decoder
            hidden = hidden + decoder_noise(hidden)
        out = SegOutput(self.decode(hidden, x.shape[-2:]), features=self.rep(hidden) if features else None)
        if fp_dropout > 0:
            out.perturbed = self.head(F.dropout2d(hidden, fp_dropout, training=True))
        return out

    def decode(self, hidden: torch.Tensor, size) -> torch.Tensor:
        return self.head(hidden)

    def param_groups(self):
        return [], list(self.parameters())


def batches(seed: int = 0) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    labeled = {
        "image": torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8, generator=gen),
        "mask": torch.randint(0, K, (B, H, W), generator=gen),
        "index": torch.arange(B),
    }
    valid = torch.ones(B, H, W, dtype=torch.bool)
    valid[:, :, -3:] = False  # crop padding on the right
    unlabeled = {
        "image": torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8, generator=gen),
        "valid": valid,
        "index": torch.arange(B),
    }
    return labeled, unlabeled


def make(method: str, overrides: tuple[str, ...] = ()):
    """The method on PixelNets, with the toy config of that method (CPS gets two differently seeded nets)."""
    name = {"supervised": "suponly", "self_training": "st_plus_plus"}.get(method, method)
    if method == "self_training":  # a re-training stage: its labeled entries from 2 on are pseudo-labeled
        overrides = ("self_training.pseudo_from=2", *overrides)
    cfg = load_experiment(f"exps/toy/{name}.yaml", [f"train.batch_size={B}", *overrides])
    trained = {}
    for index, key in enumerate(METHODS[method].trained_keys()):
        torch.manual_seed(index)
        trained[key] = PixelNet(cfg.model.representation)
    criterion = build_supervised_loss("ce", 0.7, 100000, 0.4)
    return METHODS[method](cfg, trained, criterion, DEVICE)


# ---------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_confident_pixel_loss_divides_by_the_non_padding_pixels(threshold):
    torch.manual_seed(0)
    logits = torch.randn(B, K, H, W)
    label = torch.randint(0, K, (B, H, W))
    confidence = torch.rand(B, H, W)
    valid = torch.rand(B, H, W) > 0.3
    ce = F.cross_entropy(logits, label, reduction="none")
    reference = (ce * ((confidence >= threshold) & valid)).sum() / valid.sum()
    assert confident_pixel_loss(logits, label, confidence, threshold, valid).item() == pytest.approx(
        reference.item(), rel=1e-6
    )


def test_fixmatch_loss_is_half_the_sum_of_supervised_and_strong_terms(monkeypatch):
    method = make("fixmatch", ("fixmatch.threshold=0.2", "fixmatch.lambda_u=0.7"))
    seen, drawn, targets = [], [], []
    real_labels, real_view = fixmatch.pseudo_labels, fixmatch.cutmix_strong_view
    real_loss = confident_pixel_loss

    def recording_labels(logits):
        seen.append(logits.detach().clone())
        return real_labels(logits)

    def recording_view(*args):
        drawn.append(real_view(*args))
        return drawn[-1]

    def recording_loss(logits, label, confidence, threshold, valid):
        targets.append(valid)
        return real_loss(logits, label, confidence, threshold, valid)

    monkeypatch.setattr(fixmatch, "pseudo_labels", recording_labels)
    monkeypatch.setattr(fixmatch, "cutmix_strong_view", recording_view)
    monkeypatch.setattr(fixmatch, "confident_pixel_loss", recording_loss)
    labeled, unlabeled = batches()
    model = method.models["model"]
    with torch.no_grad():  # the weak view's prediction: train mode, in one forward with the labeled images
        both = torch.cat([normalize(labeled["image"]), normalize(unlabeled["image"])])
        reference = model(both).logits[B:]
    torch.manual_seed(3)
    out = method.step({"model": model}, labeled, unlabeled, PROGRESS, keep_views=True)
    s = out.scalars
    assert out.loss.item() == pytest.approx((s["loss_x"] + 0.7 * s["loss_u"]).item() / 2, rel=1e-6)
    assert s["loss_u"] > 0 and len(seen) == 1
    (logits,), ((_, source, boxes),), (valid,) = seen, drawn, targets
    torch.testing.assert_close(logits, reference)
    # padding follows the pasted pixels
    assert torch.equal(valid, cutmix.paste(unlabeled["valid"], boxes, source))
    assert (source != torch.arange(B)).all()
    # the strong view: the partner's strong pixels inside each box
    strong = out.views["strong"]
    assert set(out.views) == {"weak", "strong", "pseudo_label", "prediction"}
    assert strong.dtype == torch.uint8 and strong.shape == (B, 3, H, W)
    unconfident = ~boxes & (logits.softmax(1).amax(1) < 0.2)
    assert (out.views["pseudo_label"][unconfident] == 255).all()  # the panel shows only confident labels
    confident = ~boxes & ~unconfident
    assert torch.equal(out.views["pseudo_label"][confident], logits.argmax(1)[confident])


def test_unimatch_loss_weights_the_four_terms_as_published():
    method = make("unimatch", ("unimatch.threshold=0.2",))
    labeled, unlabeled = batches()
    torch.manual_seed(3)
    out = method.step({"model": method.models["model"]}, labeled, unlabeled, PROGRESS, keep_views=True)
    s = out.scalars  # loss_s is the mean of the two strong terms: 0.25 s1 + 0.25 s2 = 0.5 loss_s
    expected = (s["loss_x"] + 0.5 * s["loss_s"] + 0.5 * s["loss_fp"]) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert s["loss_s"] > 0 and s["loss_fp"] > 0
    assert {"strong_1", "strong_2", "prediction_fp"} <= set(out.views)
    assert not torch.equal(out.views["strong_1"], out.views["strong_2"])  # two independent strong views


def test_cps_each_network_learns_from_the_others_hard_labels():
    method = make("cps", ("cps.weight=2.0",))
    labeled, unlabeled = batches()
    one, two = method.models["model"], method.models["model2"]
    assert not torch.equal(one.head.weight, two.head.weight)  # differently initialised
    torch.manual_seed(3)
    out = method.step({"model": one, "model2": two}, labeled, unlabeled, PROGRESS)
    s = out.scalars
    assert out.loss.item() == pytest.approx((s["loss_x"] + s["loss_cps"]).item(), rel=1e-6)
    out.loss.backward()
    assert one.head.weight.grad.abs().sum() > 0 and two.head.weight.grad.abs().sum() > 0
    assert [n.key for n in method.evaluated()] == ["model", "model2"]


def test_cps_follows_the_released_cutmix_loss_unless_asked_for_the_labeled_term():
    labeled, unlabeled = batches()
    losses = {}
    for term in ("false", "true"):
        method = make("cps", (f"cps.labeled_term={term}",))
        nets = {key: method.models[key] for key in ("model", "model2")}
        torch.manual_seed(3)
        losses[term] = method.step(nets, labeled, unlabeled, PROGRESS).scalars["loss_cps"]
        assert method.settings.weight == 1.0  # the released CPS+CutMix VOC weight
    # The labeled term adds two cross-entropies to the same unlabeled ones (same draws, same networks).
    assert losses["true"] > losses["false"] > 0


def test_unimatchs_two_strong_views_share_one_partner(monkeypatch):
    method = make("unimatch", ("unimatch.threshold=0.2",))
    sources = []
    real = unimatch_module.cutmix_strong_view
    monkeypatch.setattr(
        unimatch_module,
        "cutmix_strong_view",
        lambda *args: sources.append(real(*args)[1]) or real(*args),
    )
    labeled, unlabeled = batches()
    method.step({"model": method.models["model"]}, labeled, unlabeled, PROGRESS)
    assert len(sources) == 2 and torch.equal(sources[0], sources[1])


def test_confident_ratio_counts_only_the_non_padding_pixels():
    confidence = torch.tensor([[[0.99, 0.99, 0.1, 0.99]]])
    valid = torch.tensor([[[True, True, True, False]]])
    assert confident_share(confidence, 0.95, valid).item() == pytest.approx(2 / 3)


def test_augseg_learns_from_the_mixed_view_with_the_released_loss():
    method = make("augseg", ("augseg.threshold=0.2", "augseg.lambda_u=0.5"))
    labeled, unlabeled = batches()
    torch.manual_seed(3)
    out = method.step({"model": method.models["model"]}, labeled, unlabeled, PROGRESS, keep_views=True)
    s = out.scalars
    assert out.loss.item() == pytest.approx((s["loss_x"] + 0.5 * s["loss_u"]).item(), rel=1e-6)
    assert s["loss_u"] > 0 and 0 < s["image_confidence"] < 1
    assert {"weak", "intensity", "mixed", "pseudo_label"} <= set(out.views) and "rho" in out.notes
    assert [n.key for n in method.evaluated()] == ["teacher", "model"]  # the teacher reported


def test_u2pl_queues_negatives_and_its_teacher_follows_the_released_schedule():
    method = make("u2pl", ("u2pl.sup_only_epochs=1", "u2pl.num_queries=8", "model.representation=256"))
    labeled, unlabeled = batches()
    teacher, student = method.models["teacher"], method.models["model"]
    # A supervised epoch: no unsupervised terms, no EMA.
    out = method.step({"model": student}, labeled, unlabeled, Progress(0, 0, 10, 4))
    assert out.scalars["loss_u"] == 0 and out.scalars["loss_c"] == 0
    with torch.no_grad():
        student.head.weight.add_(1.0)
    method.after_step(Progress(0, 0, 10, 4))
    assert not torch.equal(teacher.head.weight, student.head.weight)
    # The first epoch after it: the teacher is the student, from before its pseudo-labels; then an EMA of its
    # parameters.
    method.step({"model": student}, labeled, unlabeled, Progress(10, 1, 10, 4))
    assert torch.equal(teacher.head.weight, student.head.weight)
    before = teacher.head.weight.clone()
    with torch.no_grad():
        student.head.weight.add_(1.0)
    method.after_step(Progress(25, 2, 10, 4))  # t = 15: decay min(1 - 1/16, 0.99) = 0.9375
    torch.testing.assert_close(teacher.head.weight, 0.9375 * before + 0.0625 * student.head.weight)
    torch.manual_seed(3)
    out = method.step({"model": student}, labeled, unlabeled, Progress(25, 2, 10, 4))
    assert out.scalars["loss_u"] > 0 and method.bank.fill.sum() > 0  # negatives were queued
    state = method.state_dict()
    fresh = make("u2pl", ("u2pl.num_queries=8", "model.representation=256"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bank.keys, method.bank.keys) and torch.equal(fresh.bank.fill, method.bank.fill)


def test_mean_teacher_is_the_imas_step_with_every_part_off():
    off = ("imas.weighting=none", "imas.adaptive=none", "imas.cutmix=fixed", "imas.pairing=random")
    labeled, unlabeled = batches()
    results = []
    for method in (make("mean_teacher"), make("imas", off)):
        torch.manual_seed(3)
        results.append(method.step({"model": method.models["model"]}, labeled, unlabeled, PROGRESS))
    assert results[0].loss.item() == results[1].loss.item()
    torch.testing.assert_close(results[0].per_image["hardness"], results[1].per_image["hardness"])


def test_supervised_step_reads_no_unlabeled_data():
    method = make("supervised")
    labeled, _ = batches()
    out = method.step({"model": method.models["model"]}, labeled, None, PROGRESS)
    assert set(out.scalars) == {"loss_x"} and not METHODS["supervised"].uses_unlabeled


# ------------------------------------------------------------------------------- CutMix and views


def test_pasted_pseudo_labels_take_the_partners_inside_the_box():
    logits = torch.randn(B, K, H, W)
    valid = torch.rand(B, H, W) > 0.2
    source = cutmix.other_image(B, torch.Generator().manual_seed(1))
    boxes = cutmix.single_boxes(B, H, W, 1.0, torch.Generator().manual_seed(2))
    confidence, label = fixmatch.pseudo_labels(logits)
    cm_conf, cm_label, cm_valid = (cutmix.paste(t, boxes, source) for t in (confidence, label, valid))
    assert torch.equal(label, logits.argmax(1))
    assert torch.equal(cm_label[boxes], label[source][boxes])
    assert torch.equal(cm_label[~boxes], label[~boxes])
    assert torch.equal(cm_valid[boxes], valid[source][boxes]) and torch.equal(
        cm_conf[~boxes], confidence[~boxes]
    )


def test_other_image_is_never_the_image_itself():
    for seed in range(20):
        source = cutmix.other_image(5, torch.Generator().manual_seed(seed))
        assert sorted(source.tolist()) == list(range(5)) and (source != torch.arange(5)).all()


def test_single_boxes_have_unimatchs_sizes_inside_the_image():
    gen = torch.Generator().manual_seed(0)
    boxes = cutmix.single_boxes(4000, 64, 64, 0.5, gen)
    area = boxes.flatten(1).float().mean(1)
    fired = area > 0
    assert 0.45 < fired.float().mean() < 0.55
    # floors of the sides and clamping only shrink a box: at most 0.4, at least ~0.02 of the image
    assert area.max() <= 0.4 and area[fired].min() >= 0.01
    rows, cols = boxes.any(2), boxes.any(1)
    # one solid rectangle per image: its area is the product of its row and column extents
    assert torch.equal(boxes.flatten(1).sum(1), rows.sum(1) * cols.sum(1))


def test_multi_box_masks_cover_about_the_drawn_area():
    masks = cutmix.multi_box_masks(2000, 64, 64, 3, (0.25, 0.5), torch.Generator().manual_seed(0))
    area = masks.flatten(1).float().mean(1)
    # overlapping boxes cancel (XOR), so the area is at most the drawn total (plus rounding)
    assert area.max() <= 0.52 and 0.2 < area.mean() < 0.4


def test_colour_strong_view_is_seeded_and_keeps_what_it_does_not_change():
    images = torch.randint(
        0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    a = augment.colour_strong_view(images, torch.Generator().manual_seed(1))
    b = augment.colour_strong_view(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == images.shape
    changed = (a != images).flatten(1).any(1).float().mean()
    assert 0.7 < changed <= 1.0  # jitter with p = 0.8, grayscale, blur: nearly every image changes
    grey = (a[:, 0] == a[:, 1]).flatten(1).all(1) & (a[:, 1] == a[:, 2]).flatten(1).all(1)
    assert 0.05 < grey.float().mean() < 0.45  # p = 0.2 (random images are never grey by chance)


def test_feature_perturbation_decodes_a_dropped_copy_of_the_features():
    torch.manual_seed(0)
    model = build_deeplabv3plus("resnet18", K, stem="standard", decoder_channels=16, backbone_width=8)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x, fp_dropout=0.5)
    clean, perturbed = out.logits, out.perturbed
    torch.testing.assert_close(
        clean, model(x).logits
    )  # in eval mode BN is per image: the clean half is unchanged
    assert perturbed.shape == clean.shape and not torch.allclose(perturbed, clean)


# ------------------------------------------------------------------------------------ bad configs


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("train:\n  method: fixmatsch\n", ["fixmatsch", "valid methods", "cps"]),
        ("train:\n  method: fixmatch\n", ["fixmatch needs an unlabeled split", "data.unlabeled_split"]),
        (
            "train:\n  method: fixmatch\ndata:\n  unlabeled_split: u.txt\nimas:\n  ema_decay: 0.99\n",
            ["section 'imas'", "this config trains fixmatch", "train.method imas"],
        ),
        ("imas:\n  threshold: 0.9\n", ["section 'imas'", "trains supervised"]),
        ("semi:\n  threshold: 0.9\n", ["'semi'", "rename it to 'imas'"]),
        (
            "train:\n  method: imas\ndata:\n  unlabeled_split: u.txt\nimas:\n  threshold: 0\n",
            ["imas.threshold", "(0, 1)"],
        ),
        (
            "train:\n  method: cps\ndata:\n  unlabeled_split: u.txt\ncps:\n  box_area: [0.5, 0.2]\n",
            ["cps.box_area", "low <= high"],
        ),
        (
            "train:\n  method: unimatch\ndata:\n  unlabeled_split: u.txt\nunimatch:\n  fp_dropout: 0\n",
            ["unimatch.fp_dropout", "(0, 1)"],
        ),
        (
            "train:\n  method: fixmatch\n  batch_size: 1\ndata:\n  unlabeled_split: u.txt\n",
            ["fixmatch needs train.batch_size >= 2", "got 1"],
        ),
        (
            "train:\n  method: cps\ndata:\n  unlabeled_split: u.txt\ncps:\n  n_boxes: 1000\n",
            ["cps.n_boxes", "at most 16"],
        ),
        (
            "train:\n  method: augseg\ndata:\n  unlabeled_split: u.txt\naugseg:\n  threshold: 1\n",
            ["augseg.threshold", "[0, 1)"],
        ),
        ("train:\n  method: u2pl\ndata:\n  unlabeled_split: u.txt\n", ["model.representation"]),
        (  # U2PL#17: two classes can never rank a class in [3, 20): the contrastive loss would stay 0
            "train:\n  method: u2pl\ndata:\n  unlabeled_split: u.txt\n  num_classes: 2\n"
            "model:\n  representation: 8\n",
            ["2 classes", "contrastive loss is 0", "u2pl.low_rank"],
        ),
        ("train:\n  method: supervised\nsupervised:\n  x: 1\n", ["supervised has no settings"]),
        ("trian:\n  epochs: 1\n", ["unknown key 'trian'", "valid keys: data, model"]),
        ("model:\n  representation: 16\n", ["model.representation 16", "supervised never trains"]),
        ("eval:\n  model: studnet\n", ["eval.model 'studnet'", "valid: teacher, student"]),
    ],
)
def test_a_config_a_method_cannot_use_is_one_sentence(tmp_path, text, needles):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_a_section_given_by_an_override_counts_and_threshold_zero_suits_fixmatch(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  method: fixmatch\ndata:\n  unlabeled_split: u.txt\n")
    assert load_experiment(path, ["fixmatch.threshold=0"]).fixmatch.threshold == 0.0
    with pytest.raises(ConfigError, match="section 'cps'"):
        load_experiment(path, ["cps.weight=6"])


@pytest.mark.parametrize("method", list(METHODS))
def test_the_reported_model_is_the_one_a_checkpoint_names(method):
    """imas-eval and imas-predict tell which network a checkpoint's best_miou belongs to from the keys it
    holds (imas.networks.reported_key), without the method's class: every method must report by that rule."""
    runner = make(method)
    ckpt = {"config": {"train": {"method": method}}} | dict.fromkeys(runner.models)
    assert runner.reported().key == reported_key(ckpt) == reported_key(dict.fromkeys(runner.models))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_step_runs_under_bf16_autocast(method):
    """Under autocast the logits come out in bf16: every loss is float32 and finite, and backward works."""
    runner = make(method, ("train.precision=bf16",))
    labeled, unlabeled = batches()
    nets = {name: runner.models[name] for name in runner.trained_keys()}
    torch.manual_seed(3)
    out = runner.step(nets, labeled, unlabeled if runner.uses_unlabeled else None, PROGRESS)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    # PS-MT's semi-supervised step trains the student only: its teachers follow by EMA (T-VAT reads their
    # decoders without a gradient to them).
    trains = {"model"} if method == "ps_mt" else set(nets)
    for name, net in nets.items():
        assert all((p.grad is not None) == (name in trains) for p in net.parameters()), name


def test_u2pls_corrected_contrastive_variant_trains_too():
    """`u2pl.contrastive: corrected` (a per-image one-hot, the paper's negatives, each class's own queue)."""
    opts = ("u2pl.sup_only_epochs=0", "u2pl.contrastive=corrected", "model.representation=256")
    method = make("u2pl", opts)
    labeled, unlabeled = batches()
    student = method.models["model"]
    for iteration in range(3):
        torch.manual_seed(iteration)
        out = method.step({"model": student}, labeled, unlabeled, Progress(iteration, 1, 10, 4))
        assert torch.isfinite(out.loss)
    out.loss.backward()
    assert student.rep.weight.grad is not None and method.bank.fill.sum() > 0
