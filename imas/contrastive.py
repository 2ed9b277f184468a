"""U2PL's tensor maths (Wang et al., CVPR 2022): the entropy split of pseudo-labels and its schedule, the
entropy-filtered unsupervised loss, a per-class queue of negative keys and the pixel contrastive loss.

The defaults are the released code's behaviour (train_semi.py, u2pl/utils/loss_helper.py and
u2pl/utils/utils.py of the authors' repository), including where it departs from the paper; every departure
has a named option that gives the paper's reading instead:

- `label_onehot(mode="released")` reproduces the released one-hot: it writes every image's classes into the
  *first* image of the batch (a per-pixel union) and leaves the other images empty; "per_image" is a true
  one-hot.
- `negative_candidates(rule="released")` keeps a pixel as a negative of class c only where its (one-hot)
  label *is* c, which empties the labeled half entirely; "paper" takes labeled pixels not of class c whose
  rank of c is below low_rank, and unlabeled high-entropy pixels whose rank of c is in [low_rank, high_rank).
- `contrastive_loss(pairing="released")` pairs the anchors and prototype of class t with the queue of the
  t-th class present in the batch; "matched" uses class t's own queue.
With the released one-hot, released negatives are the first image's high-entropy pixels where *another*
image has class c and the teacher ranks c in [low_rank, high_rank); a per-image one-hot under the released
rule leaves almost no negatives at all (a pixel whose label is c ranks c first), so "per_image" goes with
rule "paper".

The per-step functions never read a device value back to the host (no .item(), no boolean-mask indexing,
no shape that depends on data): masked percentiles sort on the device, samples are drawn with torch's global
RNG for the tensors' device, and the queue is a ring buffer per class whose enqueue costs O(queue size)
rather than a data-dependent gather. Losses compute in float32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255

# Released defaults (experiments/pascal/1464/ours/config.yaml and experiments/cityscapes/744/ours/
# config.yaml agree on all of them; train_semi.py builds the queues).
DROP_PERCENT = 80.0  # trainer.unsupervised.drop_percent: α0 = 100 − 80 = 20 % of pixels unreliable
LOW_ENTROPY_THRESHOLD = 20.0  # trainer.contrastive.low_entropy_threshold: α0 of the contrastive split
LOW_RANK = 3
HIGH_RANK = 20
ANCHOR_THRESHOLD = 0.3  # current_class_threshold (δp)
NEGATIVE_THRESHOLD = 1.0  # current_class_negative_threshold: p < 1 keeps every pixel
NUM_QUERIES = 256
NUM_NEGATIVES = 50
TEMPERATURE = 0.5
FEATURE_DIM = 256
QUEUE_SIZE = 30000
QUEUE_SIZE_CLASS0 = 50000  # class 0 whatever the dataset (background on VOC, road on Cityscapes)
ENTROPY_EPS = 1e-10  # −Σ p·log(p + 1e-10), as released
COSINE_EPS = 1e-8  # torch.cosine_similarity's default

OneHotMode = Literal["released", "per_image"]
NegativeRule = Literal["released", "paper"]
Pairing = Literal["released", "matched"]


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")


# ------------------------------------------------------------------------------------------- schedule


def unreliable_percent(epoch: float, epochs: int, alpha0: float = LOW_ENTROPY_THRESHOLD) -> float:
    """α_t = α0·(1 − epoch / epochs), in percent: the share of pixels called unreliable at this epoch.

    epoch is the released 0-based epoch index (constant within an epoch); a fractional epoch gives a
    per-iteration schedule instead. The contrastive split takes anchors below the α_t percentile of entropy
    and negatives above the (100 − α_t) percentile.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    return alpha0 * (1.0 - epoch / epochs)


def drop_percentile(epoch: float, epochs: int, drop_percent: float = DROP_PERCENT) -> float:
    """The entropy percentile above which the unsupervised loss drops pixels: 100 − (100 − drop)·(1 − t/T).

    Released default drop_percent 80: 80 at epoch 0, rising linearly towards 100 (99.75 at epoch 79 of 80).
    """
    return 100.0 - unreliable_percent(epoch, epochs, 100.0 - drop_percent)


