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

import onnx

from .to_onnx import check, save_model

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


def convert(src: Path, dst: Path, *, component: str) -> dict:
    from onnxconverter_common import float16

    fd, inferred = tempfile.mkstemp(dir=dst.parent, suffix=".onnx")
    os.close(fd)
    try:
        onnx.shape_inference.infer_shapes_path(str(src), inferred)
        model = onnx.load(inferred, load_external_data=True)
    finally:
        os.unlink(inferred)
    keep = fp32_nodes(model, component)
    blocked_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                             op_block_list=blocked_ops, node_block_list=keep)
    del model.graph.value_info[:]  # fp32 types inferred before the conversion are stale now
    save_model(model, dst)
    check(dst)
    return {"fp32_ops": FP32_OPS, "fp32_nodes": len(keep)}
