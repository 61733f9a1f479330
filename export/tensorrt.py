"""TensorRT engines from the exported ONNX files, through polygraphy (TensorRT 10 API).

Building needs TensorRT and an NVIDIA GPU; everything else in the export works without them.
tensorrt and polygraphy's TensorRT backend are imported only here, only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unigs_deploy.backends.tensorrt import available
from unigs_deploy.io import atomic_path
from unigs_deploy.manifest import Manifest

PLAN = {"unet": "unigs.plan", "text_encoder": "text_encoder.plan", "vae_encoder": "vae_encoder.plan",
        "vae_decoder": "vae_decoder.plan"}
TIMING_CACHE = "timing.cache"


class TensorRTUnavailable(RuntimeError):
    pass



def require() -> None:
    if not available():
        raise TensorRTUnavailable(
            "TensorRT engines need the tensorrt package on a machine with an NVIDIA GPU")


@dataclass
class Ranges:
    """min/opt/max of batch and image height/width (pixels) for the optimisation profiles."""

    batch: tuple[int, int, int] = (1, 2, 4)
    height: tuple[int, int, int] = (256, 512, 768)
    width: tuple[int, int, int] = (256, 512, 768)


def profile_shapes(component: str, manifest: Manifest, r: Ranges) -> dict:
    """Per input name: (min, opt, max) shapes for one component."""
    comp = manifest.components[component]
    factor = manifest.model.vae_scale_factor
    seq = manifest.model.max_text_length
    shapes = {}
    for name, spec in comp["inputs"].items():
        triple = []
        for i in range(3):
            dims = []
            for d in spec["shape"]:
                if d == "batch":
                    dims.append(r.batch[i])
                elif d == "sequence":
                    dims.append(seq)
                elif d == "height":
                    dims.append(r.height[i] // (factor if component == "unet" else 1))
                elif d == "width":
                    dims.append(r.width[i] // (factor if component == "unet" else 1))
                elif d == "latent_height":
                    dims.append(r.height[i] // factor)
                elif d == "latent_width":
                    dims.append(r.width[i] // factor)
                else:
                    dims.append(int(d))
            triple.append(tuple(dims))
        shapes[name] = tuple(triple)
    return shapes


def build_engines(folder: Path, manifest: Manifest, *, fp16: bool, ranges: Ranges, log=print) -> dict:
    """Build one plan per component beside its ONNX file; the timing cache is kept in `folder`."""
    require()
    from polygraphy.backend.trt import (
        CreateConfig,
        Profile,
        engine_from_network,
        network_from_onnx_path,
        save_engine,
    )

    built = {}
    cache = folder / TIMING_CACHE
    for name in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
        onnx_path = folder / manifest.components[name]["files"][0]
        profile = Profile()
        for inp, (mn, opt, mx) in profile_shapes(name, manifest, ranges).items():
            profile.add(inp, min=mn, opt=opt, max=mx)
        config = CreateConfig(fp16=fp16, profiles=[profile], load_timing_cache=str(cache) if cache.exists() else None)
        log(f"  building TensorRT engine for {name} ...")
        engine = engine_from_network(network_from_onnx_path(str(onnx_path)), config=config,
                                     save_timing_cache=str(cache))
        with atomic_path(folder / PLAN[name]) as tmp:
            save_engine(engine, str(tmp))
        built[name] = PLAN[name]
    return built
