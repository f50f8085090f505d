"""ViT position embeddings at another resolution (arch/published/posemb.py) against big_vision's
`resample_posemb`, which is `scipy.ndimage.zoom(order=1)` of the grid, and a case by hand."""

import numpy as np
import pytest
import scipy.ndimage

from arch.published import posemb


@pytest.mark.parametrize("old,new", [(4, 7), (7, 4), (14, 24), (2, 5), (3, 3)])
def test_resample_is_big_visions_zoom(old, new):
  grid = np.random.default_rng(old * 10 + new).normal(size=(old * old, 6)).astype(np.float32)
  want = scipy.ndimage.zoom(grid.reshape(old, old, 6), (new / old, new / old, 1), order=1)
  np.testing.assert_allclose(posemb.resample(grid, new), want.reshape(new * new, 6), atol=1e-6)


def test_a_2x2_grid_at_3x3_keeps_the_corners_and_averages_between_them():
  grid = np.array([[0.0], [2.0], [4.0], [10.0]])  # rows (0, 2) and (4, 10)
  got = posemb.resample(grid, 3).reshape(3, 3)
  np.testing.assert_allclose(got, [[0, 1, 2], [2, 4, 6], [4, 7, 10]])
