"""The shapes world: random layouts of coloured shapes, and colormap corruption.

Feeds the codec's tests and benchmarks, the demo and (through `training/`) the demo model.
numpy + OpenCV only, seeded by a `numpy.random.Generator`.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("ellipse", "rectangle", "triangle", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
           "purple": (150, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245), "gray": (128, 128, 128)}
COLOUR_NAMES = tuple(COLOURS)
RADII = (0.3, 0.9)  # a shape's radii, as fractions of sqrt(image area / entities asked for)
HELD_OUT_SEED = 10_000  # held-out example i is drawn from seed HELD_OUT_SEED + i
ENTITIES = (1, 6)  # a shapes image asks for between these many entities (its first draw)


def entity_min_pixels(size: int) -> int:
    """The fewest visible pixels an entity of a size x size shapes image keeps."""
    return max(16, size * size // 80)


def polygon(kind: str, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """The integer vertices of one shape (what draw_shape fills; the detector fits them too)."""
    if kind == "rectangle":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        pts = np.stack([np.cos(t) * rx * 1.41, np.sin(t) * ry * 1.41], 1)
    elif kind == "triangle":
        t = np.array([-0.5, 1 / 6, 5 / 6]) * np.pi
        pts = np.stack([np.cos(t) * rx, np.sin(t) * ry], 1)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(t) * rx * r, np.sin(t) * ry * r], 1)
    else:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t) * rx, np.sin(t) * ry], 1)
    c, s = np.cos(angle), np.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return np.round(rot + (cx, cy)).astype(np.int32)


def draw_shape(h: int, w: int, kind: str, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    """One filled shape as an (H, W) bool mask."""
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [polygon(kind, cx, cy, rx, ry, angle)], 1)
    return canvas.astype(bool)


def random_layout(rng: np.random.Generator, h: int, w: int, n: int, *, min_pixels: int = 256,
                  max_tries: int = 2000, upright: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Up to `n` non-overlapping entity masks (N, H, W) bool and their shape kinds.

    Shapes are drawn one over another and each keeps what stays visible; one that keeps fewer
    than `min_pixels` is dropped, so every returned entity is at least that large. `upright`: the
    share of shapes drawn unrotated (0 draws nothing extra: the same layouts as without it).
    """
    owner = np.full((h, w), -1, np.int32)
    kinds: list[str] = []
    scale = np.sqrt(h * w / max(n, 1))
    for _ in range(max_tries):
        if len(kinds) == n:
            break
        kind = KINDS[rng.integers(len(KINDS))]
        rx, ry = rng.uniform(*RADII, 2) * scale
        cx, cy, angle = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi)
        if upright and rng.random() < upright:
            angle = 0.0
        m = draw_shape(h, w, kind, cx, cy, rx, ry, angle)
        trial = owner.copy()
        trial[m] = len(kinds)
        counts = np.bincount(trial[trial >= 0], minlength=len(kinds) + 1)
        if (counts < min_pixels).any():
            continue
        owner = trial
        kinds.append(kind)
    masks = owner[None] == np.arange(len(kinds))[:, None, None]
    return masks, kinds


def corrupt_colormap(colormap: np.ndarray, rng: np.random.Generator, *, noise: float = 8.0,
                     blur: int = 5, jpeg_quality: int | None = 75, shift: float = 12.0) -> np.ndarray:
    """Corrupt a colormap the way a diffusion model and its VAE do.

    A blur across edges (`blur` x `blur` Gaussian), a global colour shift of up to `shift`
    levels per channel, Gaussian noise of std `noise`, then JPEG at `jpeg_quality`.
    """
    x = colormap.astype(np.float32)
    if blur and blur > 1:
        x = cv2.GaussianBlur(x, (blur, blur), 0)
    if shift:
        x = x + rng.uniform(-shift, shift, 3).astype(np.float32)
    if noise:
        x = x + rng.normal(0, noise, x.shape).astype(np.float32)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return out


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dim textured background: a smooth gradient plus blurred noise, never a shape colour."""
    base = rng.uniform(20, 90, 3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    grad = (yy[..., None] * rng.uniform(-30, 30, 3) + xx[..., None] * rng.uniform(-30, 30, 3))
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), rng.uniform(1, 4))
    return np.clip(base + grad + noise, 0, 255)


def caption(colour: str, kind: str) -> str:
    """"a red star", "an orange ellipse": how the shapes world names an entity."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {kind}"


def shapes_image(rng: np.random.Generator, size: int, n_min: int = ENTITIES[0], n_max: int = ENTITIES[1], *,
                 upright: float = 0.0):
    """-> image (H, W, 3) uint8, masks (N, H, W) bool, captions ["a red star", ...].
    upright: the share of shapes drawn unrotated (random_layout)."""
    n = int(rng.integers(n_min, n_max + 1))
    masks, kinds = random_layout(rng, size, size, n, min_pixels=entity_min_pixels(size), upright=upright)
    img = _background(rng, size, size)
    captions = []
    names = list(COLOURS)
    for m, kind in zip(masks, kinds, strict=True):
        colour = names[int(rng.integers(len(names)))]
        shade = np.asarray(COLOURS[colour], np.float32) + rng.normal(0, 6, 3)
        img[m] = shade
        captions.append(caption(colour, kind))
    return np.clip(img, 0, 255).astype(np.uint8), masks, captions


def held_out_example(i: int, size: int = 64, entities: tuple[int, int] = ENTITIES):
    """Held-out example i (a seed stream training never draws from): image, masks, captions, a
    coarse region around entity j, and j. `entities`: the scene's range, as training's data.entities."""
    from .coarse import coarse_mask

    rng = np.random.default_rng(HELD_OUT_SEED + i)
    image, masks, captions = shapes_image(rng, size, *entities)
    j = int(rng.integers(len(masks)))
    region, _ = coarse_mask(masks[j], rng)
    return image, masks, captions, region, j