# -------------------------------------------------------------------------------- entropy and percentile


def pixel_entropy(prob: torch.Tensor) -> torch.Tensor:
    """−Σ_k p·log(p + 1e-10) over classes: prob [B, K, H, W] → float32 [B, H, W]."""
    prob = prob.float()
    return -(prob * torch.log(prob + ENTROPY_EPS)).sum(dim=1)


def masked_percentile(values: torch.Tensor, mask: torch.Tensor, q: float | Sequence[float]) -> torch.Tensor:
    """numpy.percentile(values[mask], q) with its default linear interpolation, without a host sync.

    values, mask: same shape (mask bool). q in [0, 100], one number → 0-d tensor, a sequence → [len(q)].
    The masked-out values are sorted past the end as +inf, and the count of kept values stays on the device.
    Float64 result (numpy's interpolation); NaN when the mask is empty (every comparison with it is False).
    """
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    single = isinstance(q, (int, float))
    q_list = [float(q)] if single else [float(v) for v in q]
    if any(not 0.0 <= v <= 100.0 for v in q_list):  # host values: checking them costs no device sync
        raise ValueError(f"percentiles must lie in [0, 100], got {q}")
    keep = mask.flatten().bool()
    ordered = values.detach().flatten().masked_fill(~keep, float("inf")).sort().values
    n = keep.sum()
    last = (n - 1).clamp(min=0)
    results = []
    for v in q_list:  # q enters as a Python number: no host-to-device copy
        pos = last.double() * (v / 100.0)
        lo = pos.floor().long()
        hi = torch.minimum(lo + 1, last)
        t = pos - lo
        # gather, not ordered[lo]: indexing with a 0-d tensor reads it back to the host
        a, b = ordered.gather(0, lo.view(1))[0].double(), ordered.gather(0, hi.view(1))[0].double()
        # numpy's _lerp: from the nearer end, so t = 1 gives b exactly.
        results.append(torch.where(t < 0.5, a + (b - a) * t, b - (b - a) * (1 - t)))
    result = torch.stack(results).masked_fill(n == 0, float("nan"))
    return result[0] if single else result


