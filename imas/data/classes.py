"""Class names, colour palettes and the Cityscapes labelId -> trainId table."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

CITYSCAPES_CLASSES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]

CITYSCAPES_PALETTE = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]

# Cityscapes labelIds (the ids in *_gtFine_labelIds.png) of the 19 evaluated classes, in trainId order;
# every other labelId (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer)
# maps to the ignore label.
_CITYSCAPES_EVAL_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def cityscapes_label_to_train_id() -> np.ndarray:
    """Lookup table: uint8 [256], entry i is the trainId of labelId i (255 = ignore)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(_CITYSCAPES_EVAL_LABEL_IDS):
        table[label_id] = train_id
    return table


def voc_palette(num_colors: int = 256) -> list[tuple[int, int, int]]:
    """The standard Pascal VOC colour map: the bits of the class index spread over R, G, B, high bit first.

    It is defined for any index, so it also serves as the generated palette of custom datasets.
    """
    colors = []
    for index in range(num_colors):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= (code & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colors.append((r, g, b))
    return colors
