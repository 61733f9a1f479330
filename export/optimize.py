"""onnxruntime's transformer optimizer, limited to fusions that have CPU kernels.

The UNet optimizer's default fusions (NhwcConv, GroupNorm, SkipGroupNorm, BiasSplitGelu,
BiasAdd, packed QKV/KV) exist only for CUDA: a graph with them fails to load on CPU. For a CPU
target they are switched off; attention and the other fusions stay.

Self-attention then fuses to the packed `Attention` op, whose CPU kernel materialises the
(S x S) scores per head; `MultiHeadAttention` with separate Q, K, V runs MLAS's tiled flash
attention on CPU instead. Profiled on the sd15 UNet at 512x512 (4096 tokens): `Attention` took
29% of a step. So for CPU each `Attention` is rewritten as three MatMuls and a
`MultiHeadAttention` (same weights, same bias).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import onnx
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from .to_onnx import save_model, save_streaming

MODEL_TYPE = {"unet": "unet", "vae_encoder": "vae", "vae_decoder": "vae", "text_encoder": "clip",
              "tiny_vae_encoder": "vae", "tiny_vae_decoder": "vae", "reranker": "vae"}


def optimize(src: Path, dst: Path, *, component: str, target: str = "cpu") -> dict:
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    model_type = MODEL_TYPE[component]
    opts = FusionOptions(model_type)
    if target == "cpu":
        for flag in ("enable_group_norm", "enable_skip_group_norm", "enable_nhwc_conv", "enable_bias_splitgelu",
                     "enable_bias_add", "enable_packed_qkv", "enable_packed_kv"):
            if hasattr(opts, flag):
                setattr(opts, flag, False)
    # A model with external data is optimized with its weights left on disk: the fusions read the
    # few they need (attention projections) from the .data file on demand, relative to the working
    # folder, and the result streams to dst. Loading it whole cost ~20 GB on the sd15 UNet.
    model = onnx.load(str(src), load_external_data=False)
    external = any(uses_external_data(t) for t in _get_all_tensors(model))
    if not external:
        model = onnx.load(str(src))
    with _working_folder(src.parent):
        m = optimizer.optimize_model(model, model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                                     optimization_options=opts, use_gpu=target != "cpu", only_onnxruntime=False)
        fused = m.get_fused_operator_statistics()
        if target == "cpu":
            n = unpack_self_attention(m.model)
            if n:
                fused["Attention"] = fused.get("Attention", 0) - n
                fused["MultiHeadAttention"] = fused.get("MultiHeadAttention", 0) + n
    # contrib ops: onnx.checker cannot read them; validation runs the result on onnxruntime
    if external:
        save_streaming(m.model, src.parent, dst)
    else:
        save_model(m.model, dst)
    return {k: v for k, v in fused.items() if v}


@contextlib.contextmanager
def _working_folder(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def unpack_self_attention(model) -> int:
    """Attention(x, W[C, 3C], b[3C]) -> MultiHeadAttention(x Wq, x Wk, x Wv, b), in place; returns
    how many were rewritten. Nodes with a mask, past state or unusual packing are left alone."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes, done, dropped = [], 0, set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = inits.get(node.input[1]) if node.op_type == "Attention" and len(node.input) >= 2 else None
        if (w is None or len(node.input) > 3 or len(node.output) != 1 or set(attrs) - {"num_heads"}
                or len(w.dims) != 2 or w.dims[1] != 3 * w.dims[0]):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(w)
        c = weight.shape[0]
        names = []
        for part, cols in zip("qkv", (slice(0, c), slice(c, 2 * c), slice(2 * c, 3 * c)), strict=True):
            wname = f"{node.name}_{part}_weight"
            graph.initializer.append(numpy_helper.from_array(weight[:, cols].copy(), wname))
            out = f"{node.name}_{part}"
            nodes.append(helper.make_node("MatMul", [node.input[0], wname], [out], name=f"{node.name}_{part}_MatMul"))
            names.append(out)
        bias = node.input[2] if len(node.input) == 3 else ""
        nodes.append(helper.make_node("MultiHeadAttention", [*names, bias] if bias else names, list(node.output),
                                      name=f"{node.name}_mha", domain="com.microsoft",
                                      num_heads=attrs["num_heads"]))
        dropped.add(w.name)
        done += 1
    if done:
        used = {i for n in nodes for i in n.input}
        keep = [t for t in graph.initializer if t.name not in dropped or t.name in used]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return done
