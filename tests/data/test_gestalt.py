"""Gestalt stimuli: deterministic, any size, and label maps that match what is drawn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from procvision.data.gestalt import PRINCIPLES, GestaltDataset, gestalt_stimulus


def _components(mask):
    return ndimage.label(mask)[1]


@pytest.mark.parametrize("principle", PRINCIPLES)
def test_deterministic_any_size_and_every_ink_pixel_is_grouped(principle):
    a, b = gestalt_stimulus(principle, 96, seed=3), gestalt_stimulus(principle, 96, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    c = gestalt_stimulus(principle, 96, seed=4)
    assert not np.array_equal(a.labels, c.labels)
    assert a.image.shape == (3, 96, 96) and a.image.dtype == np.float32
    assert 0 <= a.image.min() and a.image.max() <= 1
    assert (a.labels[a.ink] > 0).all()  # nothing drawn is left in the background
    assert len(np.unique(a.labels)) >= 3  # background and at least two groups
    # The layout is in relative units: the same seed at another size has the same groups with
    # about the same area shares.
    big = gestalt_stimulus(principle, 192, seed=3)
    for v in np.unique(a.labels):
        assert np.mean(big.labels == v) == pytest.approx(np.mean(a.labels == v), abs=0.01)


def test_closure_labels_the_interior_of_dashed_outlines():
    s = gestalt_stimulus("closure", 128, seed=0, noise=0)
    for v in (1, 2):
        region = s.labels == v
        ink = s.ink & region
        assert _components(ink) >= 8  # a dashed outline: many separate dashes
        assert _components(region) == 1 and ndimage.binary_fill_holes(region).sum() == region.sum()
        interior = ndimage.binary_erosion(region, iterations=4)
        assert interior.sum() > 0.5 * region.sum() and not (s.ink & interior).any()


def test_kanizsa_figures_are_illusory():
    s = gestalt_stimulus("kanizsa", 128, seed=1, noise=0)
    for v in (1, 2):
        assert (s.labels == v).sum() > 0 and not (s.ink & (s.labels == v)).any()  # no ink at all
    assert s.ink[s.labels == 3].all()  # the pac-men are all ink
    assert _components(s.labels == 3) == 7  # 3 + 4 inducers


def test_connection_groups_are_one_connected_drawing_each():
    s = gestalt_stimulus("connection", 128, seed=2)
    assert _components(s.ink) == 3
    for v in (1, 2, 3):
        assert _components(s.ink & (s.labels == v)) == 1 and _components(s.labels == v) == 1


def test_proximity_and_enclosure_group_equal_dots():
    s = gestalt_stimulus("proximity", 160, seed=5, noise=0)
    for v in (1, 2, 3):
        assert _components(s.ink & (s.labels == v)) == 9 and _components(s.labels == v) == 1
    e = gestalt_stimulus("enclosure", 160, seed=5, noise=0)
    for v in (1, 2):  # each rectangle's interior holds 4 dots inside its outline
        inner = ndimage.binary_erosion(e.labels == v, iterations=3)
        assert _components(e.ink & inner) == 4
    assert _components(e.labels == 3) == 36 - 8


def test_similarity_groups_follow_colour_and_continuity_the_curves():
    s = gestalt_stimulus("similarity", 128, seed=0, noise=0)
    red, blue = s.ink & (s.labels == 1), s.ink & (s.labels == 2)
    assert (s.image[0][red] > s.image[2][red]).all() and (s.image[2][blue] > s.image[0][blue]).all()
    assert _components(red) == _components(blue) == 18
    c = gestalt_stimulus("continuity", 128, seed=0, noise=0)
    assert _components(c.ink & (c.labels == 1)) >= 10 and _components(c.ink & (c.labels == 2)) >= 10


def test_dataset_items_and_bad_arguments():
    ds = GestaltDataset(("closure", "similarity"), n=2, size=32)
    assert len(ds) == 4
    image, labels, name = ds[3]
    assert image.shape == (3, 32, 32) and labels.shape == (32, 32) and name == "similarity_1"
    with pytest.raises(ValueError, match="principle"):
        GestaltDataset("gravity")
    with pytest.raises(ValueError, match="size"):
        gestalt_stimulus("closure", 4)
