"""The Python side of libunigs.so (cffi embedding): C buffers in, C buffers out, status codes.

Called only from the C entry points that capi/build.py generates; every exception becomes a
status code and a message for unigs_last_error(), never a crash.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dichotomy

OK, INVALID, TOO_SMALL, ENGINE, INTERNAL, CANCELLED = 0, 1, 2, 3, 4, 5
LABELS, RGB, MASK = 0, 1, 2
_ITEM = {LABELS: 4, RGB: 3, MASK: 1}
C_OFF = {"rerank": "-1 (agreement) or 0"}  # how a C caller turns off a setting whose component is missing

_handles: dict[int, dict] = {}
_next = [1]
_local = threading.local()


class CError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def required_size(kind: int, width: int, height: int) -> int:
    if kind not in _ITEM or width <= 0 or height <= 0:
        return 0
    return _ITEM[kind] * width * height


def set_error(handle_id: int, message: str) -> None:
    if handle_id and handle_id in _handles:
        _handles[handle_id]["error"] = message
    else:
        _local.error = message


def last_error(handle_id: int) -> bytes:
    if handle_id and handle_id in _handles:
        return _handles[handle_id]["error"].encode()
    return getattr(_local, "error", "").encode()


def guard(handle_id: int, fn, *args) -> int:
    """Run fn; map failures to status codes and remember the message."""
    try:
        if handle_id:
            entry = _handles.get(handle_id)
            if entry is None:
                raise CError(INVALID, "invalid or closed handle")
            with entry["lock"]:
                fn(*args)
        else:
            fn(*args)
        set_error(handle_id, "")
        return OK
    except CError as e:
        set_error(handle_id, str(e))
        return e.code
    except ValueError as e:
        set_error(handle_id, str(e))
        return INVALID
    except Exception as e:  # the boundary: nothing may escape into C
        set_error(handle_id, f"{type(e).__name__}: {e}")
        return INTERNAL


# ------------------------------------------------------------------ buffers


def read_rgb(ffi, ptr, width: int, height: int, stride: int, what: str = "rgb") -> np.ndarray:
    if ptr == ffi.NULL:
        raise CError(INVALID, f"{what} is NULL")
    if width <= 0 or height <= 0:
        raise CError(INVALID, f"image size {width}x{height}: width and height must be positive")
    if stride < 3 * width:
        raise CError(INVALID, f"{what} stride {stride} is less than 3 * width ({3 * width})")
    buf = np.frombuffer(ffi.buffer(ptr, stride * (height - 1) + 3 * width), np.uint8)
    if stride == 3 * width:  # packed rows: a view, no copy (the callee only reads it)
        return buf.reshape(height, width, 3)
    rows = np.lib.stride_tricks.as_strided(buf, (height, 3 * width), (stride, 1))
    return rows.reshape(height, width, 3).copy()


def read_mask(ffi, ptr, width: int, height: int, stride: int, what: str = "mask") -> np.ndarray:
    if ptr == ffi.NULL:
        raise CError(INVALID, f"{what} is NULL")
    if stride < width:
        raise CError(INVALID, f"{what} stride {stride} is less than width ({width})")
    buf = np.frombuffer(ffi.buffer(ptr, stride * (height - 1) + width), np.uint8)
    return np.lib.stride_tricks.as_strided(buf, (height, width), (stride, 1)) > 0


def write_out(ffi, ptr, size: int, array: np.ndarray, what: str) -> None:
    if ptr == ffi.NULL:
        if size:
            raise CError(INVALID, f"{what} is NULL but its size is {size}")
        return
    data = np.ascontiguousarray(array)
    if size < data.nbytes:
        raise CError(TOO_SMALL, f"{what} holds {size} bytes, {data.nbytes} are needed "
                                "(unigs_required_size tells the size)")
    ffi.memmove(ptr, ffi.from_buffer(data), data.nbytes)


def text(ffi, ptr, what: str = "prompt") -> str:
    if ptr == ffi.NULL:
        raise CError(INVALID, f"{what} is NULL (pass \"\" for no text)")
    return ffi.string(ptr).decode("utf-8", errors="replace")


def switch(value: int, name: str, choices: str) -> bool | None:
    """A C int switch: 1 -> True, -1 -> False, 0 -> None (the model's default)."""
    if value not in (-1, 0, 1):
        raise CError(INVALID, f"{name} {value} must be {choices} or 0 (the model's default)")
    return {1: True, -1: False, 0: None}[value]


def loop_params(ffi, p) -> dict:
    """0 in steps, guidance or threshold (NULL in a name) means the task's default: the model's (its
    manifest), else tasks.py's."""
    if p == ffi.NULL:
        return {}
    if p.steps < 0:
        raise CError(INVALID, f"steps {p.steps} must be >= 1 (0 = the task's default)")
    if p.resolution < -1:
        raise CError(INVALID, f"resolution {p.resolution}: 0 = native, -1 = the input's size, N > 0 = N pixels")
    resolution = {0: "native", -1: "input"}.get(p.resolution, p.resolution)
    if p.threshold < 0:
        raise CError(INVALID, f"threshold {p.threshold} must be > 0 (0 = the task's default)")
    names = {k: ffi.string(getattr(p, k)).decode() if getattr(p, k) != ffi.NULL else None
             for k in ("scheduler", "spacing", "stop", "tiny_vae")}
    interval = (float(p.guidance_interval[0]), float(p.guidance_interval[1]))
    if interval != (0.0, 0.0):
        from .pipeline import check_interval

        try:
            check_interval(interval)
        except ValueError:
            raise CError(INVALID, f"guidance_interval {{{interval[0]:g}, {interval[1]:g}}}: give timesteps "
                                  "0 <= LOW <= HIGH (e.g. {600, 1000}), or {0, 0} for the task's default") from None
    kw = {"steps": p.steps or None, "guidance": p.guidance if p.guidance > 0 else None, "seed": int(p.seed),
          "guidance_interval": None if interval == (0.0, 0.0) else interval,
          "eta": float(p.eta), "resolution": resolution, "threshold": float(p.threshold) or None, **names}
    if p.progress != ffi.NULL:
        progress, user = p.progress, p.user_data

        def callback(i, total, t, z):
            if progress(i + 1, total, user) != 0:
                raise CError(CANCELLED, f"cancelled by the progress callback after step {i + 1} of {total}")

        kw["callback"] = callback
    return kw


# ------------------------------------------------------------------ the calls


def open_engine(ffi, path_ptr, options) -> int:
    from .pipeline import UniGSPipeline

    if path_ptr == ffi.NULL:
        raise CError(INVALID, "engine_path is NULL")
    threads, provider, backend = 0, "auto", "onnxruntime"
    if options != ffi.NULL:
        threads = options.threads
        if options.provider != ffi.NULL:
            provider = ffi.string(options.provider).decode()
        if options.backend != ffi.NULL:
            backend = ffi.string(options.backend).decode()
    try:
        pipe = UniGSPipeline.from_engine(ffi.string(path_ptr).decode(), provider=provider, threads=threads,
                                         backend=backend)
    except ValueError as e:
        raise CError(ENGINE, str(e)) from None
    hid = _next[0]
    _next[0] += 1
    _handles[hid] = {"pipe": pipe, "lock": threading.Lock(), "error": ""}
    return hid


def close(handle_id: int) -> None:
    _handles.pop(handle_id, None)


def decode(ffi, cm, w, h, stride, params, out, size, n_out) -> None:
    """Zero-copy both ways: the colormap is read in place and the labels land in `out`."""
    colormap = read_rgb(ffi, cm, w, h, stride, "colormap")
    kw = {}
    if params != ffi.NULL:
        kw = {"threshold": params.threshold or dichotomy.DEFAULT_THRESHOLD,
              "min_area": dichotomy.DEFAULT_MIN_AREA if params.min_area < 0 else params.min_area,
              "max_depth": params.max_depth or dichotomy.DEFAULT_MAX_DEPTH,
              "keep_background": bool(params.keep_background)}
    if out == ffi.NULL:
        raise CError(INVALID, "labels_out is NULL")
    if size < required_size(LABELS, w, h):
        raise CError(TOO_SMALL, f"labels_out holds {size} bytes, {required_size(LABELS, w, h)} are needed "
                                "(unigs_required_size tells the size)")
    labels = np.frombuffer(ffi.buffer(out, 4 * w * h), np.int32).reshape(h, w)
    _, k = dichotomy.decode_colormap_counted(colormap, out=labels, **kw)
    if n_out != ffi.NULL:
        n_out[0] = k


def segment(ffi, hid, rgb, w, h, stride, params, out, size, n_out) -> None:
    if out == ffi.NULL:
        raise CError(INVALID, "labels_out is NULL")
    image = read_rgb(ffi, rgb, w, h, stride)
    if size < required_size(LABELS, w, h):
        raise CError(TOO_SMALL, f"labels_out holds {size} bytes, {required_size(LABELS, w, h)} are needed")
    res = _handles[hid]["pipe"].segment(image, **loop_params(ffi, params))
    write_out(ffi, out, size, res.labels, "labels_out")
    if n_out != ffi.NULL:
        n_out[0] = int(res.labels.max())


def refer(ffi, hid, rgb, w, h, stride, mask, mask_stride, prompt, params, out, size) -> None:
    if out == ffi.NULL:
        raise CError(INVALID, "mask_out is NULL")
    image = read_rgb(ffi, rgb, w, h, stride)
    region = read_mask(ffi, mask, w, h, mask_stride)
    if size < required_size(MASK, w, h):
        raise CError(TOO_SMALL, f"mask_out holds {size} bytes, {required_size(MASK, w, h)} are needed")
    res = _handles[hid]["pipe"].refer(image, region, text(ffi, prompt), **loop_params(ffi, params))
    write_out(ffi, out, size, res.mask.astype(np.uint8) * 255, "mask_out")


def inpaint(ffi, hid, rgb, w, h, stride, masks, mask_stride, prompts, n, params, img_out, img_size, cm_out, cm_size,
            lab_out, lab_size) -> None:
    image = read_rgb(ffi, rgb, w, h, stride)
    if n <= 0:
        raise CError(INVALID, f"n_regions is {n}: give at least one mask and prompt")
    if masks == ffi.NULL or prompts == ffi.NULL:
        raise CError(INVALID, "masks or prompts is NULL")
    regions = [(read_mask(ffi, masks[i], w, h, mask_stride, f"masks[{i}]"), text(ffi, prompts[i], f"prompts[{i}]"))
               for i in range(n)]
    for ptr, size, kind, what in ((img_out, img_size, RGB, "image_out"), (cm_out, cm_size, RGB, "colormap_out"),
                                  (lab_out, lab_size, LABELS, "labels_out")):
        if ptr != ffi.NULL and size < required_size(kind, w, h):
            raise CError(TOO_SMALL, f"{what} holds {size} bytes, {required_size(kind, w, h)} are needed")
    kw = loop_params(ffi, params)
    if params != ffi.NULL:
        kw["keep_unmasked"] = switch(params.keep_unmasked, "keep_unmasked", "1 (keep), -1 (redraw)")
        kw["locate"] = ffi.string(params.locate).decode() if params.locate != ffi.NULL else None
        if params.candidates < 0:
            raise CError(INVALID, f"candidates {params.candidates} must be >= 1 (0: the model's default)")
        kw["candidates"] = params.candidates or None
        kw["rerank"] = switch(params.rerank, "rerank", "1 (the reranker), -1 (agreement)")
    from .pipeline import MissingComponent

    try:
        res = _handles[hid]["pipe"].inpaint(image, regions, **kw)
    except MissingComponent as e:
        raise CError(INVALID, f"{e.setting} 1 {e.reason}: set {e.setting} to {C_OFF[e.setting]}") from None
    write_out(ffi, img_out, img_size, res.image, "image_out")
    write_out(ffi, cm_out, cm_size, res.colormap, "colormap_out")
    write_out(ffi, lab_out, lab_size, res.labels, "labels_out")


def synthesize(ffi, hid, cm, w, h, stride, prompt, params, out, size) -> None:
    if out == ffi.NULL:
        raise CError(INVALID, "image_out is NULL")
    colormap = read_rgb(ffi, cm, w, h, stride, "colormap")
    if size < required_size(RGB, w, h):
        raise CError(TOO_SMALL, f"image_out holds {size} bytes, {required_size(RGB, w, h)} are needed")
    res = _handles[hid]["pipe"].synthesize(colormap, text(ffi, prompt), **loop_params(ffi, params))
    write_out(ffi, out, size, res.image, "image_out")
