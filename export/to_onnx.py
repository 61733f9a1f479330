"""torch -> ONNX for one component: export, clean, check, save (external data past 2 GB)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from unigs_deploy.io import atomic_path

from .components import Spec

OPSET = 17
_TWO_GB = 2**31 - 2**20  # protobuf's limit, with headroom


def export_component(spec: Spec, example: dict, out_path: Path, *, slim: bool = True) -> Path:
    """Trace `spec.module` with the legacy exporter (dynamo=False: no onnxscript needed), clean
    the graph with onnxslim (constant folding, dead nodes), check it, and save to `out_path`."""
    names = list(spec.inputs)
    args = tuple(example[n] for n in names)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".trace-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about Python bools in diffusers' shape checks
            torch.onnx.export(spec.module, args, str(raw), input_names=names, output_names=list(spec.outputs),
                              dynamic_axes=spec.dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
        model = onnx.load(str(raw), load_external_data=False)
        external = any(onnx.external_data_helper.uses_external_data(t)
                       for t in onnx.external_data_helper._get_all_tensors(model))
        if external:  # past 2 GB: the weights stream from the tracer's files into one .data file
            save_streaming(model, raw.parent, out_path)
        else:
            if slim:
                import onnxslim

                model = onnxslim.slim(model)
            save_model(model, out_path)
        del model
    check(out_path)
    return out_path


def save_streaming(model: onnx.ModelProto, src_dir: Path, out_path: Path, *, convert=None) -> None:
    """Write `model` as out_path + one `.data` file, one tensor in memory at a time: tensors still
    on disk (external data relative to `src_dir`, e.g. the tracer's per-tensor files) are copied
    over, tensors in memory of 1 KB and more move out. onnx's own merge loads every weight at
    once (+2.6 GB peak on the sd15 UNet). `convert(tensor, blob) -> blob` may rewrite a tensor
    read from disk on its way (the fp16 conversion)."""
    from onnx.external_data_helper import (
        ExternalDataInfo,
        _get_all_tensors,
        _get_initializer_tensors,
        uses_external_data,
    )

    # attribute tensors (Constant nodes) stay inline: onnxruntime's shape inference reads them
    initializers = {t.name for t in _get_initializer_tensors(model) if t.name}
    data = out_path.with_name(out_path.name + ".data")
    with atomic_path(data) as tmp, open(tmp, "wb") as f:
        for tensor in _get_all_tensors(model):
            if uses_external_data(tensor):
                info = ExternalDataInfo(tensor)
                with open(src_dir / info.location, "rb") as src:
                    src.seek(info.offset or 0)
                    blob = src.read(info.length) if info.length else src.read()
                if convert is not None:
                    blob = convert(tensor, blob)
            elif tensor.name in initializers and tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
                blob = tensor.raw_data
            else:
                continue
            f.write(b"\0" * (-f.tell() % 4096))  # page-aligned, so onnxruntime can map tensors
            offset = f.tell()
            f.write(blob)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(len(blob)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(out_path))


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save with all weights in one `<name>.data` file when the model passes 2 GB."""
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if not _fits_protobuf(model) or model.ByteSize() > _TWO_GB:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _fits_protobuf(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # protobuf raises EncodeError (or ValueError, by version) past 2 GB
        return False


def check(path: Path) -> None:
    """onnx.checker and strict shape inference on the saved file (path-based: works past 2 GB)."""
    onnx.checker.check_model(str(path), full_check=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx")
    os.close(fd)
    try:
        onnx.shape_inference.infer_shapes_path(str(path), tmp, strict_mode=True)
    finally:
        os.unlink(tmp)


def move(src: Path, dst: Path) -> None:
    """Rename a model and its `.data` file, and point the model's tensors at the new data file
    (a renamed `.data` with a stale `location` inside the model makes every later load fail)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    src_data, dst_data = src.with_name(src.name + ".data"), dst.with_name(dst.name + ".data")
    if not src_data.exists():
        os.replace(src, dst)
        return
    os.replace(src_data, dst_data)
    model = onnx.load(str(src), load_external_data=False)
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = dst_data.name
    with atomic_path(dst) as tmp:
        onnx.save_model(model, str(tmp))
    src.unlink()


def files_of(path: Path) -> list[Path]:
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]
