"""The four UniGS tasks: the one table of their ids and defaults, and the one function that
assembles a task's model inputs (the pipeline, training, the torch reference and the tests
all call it, so the model is run as it was trained).

The UNet sees `[z_img_t, z_cmap_t, mask, control]`. Control is what the VAE encodes into the
control latent: the masked image (inpaint), the colormap (synthesize), the image (refer,
segment). The mask is the coarse region (inpaint, refer) or all ones (synthesize, segment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    id: int  # the task embedding's class label
    control: str  # "masked_image", "colormap" or "image"
    uses_region: bool  # the mask channel holds the coarse region (else all ones)
    keep_background: bool  # background clusters are entities of the result
    decodes_image: bool  # its result is a new image (else only the colormap is decoded)
    steps: int = 25
    guidance: float = 7.5
    eta: float = 0.0
    scheduler: str = "ddim"
    spacing: str | None = None  # None: the model's scheduler config decides


TASKS = (
    Task("inpaint", 0, control="masked_image", uses_region=True, keep_background=False, decodes_image=True),
    Task("synthesize", 1, control="colormap", uses_region=False, keep_background=False, decodes_image=True),
    # segment and refer: the best of the quality-vs-steps curves measured on the demo model
    # (benchmarks/results/steps-demo.json, docs/steps.png); a model's manifest can say otherwise
    Task("refer", 2, control="image", uses_region=True, keep_background=False, decodes_image=False,
         scheduler="dpm++2m", spacing="trailing"),
    Task("segment", 3, control="image", uses_region=False, keep_background=True, decodes_image=False,
         steps=1, scheduler="dpm++2m", spacing="trailing"),
)
NAMES = tuple(t.name for t in TASKS)
_BY_NAME = {t.name: t for t in TASKS}


def get(name: str) -> Task:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(NAMES)}") from None


def model_inputs(task: str, image_unit: np.ndarray | None, region: np.ndarray | None = None,
                 colormap_unit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (control (H, W, 3) float32 in [-1, 1], mask (H, W) float32) for one task.

    image_unit / colormap_unit: (H, W, 3) in [-1, 1]; region: (H, W) bool or {0, 1}, needed by
    the tasks that use one.
    """
    t = get(task)
    src = colormap_unit if t.control == "colormap" else image_unit
    if src is None:
        raise ValueError(f"{task} needs {'a colormap' if t.control == 'colormap' else 'an image'}")
    if t.uses_region:
        if region is None:
            raise ValueError(f"{task} needs a region mask")
        mask = np.asarray(region, np.float32)
    else:
        mask = np.ones(src.shape[:2], np.float32)
    control = src * (1 - mask[..., None]) if t.control == "masked_image" else src
    return np.asarray(control, np.float32), mask