def entropy_split(
    entropy: torch.Tensor, valid: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrastive split of unlabeled pixels (train_semi.py): (low, high), both bool like `entropy`.

    entropy, valid: [B, H, W] (valid: pseudo-label ≠ 255). The percentiles are taken over every valid
    pixel of the batch together (one threshold pair per step, not per image):
    low = valid ∧ entropy ≤ pct(α), anchor candidates; high = valid ∧ entropy ≥ pct(100 − α), negative
    candidates. α = `unreliable_percent(epoch, epochs)`.
    """
    low_t, high_t = masked_percentile(entropy, valid, [alpha, 100.0 - alpha]).to(entropy.dtype)
    valid = valid.bool()
    return valid & (entropy <= low_t), valid & (entropy >= high_t)


def reliable_mask(entropy: torch.Tensor, valid: torch.Tensor, percentile: float) -> torch.Tensor:
    """Pixels the unsupervised loss keeps: valid ∧ entropy < pct(percentile), over the whole batch.

    compute_unsupervised_loss drops entropy ≥ threshold (so a pixel at the threshold is dropped).
    percentile = `drop_percentile(epoch, epochs)`. entropy, valid: [B, H, W] → bool [B, H, W].
    """
    threshold = masked_percentile(entropy, valid, percentile).to(entropy.dtype)
    valid = valid.bool()
    return valid & ~(entropy >= threshold)


def reliable_pseudo_label_loss(
    logits: torch.Tensor, pseudo_label: torch.Tensor, entropy: torch.Tensor, percentile: float
) -> torch.Tensor:
    """U2PL's unsupervised loss (compute_unsupervised_loss), float32 scalar.

    logits: student [B, K, H, W] at label size; pseudo_label: [B, H, W] (255 = none); entropy: [B, H, W],
    the teacher's (`pixel_entropy`); percentile: `drop_percentile(epoch, epochs)`.
    With m the kept pixels (`reliable_mask`) and n = |m|, the released value is
    (B·H·W / n) · mean_m CE = B·H·W · Σ_m CE / n²: a plain masked mean scaled by 1 / (kept fraction).
    0 (attached to the graph) when nothing is kept, where the released code gives NaN.
    """
    b, _, h, w = logits.shape
    if pseudo_label.shape != (b, h, w) or entropy.shape != (b, h, w):
        raise ValueError(
            f"expected pseudo_label and entropy [B, H, W] = {(b, h, w)}, got {tuple(pseudo_label.shape)} and "
            f"{tuple(entropy.shape)}"
        )
    kept = reliable_mask(entropy.detach(), pseudo_label != IGNORE_INDEX, percentile)
    target = pseudo_label.long().masked_fill(~kept, 0)  # any class: CE at dropped pixels is masked out
    nll = F.cross_entropy(logits.float(), target, reduction="none")
    n = kept.sum().clamp(min=1).float()
    return (nll * kept.float()).sum() * (b * h * w) / (n * n)


# ------------------------------------------------------------------------------- one-hot, downsampling


def label_onehot(labels: torch.Tensor, num_classes: int, mode: OneHotMode = "released") -> torch.Tensor:
    """Class masks of integer labels: labels [B, H, W] (255 = ignore) → bool [B, K, H, W].

    "per_image": a true one-hot; an ignored pixel has no class.
    "released" (u2pl/utils/utils.py label_onehot, measured): its scatter writes the class of *every* image's
    pixel into image 0, so out[0, k, p] = (image 0 is not ignored at p) ∧ (some image has class k at p, or
    k = 0 and some image is ignored at p: ignored pixels are first set to 0); out[1:] is all False. On one
    image the two modes agree.
    """
    _check_choice("one-hot mode", mode, ("released", "per_image"))
    if labels.dim() != 3:
        raise ValueError(f"expected labels [B, H, W], got {tuple(labels.shape)}")
    labels = labels.long()
    ignored = labels == IGNORE_INDEX
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    # Ignored pixels become class 0 first, as released; per_image then clears them.
    onehot = labels.masked_fill(ignored, 0).unsqueeze(1) == classes
    if mode == "per_image":
        return onehot & ~ignored.unsqueeze(1)
    first = onehot.any(dim=0, keepdim=True) & ~ignored[:1].unsqueeze(1)  # [1, K, H, W]
    return torch.cat([first, torch.zeros_like(onehot[1:])])


def nearest_downsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """F.interpolate(mode="nearest") of a [B, H, W] label or mask, keeping its dtype: → [B, h, w].

    The released code resizes labels, one-hots and masks to the prediction size this way (legacy
    "nearest": source index ⌊i·H/h⌋). Labels ≤ 255 are exact in float32.
    """
    out = F.interpolate(x.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1)
    return out.bool() if x.dtype == torch.bool else out.to(x.dtype)


def contrastive_targets(
    label_l: torch.Tensor,
    pseudo_label_u: torch.Tensor,
    low_u: torch.Tensor,
    high_u: torch.Tensor,
    size: tuple[int, int] | torch.Size,
    num_classes: int,
    onehot: OneHotMode = "released",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive loss's class masks and pixel masks at feature size, labeled images first.

    label_l: [B_l, H, W] ground truth; pseudo_label_u: [B_u, H, W] (after CutMix); low_u, high_u: bool
    [B_u, H, W] from `entropy_split`; size: the feature map's (h, w).
    Returns onehot bool [B_l + B_u, K, h, w] (`label_onehot` of each half separately, as released), low and
    high bool [B_l + B_u, h, w]: labeled rows are (label ≠ 255) in both, unlabeled rows low_u / high_u.
    Resizing labels before the one-hot equals the released one-hot-then-resize: nearest picks one source
    pixel for every channel and image.
    """
    lab_l = nearest_downsample(label_l, size)
    lab_u = nearest_downsample(pseudo_label_u, size)
    onehot_all = torch.cat(
        [label_onehot(lab_l, num_classes, onehot), label_onehot(lab_u, num_classes, onehot)]
    )
    valid_l = lab_l != IGNORE_INDEX
    low = torch.cat([valid_l, nearest_downsample(low_u.bool(), size)])
    high = torch.cat([valid_l, nearest_downsample(high_u.bool(), size)])
    return onehot_all, low, high


# ----------------------------------------------------------------------------------------- the queue


def released_queue_sizes(num_classes: int) -> list[int]:
    """train_semi.py: 30000 keys per class, 50000 for class 0."""
    return [QUEUE_SIZE_CLASS0] + [QUEUE_SIZE] * (num_classes - 1)


class NegativeBank:
    """Per-class FIFO queues of negative keys (the released memobank), as ring buffers in one tensor.

    keys: [Σ sizes, D], class c's ring in rows [offset_c, offset_c + size_c); ptr [K] (next row to write,
    within the ring) and fill [K] (rows holding keys) are int64 device tensors, so nothing here reads a value
    back to the host. The released dequeue_and_enqueue appends the new keys and keeps the last size_c; the
    ring keeps the same set (its order differs, which uniform sampling cannot see). Its queues live on the
    CPU and are copied to the GPU every step; these stay on the keys' device.

    state_dict() / load_state_dict(): plain tensors only, so a checkpoint loads with weights_only=True.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        dim: int = FEATURE_DIM,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"every queue needs a positive size, got {list(sizes)}")
        self.offsets = tuple(sum(self.sizes[:c]) for c in range(len(self.sizes)))
        # One row past the rings takes the writes of keys that land nowhere (`_enqueue_scattered`).
        self._rows = torch.zeros(sum(self.sizes) + 1, dim, device=device, dtype=dtype)
        self.keys = self._rows[:-1]
        self.ptr = torch.zeros(len(self.sizes), dtype=torch.long, device=self.keys.device)
        self.fill = torch.zeros_like(self.ptr)
        self._sizes_t = torch.tensor(self.sizes, dtype=torch.long, device=self.keys.device)
        self._offsets_t = torch.tensor(self.offsets, dtype=torch.long, device=self.keys.device)

    @classmethod
    def released(
        cls,
        num_classes: int,
        dim: int = FEATURE_DIM,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NegativeBank:
        """The released sizes (`released_queue_sizes`): 666 MB of float32 keys for 21 classes of 256-d keys,
        604 MB for 19."""
        return cls(released_queue_sizes(num_classes), dim, device, dtype)

    @property
    def num_classes(self) -> int:
        return len(self.sizes)

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    def to(self, device: torch.device | str) -> NegativeBank:
        """Move every tensor (in place) and return self."""
        for name in ("_rows", "ptr", "fill", "_sizes_t", "_offsets_t"):
            setattr(self, name, getattr(self, name).to(device))
        self.keys = self._rows[:-1]
        return self

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Push keys[n] onto the queue of every class c with mask[c, n]: keys [N, D], mask bool [K, N].

        Per class the selected keys go in pixel order, and a queue keeps its newest size_c keys (so of more
        than size_c new keys only the last size_c stay). Returns the number of selected keys per class,
        int64 [K] (what the released function returns per call). Sync-free, with whichever of two equal
        ways costs less for these shapes: scattering the K · N (class, key) pairs, or rewriting every ring
        row (O(Σ sizes · D) whatever the count).
        With several processes, gather keys and mask from all of them first (their shapes are fixed, so
        all_gather_into_tensor works): the released queues receive every GPU's keys.
        """
        k, n = mask.shape
        if k != self.num_classes or keys.shape != (n, self.dim):
            raise ValueError(
                f"expected keys [N, {self.dim}] and mask [{self.num_classes}, N], got "
                f"{tuple(keys.shape)} and {tuple(mask.shape)}"
            )
        mask = mask.to(self.keys.device).bool()
        counts = mask.sum(dim=1)
        if n == 0:
            return counts
        keys = keys.detach().to(self.keys.device, self.keys.dtype)
        if k * n < self.keys.shape[0]:  # fewer (class, key) pairs than ring rows: write only the new keys
            self._enqueue_scattered(keys, mask, counts)
        else:
            self._enqueue_rewritten(keys, mask, counts)
        self.ptr.copy_((self.ptr + counts) % self._sizes_t)
        self.fill.copy_(torch.minimum(self.fill + counts, self._sizes_t))
        return counts

    def _enqueue_scattered(self, keys: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> None:
        """O(K · N · D): new key r of class c goes to ring row (ptr_c + r) mod size_c; the keys a full ring
        would drop at once (r < count_c − size_c) and the unselected pairs go to the spare row."""
        k, n = mask.shape
        rank = mask.cumsum(dim=1) - 1  # [K, N]: the key's number among class c's new keys
        first = (counts - counts.clamp(max=self._sizes_t)).unsqueeze(1)
        row = self._offsets_t.unsqueeze(1) + (self.ptr.unsqueeze(1) + rank) % self._sizes_t.unsqueeze(1)
        target = torch.where(mask & (rank >= first), row, self.keys.shape[0])
        self._rows.index_copy_(
            0, target.flatten(), keys.unsqueeze(0).expand(k, n, -1).reshape(k * n, self.dim)
        )

    def _enqueue_rewritten(self, keys: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> None:
        """O(Σ sizes · D): every ring row is rewritten from its old key or the new key that lands on it (the
        cheaper way when a step brings more (class, key) pairs than the rings hold rows)."""
        n = mask.shape[1]
        ranks = mask.cumsum(dim=1)  # [K, N]: ranks[c, j] = selected keys of class c among the first j + 1
        rows = torch.arange(max(self.sizes), device=self.keys.device)
        for c, (offset, size) in enumerate(zip(self.offsets, self.sizes)):
            count, ptr = counts[c], self.ptr[c]
            first = count - count.clamp(max=size)  # the earliest new key that survives
            # Row s receives new key number r with r ≡ s − ptr (mod size), first ≤ r < count (one at most).
            r = first + ((rows[:size] - ptr) % size - first) % size
            lands = r < count
            src = torch.searchsorted(ranks[c], r + 1).clamp_(max=n - 1)
            ring = self.keys[offset : offset + size]
            ring.copy_(torch.where(lands.unsqueeze(1), keys[src], ring))

    def sample(self, classes: torch.Tensor, num: int) -> torch.Tensor:
        """num keys per entry of classes [T], uniform with replacement over that queue: → float32 [T, num, D].

        An empty queue yields whatever its rows hold (zeros until written); callers mask such entries out
        with `fill[classes] > 0`. Draws from torch's global RNG on the keys' device.
        """
        classes = classes.to(self.keys.device).long()
        fill = self.fill[classes].clamp(min=1).unsqueeze(1)
        # Integers below 2^62 reduced modulo the fill: uniform up to a bias of fill / 2^62.
        draw = torch.randint(0, 2**62, (classes.numel(), num), device=self.keys.device) % fill
        return self.keys[self._offsets_t[classes].unsqueeze(1) + draw].float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{"keys": [Σ sizes, D], "ptr": [K], "fill": [K], "sizes": [K]} (references, like nn.Module's)."""
        return {"keys": self.keys, "ptr": self.ptr, "fill": self.fill, "sizes": self._sizes_t}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a `state_dict()` in; the sizes and key width must match this bank's."""
        sizes = tuple(int(s) for s in state["sizes"].tolist())
        if sizes != self.sizes or tuple(state["keys"].shape) != tuple(self.keys.shape):
            raise ValueError(
                f"queue state for sizes {list(sizes)} and keys {tuple(state['keys'].shape)} does not fit "
                f"this bank (sizes {list(self.sizes)}, keys {tuple(self.keys.shape)})"
            )
        self.keys.copy_(state["keys"])
        self.ptr.copy_(state["ptr"])
        self.fill.copy_(state["fill"])


# ------------------------------------------------------------------------------------- selection rules


def class_ranks(prob: torch.Tensor) -> torch.Tensor:
    """Rank of each class in each pixel's descending sort: prob [B, K, ...] → int64, same shape (0 = top).

    Ties fall as torch.sort leaves them, as in the released torch.sort(prob, 1, True).
    """
    order = prob.sort(dim=1, descending=True).indices
    k = prob.shape[1]
    positions = torch.arange(k, device=prob.device).view(1, k, *([1] * (prob.dim() - 2))).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _row_is_labeled(b: int, num_labeled: int, device: torch.device) -> torch.Tensor:
    if not 0 <= num_labeled <= b:
        raise ValueError(f"num_labeled {num_labeled} outside [0, {b}]")
    return (torch.arange(b, device=device) < num_labeled).view(b, 1, 1, 1)


def negative_candidates(
    prob: torch.Tensor,
    onehot: torch.Tensor,
    high: torch.Tensor,
    num_labeled: int,
    low_rank: int = LOW_RANK,
    high_rank: int = HIGH_RANK,
    negative_threshold: float = NEGATIVE_THRESHOLD,
    rule: NegativeRule = "released",
) -> torch.Tensor:
    """Which pixels enter class c's queue: bool [B, K, h, w] (labeled images first).

    prob: teacher probabilities [B, K, h, w]; onehot: bool [B, K, h, w] and high: bool [B, h, w] from
    `contrastive_targets`; O(c): `class_ranks`. Both rules also need prob[c] < negative_threshold.
    "released" (compute_contra_memobank_loss): onehot[c] ∧ high ∧ (labeled: O(c) < low_rank ∧ ¬onehot[c];
      unlabeled: low_rank ≤ O(c) < high_rank). The labeled part can never hold (onehot[c] ∧ ¬onehot[c]).
    "paper": labeled: high (= label valid) ∧ ¬onehot[c] ∧ O(c) < low_rank; unlabeled: high (high entropy)
      ∧ low_rank ≤ O(c) < high_rank.
    """
    _check_choice("negative rule", rule, ("released", "paper"))
    rank = class_ranks(prob.detach())
    onehot = onehot.bool()
    high = high.bool().unsqueeze(1)
    labeled = _row_is_labeled(prob.shape[0], num_labeled, prob.device)
    top = rank < low_rank
    middle = (rank >= low_rank) & (rank < high_rank)
    candidate = torch.where(labeled, top & ~onehot, middle) & high & (prob.detach() < negative_threshold)
    return candidate & onehot if rule == "released" else candidate


def contrastive_problem(
    num_classes: int, low_rank: int = LOW_RANK, high_rank: int = HIGH_RANK, rule: NegativeRule = "released"
) -> str | None:
    """A one-sentence reason why the contrastive loss would be 0 at every step, or None if it can work.

    The cause is static, so a configuration check can refuse it before training: under the released rule
    only unlabeled pixels whose rank of c lies in [low_rank, min(high_rank, K)) become negatives, so with
    K ≤ low_rank (e.g. 2 classes and the released low_rank 3) every queue stays empty and every class's term
    is skipped. The paper's rule also draws labeled negatives (ranks below low_rank), so it only needs K ≥ 2.
    """
    _check_choice("negative rule", rule, ("released", "paper"))
    if num_classes < 2:
        return f"the contrastive loss needs at least 2 classes to contrast, got {num_classes}"
    unlabeled_possible = low_rank < min(high_rank, num_classes)
    labeled_possible = rule == "paper" and low_rank >= 1
    if unlabeled_possible or labeled_possible:
        return None
    return (
        f"with {num_classes} classes no pixel can rank a class in [low_rank, high_rank) = [{low_rank}, "
        f"{high_rank}), so no negative key is ever queued and the contrastive loss is 0 at every step; "
        f"set low_rank below {min(high_rank, num_classes)} (e.g. 1 for 2 classes)"
    )


# ------------------------------------------------------------------------------------- contrastive loss


class ContrastiveOutput(NamedTuple):
    """loss: float32 scalar. terms: int64 scalar, classes whose term entered the sum. present: int64 scalar,
    classes with an anchor candidate (the released divisor; the loss is 0 below 2). new_keys: int64 [K], keys
    queued per class this step. All on the device: read them only when logging."""

    loss: torch.Tensor
    terms: torch.Tensor
    present: torch.Tensor
    new_keys: torch.Tensor


def _sample_indices(mask: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """num column indices per row of mask [K, N], uniform with replacement among its True entries.

    → (indices int64 [K, num], count int64 [K]); a row without any True gets index 0 (masked by callers).
    """
    ranks = mask.cumsum(dim=1)
    count = ranks[:, -1]
    draw = torch.randint(0, 2**62, (mask.shape[0], num), device=mask.device)
    draw = draw % count.clamp(min=1).unsqueeze(1)
    return torch.searchsorted(ranks, draw + 1).clamp_(max=mask.shape[1] - 1), count


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """x / max(‖x‖, 1e-8) along the last dim, as torch.cosine_similarity normalises each side."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)


def contrastive_loss(
    rep: torch.Tensor,
    rep_teacher: torch.Tensor,
    prob: torch.Tensor,
    onehot: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    num_labeled: int,
    bank: NegativeBank,
    *,
    low_rank: int = LOW_RANK,
    high_rank: int = HIGH_RANK,
    anchor_threshold: float = ANCHOR_THRESHOLD,
    negative_threshold: float = NEGATIVE_THRESHOLD,
    num_queries: int = NUM_QUERIES,
    num_negatives: int = NUM_NEGATIVES,
    temperature: float = TEMPERATURE,
    rule: NegativeRule = "released",
    pairing: Pairing = "released",
) -> ContrastiveOutput:
    """U2PL's pixel contrastive loss with the negative queue (compute_contra_memobank_loss), in its order.

    rep: student representations [B, D, h, w] (gradient flows here only); rep_teacher: the teacher's on the
    same images [B, D, h, w]; prob: teacher probabilities [B, K, h, w]; onehot, low, high: from
    `contrastive_targets` (labeled images first, num_labeled of them); bank: the queues, updated in place.
    1. Queue: teacher features of `negative_candidates(rule)` are pushed onto each class's queue *before*
       sampling, so this step's keys can be drawn.
    2. For class c: candidates = onehot[c] ∧ low (valid labeled pixels, low-entropy unlabeled ones); present
       = any candidate; anchors = candidates with prob[c] > anchor_threshold; positive = the mean teacher
       feature over the candidates (not only the anchors), one prototype shared by every query.
    3. Term t (t < K): num_queries anchors of class t drawn with replacement from the student's features,
       num_negatives keys each from a queue: the t-th present class's ("released") or class t's
       ("matched"); logits = cosine(anchor, [positive, negatives]) / temperature, CE towards the positive,
       mean over queries. A term counts if class t has anchors and its queue holds keys (and, released,
       t < present).
    4. loss = Σ counted terms / present; 0 if present < 2. Always attached to rep's graph.
    """
    _check_choice("pairing", pairing, ("released", "matched"))
    b, d, h, w = rep.shape
    k = prob.shape[1]
    if rep_teacher.shape != rep.shape or prob.shape != (b, k, h, w) or onehot.shape != (b, k, h, w):
        raise ValueError(
            f"expected rep and rep_teacher [B, D, h, w], prob and onehot [B, K, h, w]; got "
            f"{tuple(rep.shape)}, {tuple(rep_teacher.shape)}, {tuple(prob.shape)}, {tuple(onehot.shape)}"
        )
    if low.shape != (b, h, w) or high.shape != (b, h, w):
        raise ValueError(
            f"expected low and high [B, h, w] = {(b, h, w)}, got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    if bank.num_classes != k or bank.dim != d:
        raise ValueError(
            f"the bank holds {bank.num_classes} classes of {bank.dim}-d keys, the inputs have {k} of {d}"
        )
    # float32 throughout, also inside the caller's autocast: prototypes are means over many pixels.
    with torch.autocast(rep.device.type, enabled=False):
        return _contrastive_loss(
            rep,
            rep_teacher,
            prob.detach().float(),
            onehot.bool(),
            low.bool(),
            high.bool(),
            num_labeled,
            bank,
            low_rank,
            high_rank,
            anchor_threshold,
            negative_threshold,
            num_queries,
            num_negatives,
            temperature,
            rule,
            pairing,
        )


def _contrastive_loss(
    rep: torch.Tensor,
    rep_teacher: torch.Tensor,
    prob: torch.Tensor,
    onehot: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    num_labeled: int,
    bank: NegativeBank,
    low_rank: int,
    high_rank: int,
    anchor_threshold: float,
    negative_threshold: float,
    num_queries: int,
    num_negatives: int,
    temperature: float,
    rule: NegativeRule,
    pairing: Pairing,
) -> ContrastiveOutput:
    """`contrastive_loss` after its checks, outside autocast."""
    b, d, h, w = rep.shape
    k = prob.shape[1]

    # [K, N] masks and [N, D] features, N = B·h·w in (b, y, x) order.
    def per_class(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(k, -1)

    student = rep.float().permute(0, 2, 3, 1).reshape(-1, d)
    teacher = rep_teacher.detach().float().permute(0, 2, 3, 1).reshape(-1, d)

    negatives = negative_candidates(
        prob, onehot, high, num_labeled, low_rank, high_rank, negative_threshold, rule
    )
    new_keys = bank.enqueue(teacher, per_class(negatives))

    candidates = per_class(onehot & low.unsqueeze(1))  # [K, N]
    anchors = candidates & (per_class(prob) > anchor_threshold)
    size = candidates.sum(dim=1)  # [K]
    present = (size > 0).sum()
    # Class prototypes: mean teacher feature over each class's candidates, [K, D] (0 where none).
    prototype = (candidates.float() @ teacher) / size.clamp(min=1).unsqueeze(1).float()

    term_class = torch.arange(k, device=rep.device)
    if pairing == "released":
        # The t-th present class (classes in increasing order), for t < present.
        queue_class = torch.searchsorted((size > 0).cumsum(dim=0), term_class + 1).clamp_(max=k - 1)
        in_range = term_class < present
    else:
        queue_class = term_class
        in_range = size > 0
    index, num_anchors = _sample_indices(anchors, num_queries)
    counted = in_range & (num_anchors > 0) & (bank.fill[queue_class] > 0)

    anchor = _normalize(student[index])  # [K, Q, D]
    positive = _normalize(prototype).unsqueeze(1)  # [K, 1, D]
    keys = bank.sample(queue_class, num_queries * num_negatives).view(k, num_queries, num_negatives, d)
    keys = keys.div_(keys.norm(dim=-1, keepdim=True).clamp_min_(COSINE_EPS))  # in place: the largest tensor
    logits = torch.cat(
        [(anchor * positive).sum(-1, keepdim=True), torch.einsum("kqd,kqnd->kqn", anchor, keys)], dim=-1
    )
    target = torch.zeros(k * num_queries, dtype=torch.long, device=rep.device)
    per_term = F.cross_entropy((logits / temperature).view(k * num_queries, -1), target, reduction="none")
    per_term = per_term.view(k, num_queries).mean(dim=1)
    loss = torch.where(counted, per_term, torch.zeros_like(per_term)).sum() / present.clamp(min=1)
    loss = loss * (present >= 2)
    return ContrastiveOutput(loss, counted.sum(), present, new_keys)
