"""Backends run one exported component each (`base.Runner`); `open_components` picks them from
the manifest."""

from __future__ import annotations

from pathlib import Path

from ..manifest import COMPONENTS, OPTIONAL_COMPONENTS, Manifest
from .base import Runner


class EngineError(ValueError):
    """An engine path or file that cannot be run; the message says what to do."""


BACKENDS = ("onnxruntime", "openvino")


def open_components(engine: str | Path, *, provider: str = "auto", threads: int = 0,
                    backend: str = "onnxruntime", int8: bool = False) -> tuple[dict, Manifest]:
    """Engine file (`unigs.plan` / `unigs.onnx`) or folder -> ({component: Runner}, manifest).

    A `.plan` engine takes every component from TensorRT where the manifest has a plan for it,
    else from ONNX; an `.onnx` engine or a folder takes all from `backend` (onnxruntime or
    openvino) on the exported ONNX files.
    """
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)} "
                          "(TensorRT: give the .plan engine)")
    engine = Path(engine)
    if not engine.exists():
        raise EngineError(f"engine {engine} does not exist: export one with unigs-export --out {engine.parent}")
    if engine.is_file() and engine.suffix not in (".onnx", ".plan"):
        raise EngineError(f"{engine} is not an engine: give the .onnx or .plan file unigs-export wrote, or its folder")
    manifest = Manifest.load(engine)
    use_trt = engine.suffix == ".plan"
    if use_trt:
        from . import tensorrt as trt_backend

        if not trt_backend.available():
            raise EngineError(trt_backend.MISSING.format(onnx=manifest.path("unet")))
    elif backend == "openvino":
        from . import openvino as ov_backend

        if not ov_backend.available():
            raise EngineError(ov_backend.MISSING)
    runners: dict[str, Runner] = {}
    if int8:  # the quantized UNet runs on OpenVINO whatever runs the rest
        from . import openvino as ov_backend

        info = manifest.components["unet"].get("int8")
        if not info:
            raise EngineError(f"{manifest.folder} has no int8 UNet: make one with unigs-export --from-onnx "
                              f"{manifest.folder} --int8")
        if not ov_backend.available():
            raise EngineError(ov_backend.MISSING)
        runners["unet"] = ov_backend.OvSession(manifest.folder / info["file"], threads=threads)
    for name in COMPONENTS + tuple(c for c in OPTIONAL_COMPONENTS if c in manifest.components):
        if name in runners:
            continue
        plan = manifest.plan(name) if use_trt else None
        if plan is not None:
            from .tensorrt import TrtSession

            runners[name] = TrtSession(plan)
            continue
        path = manifest.path(name)
        if not path.is_file():
            raise EngineError(f"{path} is missing: the engine folder is incomplete; export again")
        if backend == "openvino":
            from .openvino import OvSession

            runners[name] = OvSession(path, threads=threads)
            continue
        from .onnxruntime import OrtSession

        try:
            runners[name] = OrtSession(path, provider=provider, threads=threads)
        except ValueError:
            raise
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise EngineError(f"{path} cannot be loaded by onnxruntime ({str(e).splitlines()[0]}): "
                              "export again") from None
    return runners, manifest
