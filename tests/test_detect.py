import numpy as np
import pytest

from unigs_deploy.benchmarks import detect
from unigs_deploy.synthetic import shapes


def test_shape_kinds_are_recognised():
    rng = np.random.default_rng(0)
    right = total = 0
    for size in (64, 128):
        for i in range(200):
            kind = shapes.KINDS[i % 4]
            r = rng.uniform(0.08, 0.3, 2) * size
            m = shapes.draw_shape(size, size, kind, size / 2, size / 2, r[0], r[1], rng.uniform(0, np.pi))
            if m.sum() >= 40:
                right += detect.shape_kind(m) == kind
                total += 1
    assert right / total >= 0.97


def test_colours_are_named_through_noise():
    rng = np.random.default_rng(1)
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    for name, rgb in detect.COLOURS.items():
        img = np.clip(rng.normal(0, 40, (32, 32, 3)) + np.asarray(rgb) * m[..., None], 0, 255).astype(np.uint8)
        assert detect.colour_name(img, m) == name


def test_empty_mask():
    with pytest.raises(ValueError, match="empty mask"):
        detect.shape_kind(np.zeros((4, 4), bool))
