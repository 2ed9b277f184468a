"""Label colouring and image grids used for TensorBoard panels."""

import torch

from imas.visualize import IGNORE_COLOUR, colorize, grid


def test_colorize_uses_the_palette_and_white_for_ignored():
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    labels = torch.tensor([[[0, 1], [2, 255]]])
    rgb = colorize(labels, palette)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 2, 2)
    assert rgb[0, :, 0, 1].tolist() == [128, 0, 0]
    assert rgb[0, :, 1, 0].tolist() == [0, 128, 0]
    assert rgb[0, :, 1, 1].tolist() == list(IGNORE_COLOUR)


def test_grid_places_image_n_of_each_column_in_row_n():
    a = torch.full((2, 3, 4, 5), 10, dtype=torch.uint8)
    b = torch.full((2, 3, 4, 5), 20, dtype=torch.uint8)
    b[1] = 30
    out = grid([a, b], pad=1)
    assert out.shape == (3, 2 * 5 - 1, 2 * 6 - 1)
    assert out[0, 0, 0] == 10 and out[0, 0, 6] == 20 and out[0, 5, 6] == 30
    assert out[0, 4, 0] == 0  # the gap between rows
