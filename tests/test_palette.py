import numpy as np
import pytest

from unigs_deploy import palette


def _square(h, w, y, x, s=4):
    m = np.zeros((h, w), bool)
    m[y : y + s, x : x + s] = True
    return m


def test_palette_is_the_cube_minus_black():
    p = palette.palette()
    assert p.shape == (124, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 124
    assert set(np.unique(p)) <= {0, 64, 128, 192, 255}
    assert not (p == 0).all(1).any()


def test_neighbouring_cells_get_distant_colours():
    p = palette.palette().astype(float)
    d = []
    for r in range(11):
        for c in range(11):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                if 0 <= r + dr < 11 and 0 <= c + dc < 11:
                    d.append(np.linalg.norm(p[r * 11 + c] - p[(r + dr) * 11 + c + dc]))
    assert min(d) > 143


def test_colour_depends_on_location_only():
    h = w = 110  # cells of 10x10 pixels
    alone = palette.encode_colormap(_square(h, w, 33, 72)[None])
    with_others = palette.encode_colormap(np.stack([_square(h, w, 0, 0), _square(h, w, 33, 72), _square(h, w, 90, 5)]))
    cell = 3 * 11 + 7
    assert (alone[34, 73] == palette.palette()[cell]).all()
    assert (with_others[34, 73] == palette.palette()[cell]).all()
    assert (alone[0, 0] == 0).all()


def test_collision_moves_to_nearest_free_cell():
    h = w = 110
    masks = np.stack([_square(h, w, 52, 52, 2), _square(h, w, 55, 55, 2)])  # both in cell (5, 5)
    slots = palette.assign_slots(masks)
    assert slots[0] == 5 * 11 + 5
    # nearest free cells are the 4-neighbours at distance 1; ties go to the lowest slot
    assert slots[1] == 4 * 11 + 5
    cm = palette.encode_colormap(masks)
    assert not (cm[52, 52] == cm[55, 55]).all()


def test_124_entities_fit_and_125_do_not():
    h, w = 20, 124
    masks = np.zeros((124, h, w), bool)
    for i in range(124):
        masks[i, :, i] = True
    cm = palette.encode_colormap(masks)
    assert len(np.unique(cm.reshape(-1, 3), axis=0)) == 124
    with pytest.raises(ValueError, match="124 colours"):
        palette.encode_colormap(np.zeros((125, 4, 4), bool))


def test_later_mask_wins_on_overlap():
    a = np.zeros((22, 22), bool)
    a[:, :11] = True
    b = np.zeros((22, 22), bool)
    b[:, 5:] = True
    cm = palette.encode_colormap(np.stack([a, b]))
    vis = palette.visible_masks(np.stack([a, b]))
    assert vis[0].sum() == 22 * 5 and vis[1].sum() == 22 * 17
    assert (cm[:, 5:] == cm[0, 10]).all()
    assert not (cm[0, 0] == cm[0, 10]).all()


def test_fully_hidden_entity_gets_no_slot():
    a = np.ones((11, 11), bool)
    slots = palette.assign_slots(np.stack([a, a]))
    assert slots[0] == -1 and slots[1] == 60


def test_unit_range_round_trip():
    cm = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    u = palette.colormap_to_unit(cm)
    assert u.min() == -1 and u.max() == 1
    assert (palette.unit_to_colormap(u) == cm).all()
    assert (palette.unit_to_colormap(np.array([-3.0, 3.0])) == [0, 255]).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4), bool), r"\(N, H, W\)"),
        (np.full((1, 4, 4), 0.5), "boolean"),
        (np.zeros((1, 0, 4), bool), "empty"),
    ],
)
def test_bad_masks(bad, message):
    with pytest.raises(ValueError, match=message):
        palette.encode_colormap(bad)


def test_nan_unit_colormap():
    with pytest.raises(ValueError, match="NaN"):
        palette.unit_to_colormap(np.array([0.0, np.nan]))
