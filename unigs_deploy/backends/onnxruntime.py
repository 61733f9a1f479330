"""ONNX Runtime backend: one session per component, outputs into buffers reused across calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
       "tensor(int32)": np.int32}


def providers_for(provider: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available \
            else ["CPUExecutionProvider"]
    name = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(provider, provider)
    if name not in available:
        raise ValueError(f"onnxruntime provider {provider!r} is not available here "
                         f"(available: {', '.join(available)}); use --provider cpu")
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


class OrtSession:
    """Runs one ONNX component (a `backends.base.Runner`). The session is created once; the
    output buffer is allocated once per input shape and bound with IO binding, so a denoising
    loop allocates nothing per step. The returned array is that buffer: the next call
    overwrites it."""

    def __init__(self, path: str | Path, *, provider: str = "auto", threads: int = 0):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=providers_for(provider))
        self.input_types = {i.name: _NP[i.type] for i in self.session.get_inputs()}
        self.inputs = list(self.input_types)
        self.output_name = self.session.get_outputs()[0].name
        self._binding = self.session.io_binding()
        self._key = None
        self._out: np.ndarray | None = None

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def close(self) -> None:
        self.session = self._binding = self._out = None

    def __call__(self, **feed: np.ndarray) -> np.ndarray:
        missing = set(self.input_types) - set(feed)
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {sorted(missing)}")
        arrays = {k: np.ascontiguousarray(feed[k], dtype=t) for k, t in self.input_types.items()}
        key = tuple(a.shape for a in arrays.values())
        try:
            if key != self._key:  # learn the output shape once, then bind a buffer for it
                self._out = self.session.run([self.output_name], arrays)[0]
                self._key = key
                return self._out
            io = self._binding
            io.clear_binding_inputs()
            for name, arr in arrays.items():
                io.bind_cpu_input(name, arr)
            io.bind_output(self.output_name, "cpu", 0, self._out.dtype, self._out.shape, self._out.ctypes.data)
            self.session.run_with_iobinding(io)
        except Exception as e:  # onnxruntime's own exception types; an allocation failure is out of memory
            if "allocate" in str(e).lower():
                shape = "x".join(map(str, next(iter(arrays.values())).shape))
                raise MemoryError(f"onnxruntime ran out of memory in {self.path.name} at input {shape}: use "
                                  "--resolution native or a smaller N, or an engine exported with --optimize") from None
            raise
        return self._out
