"""The config schema: one dataclass per section with every default and a comment per field, and the enums
that name the choices. Nothing here reads a file or checks a value (imas.config does both)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DatasetKind(str, enum.Enum):
    voc = "voc"
    cityscapes = "cityscapes"
    custom = "custom"


class ResizeRule(str, enum.Enum):
    long_side = "long_side"  # VOC: long side ~ randint[a, b], aspect kept
    scale = "scale"  # Cityscapes: (base_h, base_w) x U[a, b]
    none = "none"


class LossKind(str, enum.Enum):
    ce = "ce"
    ohem = "ohem"


class OptimizerKind(str, enum.Enum):
    sgd = "sgd"  # the released runs (method.md §7)
    adamw = "adamw"  # for training from random initialisation (the toy); momentum is beta1


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class EvalMode(str, enum.Enum):
    whole = "whole"
    sliding = "sliding"


class Stem(str, enum.Enum):
    deep = "deep"
    standard = "standard"


class EvalModel(str, enum.Enum):
    teacher = "teacher"
    student = "student"


class Adaptation(str, enum.Enum):
    mix = "mix"  # released code: e * strong + (1 - e) * weak
    select = "select"  # strong with probability e, else weak
    magnitude = "magnitude"  # the paper's wording: op strength U * e (method.md §4), no blend
    none = "none"  # plain strong view


class Weighting(str, enum.Enum):
    easiness = "easiness"  # per-image weight e_i on the unsupervised loss
    none = "none"


class CutMixTrigger(str, enum.Enum):
    easiness = "easiness"  # fire with p = mean easiness of the group
    fixed = "fixed"  # fire with p = cutmix_p
    off = "off"  # no CutMix view


class Pairing(str, enum.Enum):
    easy_hard = "easy_hard"
    random = "random"


class CutMixBox(str, enum.Enum):
    imas = "imas"  # side ratio v ~ U[0.1, 0.9] per group
    beta = "beta"  # classic CutMix, area ~ Beta(4, 4)


@dataclass
class DataConfig:
    dataset: DatasetKind = DatasetKind.voc
    root: str = "data/toy"
    # Split files: one id per line, or "image mask" relative path pairs per line. "" = not used.
    labeled_split: str = "data/toy/splits/labeled.txt"
    unlabeled_split: str = ""
    val_split: str = "data/toy/splits/val.txt"
    num_classes: int = 21
    class_names: list[str] = field(default_factory=list)  # empty: the dataset's own names
    palette: list[list[int]] = field(default_factory=list)  # empty: the dataset's own palette
    label_dir: str = "SegmentationClassAug"  # VOC: SegmentationClassAug (index PNG) or SegmentationClass
    image_dir: str = "images"  # custom layout: folder of images under root
    mask_dir: str = "masks"  # custom layout: folder of index-PNG masks under root
    crop_size: int = 513
    resize: ResizeRule = ResizeRule.long_side
    long_side: list[int] = field(default_factory=lambda: [250, 1000])
    base_size: list[int] = field(default_factory=lambda: [1024, 2048])  # (H, W) for resize: scale
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    num_workers: int = 2


@dataclass
class ModelConfig:
    backbone: str = "resnet101"
    output_stride: int = 16
    multi_grid: bool = False
    aux_head: bool = False
    stem: Stem = Stem.deep
    pretrained: str = ""  # path to backbone weights; "" = random init
    sync_bn: bool = True  # convert BN to SyncBN when training on several CUDA devices
    decoder_channels: int = 256  # ASPP and decoder width: 256 in method.md §7; smaller for the toy only
    backbone_width: int = 64  # channels of the ResNet's layer1 (64 in every ResNet); smaller for the toy only


@dataclass
class LossConfig:
    kind: LossKind = LossKind.ce
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000
    aux_weight: float = 0.4


@dataclass
class OptimConfig:
    kind: OptimizerKind = OptimizerKind.sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decoder_lr_mult: float = 10.0
    poly_power: float = 0.9


@dataclass
class TrainConfig:
    method: str = "supervised"  # a name in imas.methods.METHODS; its settings: the section of that name
    epochs: int = 80
    batch_size: int = 4  # labeled (and unlabeled) images per device per iteration
    precision: Precision = Precision.fp32
    channels_last: bool = False
    compile: bool = False  # torch.compile the trained models' forward (the step's train-mode passes)
    eval_every: int = 1  # epochs
    log_every: int = 20  # iterations
    image_every: int = 1000  # iterations between TensorBoard image panels (semi-supervised); 0 = never
    seed: int = 0
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    run_dir: str = ""  # "" = runs/<config file name>


@dataclass
class EvalConfig:
    mode: EvalMode = EvalMode.whole
    window: int = 769
    stride: int = 0  # 0 = floor(2 * window / 3)
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    batch_size: int = 4  # sliding windows per forward pass
    model: EvalModel = EvalModel.teacher


@dataclass
class TeacherStudentConfig:
    """An EMA teacher's pseudo-labels supervise the student on strong views (train.method mean_teacher and
    imas). The instance-specific switches (weighting, adaptive, cutmix, pairing) are iMAS's parts; a mean
    teacher has them off and may turn any of them on. docs/methods.md compares the methods."""

    threshold: float = 0.95  # tau: pseudo-label confidence and confident-ratio threshold
    lambda_u: float = 3.0
    ema_decay: float = 0.996
    weighting: Weighting = Weighting.easiness
    adaptive: Adaptation = Adaptation.mix
    magnitude: float = 0.999  # m: op strength s = U * m (adaptive: magnitude uses s = U * m * e_i)
    num_ops: int = 2
    cutmix: CutMixTrigger = CutMixTrigger.easiness
    cutmix_p: float = 0.5  # for cutmix: fixed
    pairing: Pairing = Pairing.easy_hard
    cutmix_box: CutMixBox = CutMixBox.imas
    cutmix_scale: bool = False  # method.md §5 option: the box side v times the group's mean easiness
    group_size: int = 4  # images per trigger/pairing decision (the released runs: 4 per GPU)
    class_weighted: bool = True
    ignore_class0: bool = True
    weak_in_batch: bool = True  # the weak view joins the student's train forward (BN statistics only)
    mask_padding: bool = False  # exclude crop padding from the unsupervised loss


@dataclass
class ImasConfig(TeacherStudentConfig):
    """iMAS (train.method imas): every instance-specific part on; released defaults (method.md §12)."""


@dataclass
class MeanTeacherConfig(TeacherStudentConfig):
    """Mean teacher (train.method mean_teacher): iMAS's step with every instance-specific part off (no loss
    weighting, the plain strong view, CutMix with p = 0.5 and random pairs); each can be turned back on."""

    weighting: Weighting = Weighting.none
    adaptive: Adaptation = Adaptation.none
    cutmix: CutMixTrigger = CutMixTrigger.fixed
    pairing: Pairing = Pairing.random


@dataclass
class FixMatchConfig:
    """FixMatch (train.method fixmatch), as UniMatch's authors run it for segmentation: one network, the weak
    view's prediction is the pseudo-label of a strong view (colour jitter, grayscale, blur, CutMix)."""

    threshold: float = 0.95  # tau on the weak view's confidence (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    lambda_u: float = 1.0  # L = (L_x + lambda_u * L_s) / 2
    cutmix_p: float = 0.5  # probability that an image's strong view gets a CutMix box


