"""Choosing among inpaint candidates by how well each drawing matches its text (a reranker).

A diffusion model's draws disagree, and the one most of them agree with (inpaint's default
choice among `candidates`) is a typical drawing, not one that follows the text: DALL-E reranked
its samples with CLIP for that reason. A reranker here is a small classifier over the words its
vocabulary knows (e.g. colour and kind groups): it reads each region's drawn entity, cropped to
the region, and a candidate scores the log-probability of its text's known words. This module
makes the crops and the scores (numpy + OpenCV); the classifier is an exported ONNX component
(`reranker`), trained for the demo model by `training/reranker.py` on the shapes world.
"""

from __future__ import annotations

import cv2
import numpy as np

CHANNELS = ("entity", "inside", "red", "green", "blue")  # a crop's channels, in order
MARGIN = 1.1  # the crop's side over the region's longer side
AGREEMENT_WEIGHT = 1.0  # a candidate's choice score: its texts' log-probability + this x its mean IoU with the others


def crop(image: np.ndarray, entity: np.ndarray, region: np.ndarray, size: int) -> np.ndarray:
    """(len(CHANNELS), size, size) float32: the square around the region's box (MARGIN times its
    longer side), resampled to size x size (area averaging). `inside` is 1 where the square lies
    inside the image, so a shape cut by the border is told from one that ends there."""
    ys, xs = np.nonzero(region)
    if not len(ys):
        raise ValueError("empty region: nothing to crop")
    h, w = region.shape
    side = max(4, int(np.ceil(MARGIN * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))))
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    planes = np.zeros((side, side, len(CHANNELS)), np.float32)
    sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(h, y0 + side), min(w, x0 + side)
    dst = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
    src = (slice(sy0, sy1), slice(sx0, sx1))
    planes[dst + (0,)] = entity[src]
    planes[dst + (1,)] = 1.0
    planes[dst + (slice(2, 5),)] = image[src].astype(np.float32) / 255.0
    return np.stack([cv2.resize(planes[..., c], (size, size), interpolation=cv2.INTER_AREA)
                     for c in range(len(CHANNELS))])


def text_words(groups: dict[str, list[str]], text: str) -> dict[str, int]:
    """{group: index of the text's word in it} for each group that has one of the text's words."""
    words = set(text.lower().replace(",", " ").split())
    found = {}
    for name, vocab in groups.items():
        hits = [i for i, v in enumerate(vocab) if v in words]
        if len(hits) == 1:  # a text naming two of a group ("red and blue") says nothing to score
            found[name] = hits[0]
    return found


def group_slices(groups: dict[str, list[str]]) -> dict[str, slice]:
    """Where each group's logits lie: the vocabularies are laid end to end, in order."""
    out, start = {}, 0
    for name, vocab in groups.items():
        out[name] = slice(start, start + len(vocab))
        start += len(vocab)
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def score(logits: np.ndarray, groups: dict[str, list[str]], text: str) -> float | None:
    """The log-probability of the text's known words under one crop's logits (the groups'
    vocabularies laid end to end, in order); None where the text has none of them."""
    found = text_words(groups, text)
    if not found:
        return None
    where = group_slices(groups)
    return sum(float(log_softmax(np.asarray(logits[where[name]], np.float64))[i]) for name, i in found.items())
