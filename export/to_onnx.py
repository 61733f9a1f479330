"""torch -> ONNX for one component: export, clean, check, save (external data past 2 GB)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

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
        model = onnx.load(str(raw), load_external_data=True)
        if slim and _fits_protobuf(model) and model.ByteSize() < _TWO_GB:
            import onnxslim

            model = onnxslim.slim(model)
        else:  # onnxslim cannot serialise past 2 GB; the exporter already folded constants
            model = _cleanup(model)
        save_model(model, out_path)
        del model
    check(out_path)
    return out_path


def _cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dead nodes and unused initializers out, nodes in topological order (onnx-graphsurgeon)."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return gs.export_onnx(graph)


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


def files_of(path: Path) -> list[Path]:
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]
