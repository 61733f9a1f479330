import json

import numpy as np
import pytest

from unigs_deploy import io


def test_label_png_round_trip_8_and_16_bit(tmp_path):
    small = np.array([[0, 1], [2, 255]], np.int32)
    big = np.array([[0, 300], [70000 % 65536, 2]], np.int32)
    for lab in (small, big):
        io.write_labels(tmp_path / "l.png", lab)
        assert (io.read_labels(tmp_path / "l.png") == lab).all()


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 17, 23)) > 0.5
    rles = io.masks_to_rle(masks)
    json.dumps(rles)  # JSON-ready
    assert rles[0]["size"] == [17, 23]
    assert (io.rle_to_masks(rles) == masks).all()


def test_panoptic_ids_and_segments(tmp_path):
    lab = np.zeros((4, 5), np.int32)
    lab[1:3, 1:4] = 1
    lab[3, 4] = 300
    png, js = io.write_panoptic(tmp_path / "p.png", tmp_path / "p.json", lab, image_id=7)
    rgb = io.read_image(png).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    assert (ids == lab).all()
    ann = json.loads(js.read_text())["annotations"][0]
    assert ann["image_id"] == 7
    segs = {s["id"]: s for s in ann["segments_info"]}
    assert segs[1]["area"] == 6 and segs[1]["bbox"] == [1, 1, 3, 2]
    assert segs[300]["bbox"] == [4, 3, 1, 1]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    """A failed block leaves the old folder as it was and no temporary folder; a finished one
    replaces it (the old folder's files gone) with mkdir's permissions, not mkdtemp's 0700."""
    import os
    import stat

    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
        (tmp / "stale.txt").write_text("old")
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "stale.txt"]
    assert (target / "a.txt").read_text() == "old"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"] and (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


def test_replace_dir_puts_the_old_folder_back_if_the_swap_fails(tmp_path, monkeypatch):
    import os

    old, new = tmp_path / "ckpt", tmp_path / ".new"
    old.mkdir()
    (old / "state").write_text("old")
    new.mkdir()
    real = os.replace

    def fail_on_the_new_folder(src, dst):
        if str(src) == str(new):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_new_folder)
    with pytest.raises(KeyboardInterrupt):
        io.replace_dir(new, old)
    assert (old / "state").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".new", "ckpt"]


def test_bad_paths_and_arrays(tmp_path):
    with pytest.raises(ValueError, match="cannot read an image"):
        io.read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="non-negative"):
        io.write_labels(tmp_path / "x.png", np.array([[-1]]))
    with pytest.raises(ValueError, match="uint8"):
        io.write_image(tmp_path / "x.png", np.zeros((2, 2, 3), np.float32))
