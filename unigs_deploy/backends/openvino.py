"""OpenVINO backend: the exported ONNX files compiled by OpenVINO's CPU plugin (it reads ONNX
directly, no conversion step). Optional: `pip install 'unigs-deploy[openvino]'`; imported only
when a runner is opened. fp32 is pinned (the CPU plugin would otherwise pick bf16 on CPUs that
have it), so it agrees with onnxruntime to export tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MISSING = "the openvino backend needs the openvino package: pip install 'unigs-deploy[openvino]'"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except Exception:
        return False
    return True


class OvSession:
    """Runs one ONNX component on OpenVINO (a `backends.base.Runner`). One infer request per
    component; the returned array is the request's output tensor: the next call overwrites it."""

    def __init__(self, path: str | Path, *, threads: int = 0, device: str = "CPU"):
        import openvino as ov

        self.path = Path(path)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line text
            raise ValueError(f"OpenVINO cannot read {self.path.name} ({str(e).splitlines()[0]}); graphs exported "
                             "with --optimize hold onnxruntime-only ops: export without it for OpenVINO") from None
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.input_types = {i.get_any_name(): np.dtype(i.get_element_type().to_dtype()) for i in self.compiled.inputs}
        self.inputs = list(self.input_types)
        self._device = device

    @property
    def provider(self) -> str:
        return f"OpenVINO {self._device}"

    def close(self) -> None:
        self.request = self.compiled = None

    def __call__(self, **feed: np.ndarray) -> np.ndarray:
        missing = set(self.input_types) - set(feed)
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {sorted(missing)}")
        arrays = {k: np.ascontiguousarray(feed[k], dtype=t) for k, t in self.input_types.items()}
        self.request.infer(arrays, share_inputs=True)
        return self.request.get_output_tensor(0).data
