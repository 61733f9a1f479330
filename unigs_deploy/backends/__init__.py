"""Backends run one exported component each; `open_components` picks them from the manifest."""

from __future__ import annotations

from pathlib import Path

from .. import manifest as mf


class EngineError(ValueError):
    """An engine path or file that cannot be run; the message says what to do."""


def open_components(engine: str | Path, *, provider: str = "auto", threads: int = 0) -> tuple[dict, dict]:
    """Engine file (`unigs.plan` / `unigs.onnx`) or folder -> ({component: runner}, manifest).

    A `.plan` engine takes every component from TensorRT where the manifest has a plan for it,
    else from ONNX; an `.onnx` engine or a folder takes all from ONNX Runtime.
    """
    engine = Path(engine)
    if not engine.exists():
        raise EngineError(f"engine {engine} does not exist: export one with unigs-export --out {engine.parent}")
    if engine.is_file() and engine.suffix not in (".onnx", ".plan"):
        raise EngineError(f"{engine} is not an engine: give the .onnx or .plan file unigs-export wrote, or its folder")
    data = mf.load(engine)
    folder = Path(data["_folder"])
    use_trt = engine.suffix == ".plan"
    plans = data.get("engines", {}).get("tensorrt", {}).get("files", {}) if use_trt else {}
    if use_trt:
        from . import tensorrt as trt_backend

        if not trt_backend.available():
            raise EngineError(trt_backend.MISSING.format(onnx=folder / data["components"]["unet"]["files"][0]))
    runners = {}
    for name in mf.COMPONENTS:
        if name in plans:
            from .tensorrt import TrtSession

            runners[name] = TrtSession(folder / plans[name])
        else:
            from .onnxruntime import OrtSession

            path = folder / data["components"][name]["files"][0]
            if not path.is_file():
                raise EngineError(f"{path} is missing: the engine folder is incomplete; export again")
            try:
                runners[name] = OrtSession(path, provider=provider, threads=threads)
            except ValueError:
                raise
            except Exception as e:  # onnxruntime raises its own exception types for bad files
                raise EngineError(f"{path} cannot be loaded by onnxruntime ({str(e).splitlines()[0]}): "
                                  "export again") from None
    return runners, data
