"""Mixed precision for GPU targets: fp16 weights and activations, the overflow-prone ops in fp32.

Kept in fp32: normalisation statistics (InstanceNormalization is how the exporter writes
GroupNorm; LayerNormalization; the Pow/ReduceMean/Sqrt of hand-written norms), the graph's own
casts to float, the timestep embedding, and the VAE decoder's up blocks, whose activations pass
the fp16 range on real images. Inputs and outputs stay fp32.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from .to_onnx import check, save_model, save_streaming

FP32_OPS = ["InstanceNormalization", "LayerNormalization", "GroupNormalization", "ReduceMean", "Pow", "Sqrt"]
# timestep * frequency reaches ~1000: in fp16 (resolution 0.5 there) its sin/cos would be noise
FP32_SCOPES = ("/time_proj/", "/time_embedding/")


def fp32_nodes(model: onnx.ModelProto, component: str) -> list[str]:
    """Nodes kept in fp32 by name: casts to float, the timestep embedding, the VAE decoder's up blocks."""
    keep = [n.name for n in model.graph.node
            if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
            or any(scope in n.name for scope in FP32_SCOPES)]
    if component == "vae_decoder":
        keep += [n.name for n in model.graph.node if "/up_blocks" in n.name]
    return keep


def _to_fp16(tensor, blob: bytes) -> bytes:
    """An fp32 initializer the converter retyped to fp16, converted as onnxconverter-common does."""
    from onnxconverter_common import float16

    if tensor.data_type != onnx.TensorProto.FLOAT16 or len(blob) != 4 * int(np.prod(tensor.dims)):
        return blob
    return float16.convert_np_to_float16(np.frombuffer(blob, np.float32)).tobytes()


def convert(src: Path, dst: Path, *, component: str) -> dict:
    from onnxconverter_common import float16

    fd, inferred = tempfile.mkstemp(dir=src.parent, suffix=".onnx")  # beside src: its .data stays reachable
    os.close(fd)
    try:
        onnx.shape_inference.infer_shapes_path(str(src), inferred)
        # a model with external data is converted with its weights left on disk: the converter
        # retypes those initializers, and each one is converted as it streams to dst
        model = onnx.load(inferred, load_external_data=False)
        external = any(uses_external_data(t) for t in _get_all_tensors(model))
        if not external:
            model = onnx.load(inferred)
    finally:
        os.unlink(inferred)
    keep = fp32_nodes(model, component)
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                             op_block_list=blocked_ops, node_block_list=keep)
    del model.graph.value_info[:]  # fp32 types inferred before the conversion are stale now
    if external:
        save_streaming(model, src.parent, dst, convert=_to_fp16)
    else:
        save_model(model, dst)
    check(dst)
    return {"fp32_ops": FP32_OPS, "fp32_nodes": len(keep)}
