"""The task table and the one assembly of a task's model inputs."""

import numpy as np
import pytest

from unigs_deploy import tasks


def test_table_ids_are_the_task_embedding_order():
    assert tasks.NAMES == ("inpaint", "synthesize", "refer", "segment")
    assert [tasks.get(n).id for n in tasks.NAMES] == [0, 1, 2, 3]


def test_model_inputs_per_task():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (8, 10, 3)).astype(np.float32)
    cmap = rng.uniform(-1, 1, (8, 10, 3)).astype(np.float32)
    region = np.zeros((8, 10), bool)
    region[2:5, 3:7] = True
    control, mask = tasks.model_inputs("inpaint", image, region, cmap)
    assert (mask == region).all() and mask.dtype == np.float32
    assert (control[region] == 0).all() and (control[~region] == image[~region]).all()
    control, mask = tasks.model_inputs("synthesize", image, None, cmap)
    assert (control == cmap).all() and (mask == 1).all()
    control, mask = tasks.model_inputs("refer", image, region, cmap)
    assert (control == image).all() and (mask == region).all()
    control, mask = tasks.model_inputs("segment", image, None, None)
    assert (control == image).all() and (mask == 1).all()


def test_bad_task_and_missing_inputs_are_clear():
    with pytest.raises(ValueError, match="unknown task 'segmnet': choose one of inpaint, synthesize"):
        tasks.get("segmnet")
    with pytest.raises(ValueError, match="refer needs a region mask"):
        tasks.model_inputs("refer", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="synthesize needs a colormap"):
        tasks.model_inputs("synthesize", np.zeros((4, 4, 3), np.float32))
