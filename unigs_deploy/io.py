"""Images, label maps, COCO RLE and COCO panoptic outputs; every write is atomic."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or Ctrl-C leaves the old file (or none), never a half-written one. The file gets the
    mode a plain `open()` would give it (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # the block may have written it under another name and moved it
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a new empty folder beside `path`; it replaces `path` only if the block succeeds.

    A model folder (a trained model, a soup, the shipped demo) is whole or absent, never
    half-written: a failed block removes its folder and leaves the old one as it was
    (`replace_dir` swaps them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private (0700); give it mkdir's mode
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the folder `src` onto `dst`, replacing whatever is there.

    POSIX cannot rename a folder onto a non-empty one, so the old `dst` is first renamed aside
    and removed only once `src` has taken its place: if this is interrupted between the two
    renames, the old folder is put back (or, after a hard kill, waits whole beside `dst` as
    `.<name>.old-*`); it is never deleted before its replacement is in place.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists() or dst.is_symlink():
        old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
        old.rmdir()  # a unique free name to rename onto
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None and not dst.exists():
            os.replace(old, dst)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _umask() -> int:
    """The process' umask, read without changing it where Linux says it (os.umask alone would set
    it, racing with other threads' file creation)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _imread(path, flag: int, what: str) -> np.ndarray:
    if not Path(path).is_file():  # checked first: OpenCV prints a warning of its own for a missing file
        raise ValueError(f"cannot read {what} from {path}: no such file")
    img = cv2.imread(str(path), flag)
    if img is None:
        raise ValueError(f"cannot read {what} from {path}: not an image OpenCV can decode")
    return img


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path, obj) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _encode_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode an array of shape {array.shape} and dtype {array.dtype} as PNG")
    return buf.tobytes()


def write_image(path, rgb: np.ndarray) -> Path:
    """(H, W, 3) or (H, W) uint8 -> PNG (RGB order in, as everywhere in this package)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W[, 3]) uint8, got {rgb.dtype} {rgb.shape}")
    return write_bytes(path, _encode_png(rgb[..., ::-1] if rgb.ndim == 3 else rgb))


def read_image(path) -> np.ndarray:
    """Any image file -> (H, W, 3) uint8 RGB."""
    return _imread(path, cv2.IMREAD_COLOR, "an image")[..., ::-1].copy()


def read_mask(path) -> np.ndarray:
    """A mask image -> (H, W) bool: any non-zero pixel is inside."""
    return _imread(path, cv2.IMREAD_GRAYSCALE, "a mask") > 0


def write_labels(path, labels: np.ndarray) -> Path:
    """Label map -> PNG, 8-bit when labels fit, else 16-bit (values are the labels)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.size and labels.min() < 0:
        raise ValueError(f"labels must be a non-negative (H, W) integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() > 65535:
        raise ValueError(f"{labels.max()} labels do not fit a 16-bit PNG")
    dtype = np.uint8 if not labels.size or labels.max() <= 255 else np.uint16
    return write_bytes(path, _encode_png(labels.astype(dtype)))


def read_labels(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        raise ValueError(f"cannot read a label map from {path}: expected a single-channel PNG")
    return img.astype(np.int32)


def masks_to_rle(masks: np.ndarray) -> list[dict]:
    """(K, H, W) bool -> COCO RLE dicts (counts as str, JSON-ready)."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got {masks.shape}")
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def rle_to_masks(rles: list[dict]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not rles:
        raise ValueError("no RLE given")
    enc = [dict(r, counts=r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]) for r in rles]
    return mask_utils.decode(enc).transpose(2, 0, 1).astype(bool)


def labels_to_panoptic(labels: np.ndarray, category_id: int = 1) -> tuple[np.ndarray, list[dict]]:
    """Label map -> COCO panoptic RGB (id = R + 256 G + 256^2 B, 0 = void) and segments_info."""
    labels = np.asarray(labels)
    rgb = np.stack([labels % 256, labels // 256 % 256, labels // 65536 % 256], -1).astype(np.uint8)
    segments = []
    for k in np.unique(labels):
        if k == 0:
            continue
        ys, xs = np.nonzero(labels == k)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append({
            "id": int(k),
            "category_id": int(category_id),
            "area": int(ys.size),
            "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            "iscrowd": 0,
        })
    return rgb, segments


def write_panoptic(png_path, json_path, labels: np.ndarray, *, file_name: str | None = None,
                   image_id: int | str = 0, category_id: int = 1) -> tuple[Path, Path]:
    """Write a COCO panoptic PNG and its annotation JSON (one `annotations` entry)."""
    rgb, segments = labels_to_panoptic(labels, category_id)
    write_image(png_path, rgb)
    write_json(json_path, {
        "annotations": [{"image_id": image_id, "file_name": file_name or Path(png_path).name,
                         "segments_info": segments}],
        "categories": [{"id": category_id, "name": "entity", "isthing": 1}],
    })
    return Path(png_path), Path(json_path)


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """Label map -> a viewable RGB picture (background black, fixed colours per label)."""
    rng = np.random.default_rng(12345)
    lut = rng.integers(60, 256, (int(labels.max()) + 1, 3)).astype(np.uint8)
    lut[0] = 0
    return lut[labels]


def to_rgb8(image: np.ndarray, what: str = "image") -> tuple[np.ndarray, list[str]]:
    """Any of grayscale, RGB, RGBA, 8 or 16 bit -> (H, W, 3) uint8 RGB, and notes of what changed."""
    a = np.asarray(image)
    notes = []
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{what} must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{what} is empty (shape {a.shape})")
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        notes.append(f"{what}: 16-bit converted to 8-bit")
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or inf")
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{what} is float outside [0, 1]: give uint8 or floats in [0, 1]")
        a = np.rint(a * 255)
        notes.append(f"{what}: float [0, 1] converted to 8-bit")
    elif a.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, uint16 or float in [0, 1], got {a.dtype}")
    a = a.astype(np.uint8)
    if a.ndim == 2 or a.shape[2] == 1:
        a = np.repeat(a.reshape(a.shape[0], a.shape[1], 1), 3, axis=2)
        notes.append(f"{what}: grayscale expanded to RGB")
    elif a.shape[2] == 4:
        a = a[..., :3]
        notes.append(f"{what}: alpha channel dropped")
    return np.ascontiguousarray(a), notes


def read_any_image(path) -> tuple[np.ndarray, list[str]]:
    """An image file of any depth and channel count -> (H, W, 3) uint8 RGB and conversion notes."""
    img = _imread(path, cv2.IMREAD_UNCHANGED, "an image")
    if img.ndim == 3:
        img = img[..., [2, 1, 0, 3][: img.shape[2]]] if img.shape[2] in (3, 4) else img
    return to_rgb8(img, what=str(path))
