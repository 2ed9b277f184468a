"""Instance hardness (method.md §2): the batched device version against a per-image NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imas.hardness import easiness, hardness_terms, instance_hardness


def reference_easiness(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tau: float,
    class_weighted: bool,
    ignore_class0: bool,
) -> np.ndarray:
    """method.md §2 written out image by image, class by class, in float64 NumPy.

    The class-0 exclusion acts on the class weights only: the unweighted mean runs over every class present
    in either map, class 0 included, as in the released code."""
    p_s = student_logits.double().softmax(1).numpy()
    p_t = teacher_logits.double().softmax(1).numpy()
    b, k = p_s.shape[:2]
    out = np.zeros(b)
    for i in range(b):
        ys, yt = p_s[i].argmax(0), p_t[i].argmax(0)
        rho_s = np.mean(p_s[i].max(0) >= tau)
        rho_t = np.mean(p_t[i].max(0) >= tau)
        classes = range(1 if ignore_class0 else 0, k)
        iou = {}
        for c in range(k):
            ns, nt = np.sum(ys == c), np.sum(yt == c)
            inter = np.sum((ys == c) & (yt == c))
            if ns + nt > 0:  # absent from both maps: no IoU at all
                iou[c] = inter / (ns + nt - inter)
        if class_weighted:
            n_t = {c: np.sum(yt == c) for c in classes}
            n_s = {c: np.sum(ys == c) for c in classes}
            tot_t, tot_s = sum(n_t.values()), sum(n_s.values())
            wiou_t = sum(n_t[c] / tot_t * iou[c] for c in classes if n_t[c]) if tot_t else 0.0
            wiou_s = sum(n_s[c] / tot_s * iou[c] for c in classes if n_s[c]) if tot_s else 0.0
        else:
            present = [iou[c] for c in range(k) if c in iou]
            wiou_t = wiou_s = float(np.mean(present)) if present else 0.0
        out[i] = 0.5 * (rho_t * wiou_t + rho_s * wiou_s)
    return out


def correlated_logits(seed: int, b: int, k: int, h: int = 12, w: int = 10):
    """Teacher and a noisy student, both sharp enough that some pixels pass τ and the maps partly agree."""
    gen = torch.Generator().manual_seed(seed)
    teacher = 4 * torch.randn(b, k, h, w, generator=gen)
    student = teacher + 3 * torch.randn(b, k, h, w, generator=gen)
    return student, teacher


@pytest.mark.parametrize("b,k", [(1, 2), (3, 5), (4, 21)])
@pytest.mark.parametrize("class_weighted", [True, False])
@pytest.mark.parametrize("ignore_class0", [True, False])
def test_matches_per_image_reference(b, k, class_weighted, ignore_class0):
    student, teacher = correlated_logits(b * 100 + k, b, k)
    tau = 0.8
    got = easiness(student, teacher, tau, class_weighted, ignore_class0)
    expected = reference_easiness(student, teacher, tau, class_weighted, ignore_class0)
    assert got.dtype == torch.float32 and got.shape == (b,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)
    gamma = instance_hardness(student, teacher, tau, class_weighted, ignore_class0)
    np.testing.assert_allclose(gamma.numpy(), 1 - expected, atol=1e-5, rtol=0)
    assert torch.isfinite(gamma).all() and (gamma >= 0).all() and (gamma <= 1).all()


def one_hot_logits(label: torch.Tensor, k: int, scale: float = 20.0) -> torch.Tensor:
    """Confident logits whose argmax is `label`: [B, H, W] → [B, K, H, W]."""
    return scale * torch.nn.functional.one_hot(label, k).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("class_weighted", [True, False])
def test_class_absent_from_both_maps_contributes_nothing(class_weighted):
    # Classes 0..3 exist, class 2 appears in neither map; with 5 classes, class 4 is absent too.
    gen = torch.Generator().manual_seed(7)
    choices = torch.tensor([0, 1, 3])
    ys = choices[torch.randint(0, 3, (2, 8, 8), generator=gen)]
    yt = choices[torch.randint(0, 3, (2, 8, 8), generator=gen)]
    for k in (4, 5):
        s, t = one_hot_logits(ys, k), one_hot_logits(yt, k)
        got = easiness(s, t, 0.9, class_weighted)
        np.testing.assert_allclose(
            got.numpy(), reference_easiness(s, t, 0.9, class_weighted, True), atol=1e-5, rtol=0
        )
    # Adding never-predicted classes changes nothing.
    e4 = easiness(one_hot_logits(ys, 4), one_hot_logits(yt, 4), 0.9, class_weighted)
    e9 = easiness(one_hot_logits(ys, 9), one_hot_logits(yt, 9), 0.9, class_weighted)
    torch.testing.assert_close(e4, e9, atol=1e-6, rtol=0)


def test_only_class0_gives_zero_easiness_when_weighted():
    zeros = torch.zeros(3, 6, 7, dtype=torch.long)
    logits = one_hot_logits(zeros, 4)
    e = easiness(logits, logits, 0.95, class_weighted=True, ignore_class0=True)
    assert torch.equal(e, torch.zeros(3))
    assert torch.equal(instance_hardness(logits, logits, 0.95, class_weighted=True), torch.ones(3))
    # Without the exclusion, class 0 is a perfect match.
    torch.testing.assert_close(
        easiness(logits, logits, 0.95, class_weighted=True, ignore_class0=False), torch.ones(3)
    )


@pytest.mark.parametrize("ignore_class0", [True, False])
def test_unweighted_iou_counts_class0_whatever_the_flag(ignore_class0):
    # Student: class 0 on the left half, class 1 on the right; teacher: class 0 everywhere but one column.
    # IoU_0 = 8 / 12 and IoU_1 = 4 / 8: the released mean is 7/12 with or without the flag (dropping class 0
    # would give 0.5).
    label_s = torch.zeros(1, 4, 4, dtype=torch.long)
    label_s[..., 2:] = 1
    label_t = torch.zeros(1, 4, 4, dtype=torch.long)
    label_t[..., 3] = 1
    terms = hardness_terms(
        one_hot_logits(label_s, 3), one_hot_logits(label_t, 3), 0.9, False, ignore_class0=ignore_class0
    )
    assert terms.wiou_teacher.item() == pytest.approx(7 / 12)
    assert terms.wiou_student.item() == pytest.approx(7 / 12)
    # Equal maps of class 0 alone are a perfect match in the unweighted variant.
    zeros = one_hot_logits(torch.zeros(2, 5, 5, dtype=torch.long), 4)
    torch.testing.assert_close(easiness(zeros, zeros, 0.95, False, ignore_class0), torch.ones(2))


def test_only_class0_on_one_side_weights_that_side_zero():
    label_s = torch.zeros(1, 4, 4, dtype=torch.long)
    label_t = torch.ones(1, 4, 4, dtype=torch.long)
    terms = hardness_terms(one_hot_logits(label_s, 3), one_hot_logits(label_t, 3), 0.9)
    assert terms.wiou_student.item() == 0.0  # only class 0 on the student side: all weights zero
    assert terms.wiou_teacher.item() == 0.0  # class 1 has IoU 0
    assert torch.isfinite(terms.easiness).all()


@pytest.mark.parametrize("class_weighted", [True, False])
def test_equal_confident_maps_are_easy(class_weighted):
    gen = torch.Generator().manual_seed(3)
    label = torch.randint(0, 6, (4, 16, 16), generator=gen)
    label[:, 0, 0] = 1  # at least one non-zero class per image
    logits = one_hot_logits(label, 6)
    gamma = instance_hardness(logits, logits.clone(), 0.95, class_weighted)
    torch.testing.assert_close(gamma, torch.zeros(4), atol=1e-6, rtol=0)
    terms = hardness_terms(logits, logits, 0.95, class_weighted)
    assert torch.equal(terms.rho_teacher, torch.ones(4)) and torch.equal(terms.rho_student, torch.ones(4))


def test_half_precision_logits_are_computed_in_float32():
    student, teacher = correlated_logits(11, 2, 5)
    got = easiness(student.bfloat16(), teacher.bfloat16(), 0.8)
    expected = reference_easiness(student.bfloat16().float(), teacher.bfloat16().float(), 0.8, True, True)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


def test_no_gradient_and_inputs_untouched():
    student, teacher = correlated_logits(5, 2, 4)
    student.requires_grad_(True)
    before = student.detach().clone(), teacher.clone()
    gamma = instance_hardness(student, teacher, 0.7)
    assert not gamma.requires_grad
    assert torch.equal(student.detach(), before[0]) and torch.equal(teacher, before[1])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        instance_hardness(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4), 0.9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_without_host_sync():
    """On CUDA the whole batch is computed on the device with no host synchronisation,
    and gives the CPU's numbers."""
    student = torch.randn(4, 21, 65, 65)
    teacher = student + torch.randn_like(student)
    expected = instance_hardness(student, teacher, 0.95)
    s, t = student.cuda(), teacher.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        result = instance_hardness(s, t, 0.95)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.device.type == "cuda"
    torch.testing.assert_close(result.cpu(), expected, atol=1e-5, rtol=0)