@dataclass
class UniMatchConfig:
    """UniMatch V1 (train.method unimatch): FixMatch with two strong views and a feature-perturbed stream."""

    threshold: float = 0.95  # tau (UniMatch's configs: 0.95 VOC, 0 Cityscapes)
    cutmix_p: float = 0.5  # per strong view and image
    fp_dropout: float = 0.5  # channel dropout on the encoder features of the feature-perturbed stream


@dataclass
class CPSConfig:
    """Cross pseudo supervision (train.method cps): two networks, each one's hard pseudo-label supervises the
    other on labeled and CutMix-mixed unlabeled images."""

    weight: float = 1.5  # lambda on the CPS loss (published: 1.5 VOC, 6 Cityscapes)
    n_boxes: int = 3  # CutMix boxes per image (CPS's mask generator)
    # The boxes' total area fraction, drawn from U[low, high] per image.
    box_area: list[float] = field(default_factory=lambda: [0.25, 0.5])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # One section per method that has settings, named after it; only train.method's may be given.
    imas: ImasConfig = field(default_factory=ImasConfig)
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    fixmatch: FixMatchConfig = field(default_factory=FixMatchConfig)
    unimatch: UniMatchConfig = field(default_factory=UniMatchConfig)
    cps: CPSConfig = field(default_factory=CPSConfig)


# The sections above that belong to a method (the section is named after the method).
METHOD_SECTIONS = ("imas", "mean_teacher", "fixmatch", "unimatch", "cps")
MAX_BOXES = 16  # cps.n_boxes: each box is a [B, H, W] mask while the CutMix mask is made
