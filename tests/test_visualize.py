"""Label colouring, image grids and the annotated TensorBoard panels, checked pixel by pixel."""

import numpy as np
import torch

from imas.visualize import (
    FONT_SIZE,
    GAP,
    GAP_COLOUR,
    IGNORE_COLOUR,
    MIN_CELL,
    colorize,
    fit,
    format_notes,
    grid,
    panel,
    upscale,
)

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
PHOTO = (10, 20, 30)  # a colour in neither the palette nor the panel's chrome


def test_colorize_uses_the_palette_and_white_for_ignored():
    labels = torch.tensor([[[0, 1], [2, 255]]])
    rgb = colorize(labels, PALETTE)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 2, 2)
    assert rgb[0, :, 0, 1].tolist() == [128, 0, 0]
    assert rgb[0, :, 1, 0].tolist() == [0, 128, 0]
    assert rgb[0, :, 1, 1].tolist() == list(IGNORE_COLOUR)


def test_grid_places_image_n_of_each_column_in_row_n_with_grey_gaps():
    a = torch.full((2, 3, 4, 5), 10, dtype=torch.uint8)
    b = torch.full((2, 3, 4, 5), 20, dtype=torch.uint8)
    b[1] = 30
    out = grid([a, b], pad=1)
    assert out.shape == (3, 2 * 5 - 1, 2 * 6 - 1)
    assert out[0, 0, 0] == 10 and out[0, 0, 6] == 20 and out[0, 5, 6] == 30
    assert out[:, 4, 0].tolist() == list(GAP_COLOUR)  # the gap between rows
    assert out[:, 0, 5].tolist() == list(GAP_COLOUR)  # the gap between columns


def test_upscale_enlarges_small_images_by_an_integer_factor_nearest_neighbour():
    labels = torch.tensor([[[0, 1], [2, 3]]])
    big = upscale(labels, min_side=5)  # factor 3: the smallest with 2 * f >= 5
    assert big.shape == (1, 6, 6)
    assert big[0, :3, :3].unique().tolist() == [0] and big[0, 3:, 3:].unique().tolist() == [3]
    assert set(big.unique().tolist()) == {0, 1, 2, 3}  # no value that was not there
    image = torch.zeros(2, 3, 48, 60, dtype=torch.uint8)
    assert upscale(image).shape == (2, 3, 3 * 48, 3 * 60)  # 3 * 48 = 144 >= MIN_CELL = 128
    large = torch.zeros(1, 3, 200, 300, dtype=torch.uint8)
    assert upscale(large) is large


def test_fit_keeps_the_aspect_and_pads_with_grey():
    labels = colorize(torch.tensor([[[1] * 20] * 10]), PALETTE)[0]  # 10 x 20, all class 1
    out = fit(labels, 40, 40, smooth=False)
    assert out.shape == (3, 40, 40)
    assert (out[:, :10] == torch.tensor(GAP_COLOUR, dtype=torch.uint8).view(3, 1, 1)).all()  # above
    assert (out[:, 10:30] == torch.tensor(PALETTE[1], dtype=torch.uint8).view(3, 1, 1)).all()  # 20 x 40
    assert (out[:, 30:] == torch.tensor(GAP_COLOUR, dtype=torch.uint8).view(3, 1, 1)).all()  # below


def test_format_notes_one_line_per_value_and_row():
    notes = format_notes(
        {"e": torch.tensor([0.734, 0.1, 0.5]), "cutmix": torch.tensor([True, False, True])}, 2
    )
    assert notes == [["e 0.73", "cutmix yes"], ["e 0.10", "cutmix no"]]


def is_colour(image: np.ndarray, colour) -> np.ndarray:
    return (image == np.array(colour, dtype=np.uint8)).all(-1)


def runs(mask_1d: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    padded = np.concatenate([[False], mask_1d, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def make_panel(**kwargs) -> np.ndarray:
    photos = torch.tensor(PHOTO, dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    labels = torch.ones(2, 32, 32, dtype=torch.long)  # class 1
    labels[:, :8, :8] = 255
    out = panel(
        {"weak_view": photos, "pseudo_label": labels},
        PALETTE,
        ["background", "disk", "square", "triangle"],
        [["e 0.73", "cutmix yes"], ["e 0.10", "cutmix no"]],
        **kwargs,
    )
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    return out.permute(1, 2, 0).numpy()


def test_panel_cells_gaps_header_notes_and_legend():
    image = make_panel()
    photo = is_colour(image, PHOTO)
    # Each 32 px image is enlarged 4x to one 128 px cell (the smallest integer factor reaching MIN_CELL).
    assert photo.sum() == 2 * 128 * 128
    rows = runs(photo.any(1))
    ((left, width_px),) = runs(photo.any(0))
    assert [length for _, length in rows] == [128, 128] and width_px == 128 >= MIN_CELL
    assert rows[1][0] - (rows[0][0] + 128) == GAP
    top = rows[0][0]
    # Grey gaps: between the two rows, between the two columns, around the panel.
    assert is_colour(image[top + 128 : top + 128 + GAP, left : left + 128], GAP_COLOUR).all()
    assert is_colour(image[top : top + 128, left + 128 : left + 128 + GAP], GAP_COLOUR).all()
    assert is_colour(image[:GAP], GAP_COLOUR).all() and is_colour(image[:, -GAP:], GAP_COLOUR).all()
    # The label column: class 1 in its colour, the ignored corner (8 px -> 32 px) white.
    label_cell = image[top : top + 128, left + 128 + GAP : left + 2 * 128 + GAP]
    assert is_colour(label_cell, PALETTE[1]).sum() == 128 * 128 - 32 * 32
    assert is_colour(label_cell[:32, :32], IGNORE_COLOUR).all()

    def has_text(region: np.ndarray) -> bool:
        return bool((~is_colour(region, GAP_COLOUR)).any())

    # Header: text above each column, nothing above the note column.
    assert has_text(image[:top, left : left + 128]) and has_text(image[:top, left + 128 + GAP :])
    assert not has_text(image[:top, :left])
    # Notes: text left of each row, within that row's height.
    assert has_text(image[top : top + 2 * FONT_SIZE, :left])
    assert has_text(image[rows[1][0] : rows[1][0] + 2 * FONT_SIZE, :left])
    # Legend below the cells: a FONT_SIZE-square swatch per class (and white for ignored), names beside.
    legend = image[rows[1][0] + 128 + GAP :]
    for colour in PALETTE[2:]:  # colours no cell holds
        assert is_colour(legend, colour).sum() == FONT_SIZE * FONT_SIZE
    assert is_colour(legend, IGNORE_COLOUR).sum() >= FONT_SIZE * FONT_SIZE
    assert not is_colour(image[: rows[1][0] + 128], PALETTE[2]).any()  # swatches in the legend only


def test_panel_without_legend_or_notes():
    with_legend = make_panel()
    without = make_panel(legend=False)
    assert without.shape[1] == with_legend.shape[1] and without.shape[0] < with_legend.shape[0]
    assert not is_colour(without, PALETTE[2]).any()
    bare = panel({"a": torch.zeros(1, 3, 200, 150, dtype=torch.uint8)}, PALETTE)
    assert bare.shape[1:] == (GAP + (FONT_SIZE + 4) + GAP + 200 + GAP, GAP + 150 + GAP)  # no upscaling
