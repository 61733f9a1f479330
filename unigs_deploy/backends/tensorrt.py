"""TensorRT 10 backend: one engine and execution context per component, one CUDA stream,
device buffers allocated once per input shape. tensorrt and polygraphy's CUDA wrapper are
imported when an engine is opened, never before."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MISSING = ("TensorRT engines (.plan) need the tensorrt package and an NVIDIA GPU, neither found here; "
           "run the ONNX engine instead: --engine {onnx}")


class TensorRTMissing(RuntimeError):
    pass


def profile_error(plan: str, name: str, shape: tuple, lo: tuple, hi: tuple) -> str:
    """The one line for an input outside the engine's optimisation profile."""
    return (f"{plan}: input {name} has shape {'x'.join(map(str, shape))}, outside the engine's profile "
            f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}: use --resolution native (or an N inside the "
            "range), or rebuild with unigs-export --from-onnx DIR --trt --height MIN:OPT:MAX --width MIN:OPT:MAX")


def available() -> bool:
    try:
        import tensorrt  # noqa: F401
        from polygraphy import cuda  # noqa: F401
    except Exception:
        return False
    return True


class TrtSession:
    """Runs one TensorRT plan (a `backends.base.Runner`)."""

    def __init__(self, path: str | Path):
        import tensorrt as trt
        from polygraphy import cuda

        self._trt, self._cuda = trt, cuda
        self.path = Path(path)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{self.path} is not a TensorRT engine for this TensorRT version and GPU: rebuild it "
                             "with unigs-export --from-onnx DIR --trt")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._device: dict = {}
        self._host_out: np.ndarray | None = None
        self._shapes = None

    @property
    def provider(self) -> str:
        return "TensorRT"

    def close(self) -> None:
        for buf in self._device.values():
            buf.free()
        self._device = {}
        self.stream.free()
        self.context = self.engine = self.runtime = None

    def __enter__(self) -> TrtSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _allocate(self, feed: dict) -> None:
        for n in self.inputs:
            shape = tuple(feed[n].shape)
            if not self.context.set_input_shape(n, shape):
                lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0))
                raise ValueError(profile_error(self.path.name, n, shape, lo, hi))
        for n in self.inputs + self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            buf = self._device.get(n)
            if buf is None:
                buf = self._device[n] = self._cuda.DeviceArray(shape=shape, dtype=self.dtypes[n])
            else:
                buf.resize(shape)
            self.context.set_tensor_address(n, buf.ptr)
        out = self.outputs[0]
        self._host_out = np.empty(tuple(self.context.get_tensor_shape(out)), self.dtypes[out])

    def __call__(self, **feed: np.ndarray) -> np.ndarray:
        feed = {n: np.ascontiguousarray(feed[n], dtype=self.dtypes[n]) for n in self.inputs}
        shapes = tuple(feed[n].shape for n in self.inputs)
        if shapes != self._shapes:
            self._allocate(feed)
            self._shapes = shapes
        for n in self.inputs:
            self._device[n].copy_from(feed[n], stream=self.stream)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError(f"TensorRT execution failed for {self.path.name}")
        self._device[self.outputs[0]].copy_to(self._host_out, stream=self.stream)
        self.stream.synchronize()
        return self._host_out
