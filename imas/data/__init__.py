"""Data: VOC / Cityscapes / custom-folder datasets, joint weak transforms, loaders, the toy generator."""

from imas.data.datasets import Datasets, SegmentationDataset, build_datasets, class_names, palette
from imas.data.loaders import TrainLoaders, build_train_loaders, build_val_loader
from imas.data.transforms import MEAN_RGB_UINT8

__all__ = [
    "MEAN_RGB_UINT8",
    "Datasets",
    "SegmentationDataset",
    "TrainLoaders",
    "build_datasets",
    "build_train_loaders",
    "build_val_loader",
    "class_names",
    "palette",
]
