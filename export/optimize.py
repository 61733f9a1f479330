"""onnxruntime's transformer optimizer, limited to fusions that have CPU kernels.

The UNet optimizer's default fusions (NhwcConv, GroupNorm, SkipGroupNorm, BiasSplitGelu,
BiasAdd, packed QKV/KV) exist only for CUDA: a graph with them fails to load on CPU. For a CPU
target they are switched off; attention and the other fusions stay.
"""

from __future__ import annotations

from pathlib import Path

from .to_onnx import save_model

MODEL_TYPE = {"unet": "unet", "vae_encoder": "vae", "vae_decoder": "vae", "text_encoder": "clip"}


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
    m = optimizer.optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                                 optimization_options=opts, use_gpu=target != "cpu", only_onnxruntime=False)
    fused = m.get_fused_operator_statistics()
    save_model(m.model, dst)  # contrib ops: onnx.checker cannot read them; validation runs it on ORT
    return {k: v for k, v in fused.items() if v}
