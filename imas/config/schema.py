"""The config schema: one dataclass per section with every default and a comment per field, and the enums
that name the choices. Nothing here reads a file or checks a value (imas.config does both)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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


class Head(str, enum.Enum):
    deeplabv3plus = "deeplabv3plus"  # ASPP + low-level decoder on a ResNet (method.md §7)
    dpt = "dpt"  # four ViT layers reassembled to four scales and fused (UniMatch V2's head)


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
    encoder: str = "resnet101"  # a name in imas.models.ENCODERS: a ResNet or a DINOv2 ViT
    head: Head = Head.deeplabv3plus  # deeplabv3plus on a ResNet, dpt on a ViT
    pretrained: str = ""  # path to the encoder's weights; "" = random init
    freeze_encoder: bool = False  # train the head only (UniMatch V2's frozen-encoder table)
    sync_bn: bool = True  # convert BN to SyncBN when training on several CUDA devices
    # ResNet encoders only (a ViT refuses a value other than the default):
    output_stride: int = 16
    multi_grid: bool = False
    stem: Stem = Stem.deep
    backbone_width: int = 64  # channels of the ResNet's layer1 (64 in every ResNet); smaller for the toy only
    # DeepLabv3+ only (the DPT head refuses a value other than the default):
    aux_head: bool = False
    decoder_channels: int = 256  # ASPP and decoder width: 256 in method.md §7; smaller for the toy only
    representation: int = 0  # channels of a representation head beside the classifier (U2PL: 256); 0 = none


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
    # Epochs whose models are also kept as epoch_<N>.pth (weights only, like best.pth), e.g. the snapshots
    # that ST++'s selection compares (imas.st_plus_plus); [] = none.
    keep_epochs: list[int] = field(default_factory=list)
    run_dir: str = ""  # "" = runs/<config file name>


@dataclass
class EvalConfig:
    mode: EvalMode = EvalMode.whole
    window: int = 769
    stride: int = 0  # 0 = floor(2 * window / 3)
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    batch_size: int = 4  # sliding windows per forward pass
    # The network imas-eval and imas-predict read: a name the run's method declares (teacher, student,
    # second_network); "teacher" on a run without one reads its reported network.
    model: str = "teacher"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The settings of train.method: an instance of its Settings class (beside the method, in imas.methods),
    # written as the section named after the method; None for a method without settings. load_config
    # builds it from the class it is given (imas.experiment gives it every method's); `cfg.<method>`
    # reads it too.
    method_settings: Any = None

    def __getattr__(self, name: str) -> Any:
        """`cfg.imas` (the section named after train.method) is cfg.method_settings."""
        train = self.__dict__.get("train")
        if name.startswith("__") or train is None or name != train.method or self.method_settings is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.method_settings


# The sections above that every config has (the method's section comes beside them).
CORE_SECTIONS = ("data", "model", "loss", "optim", "train", "eval")
