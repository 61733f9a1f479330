"""TensorRT engines from the exported ONNX files, through polygraphy (TensorRT 10 API).

Building needs TensorRT and an NVIDIA GPU; everything else in the export works without them.
tensorrt and polygraphy's TensorRT backend are imported only here, only when asked for.

fp16 exports are built as *strongly typed* networks: the ONNX graph's own types decide each
layer's precision, so the fp32 islands that export/fp16.py keeps on purpose (norms, timestep
embedding, the VAE decoder's up blocks) stay fp32. The weakly typed FP16 flag would let
TensorRT run them in fp16, and TensorRT 11 removes that flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from unigs_deploy.backends.tensorrt import available
from unigs_deploy.io import atomic_path, write_bytes
from unigs_deploy.manifest import Manifest

PLAN = {"unet": "unigs.plan", "text_encoder": "text_encoder.plan", "vae_encoder": "vae_encoder.plan",
        "vae_decoder": "vae_decoder.plan", "tiny_vae_encoder": "tiny_vae_encoder.plan",
        "tiny_vae_decoder": "tiny_vae_decoder.plan"}
TIMING_CACHE = "timing.cache"
TESTED_MAJOR = 10  # the API written against; pyproject pins tensorrt>=10,<11


class TensorRTUnavailable(RuntimeError):
    pass


def require() -> None:
    if not available():
        raise TensorRTUnavailable(
            "TensorRT engines need the tensorrt package on a machine with an NVIDIA GPU")
    import tensorrt as trt

    major = int(str(trt.__version__).split(".")[0])
    if major != TESTED_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is installed but unigs-deploy builds with the "
                                  f"TensorRT {TESTED_MAJOR} API: pip install 'tensorrt>={TESTED_MAJOR},"
                                  f"<{TESTED_MAJOR + 1}'")


@dataclass
class Ranges:
    """min/opt/max of batch and image height/width (pixels) for the optimisation profiles."""

    batch: tuple[int, int, int] = (1, 2, 4)
    height: tuple[int, int, int] = (256, 512, 768)
    width: tuple[int, int, int] = (256, 512, 768)


def profile_shapes(component: str, manifest: Manifest, r: Ranges) -> dict:
    """Per input name: (min, opt, max) shapes for one component. Only the UNet runs batched (2
    with guidance); the text encoder and the VAE always run at batch 1."""
    comp = manifest.components[component]
    factor = manifest.model.vae_scale_factor
    seq = manifest.model.max_text_length
    batch = r.batch if component == "unet" else (1, 1, 1)
    shapes = {}
    for name, spec in comp["inputs"].items():
        triple = []
        for i in range(3):
            dims = []
            for d in spec["shape"]:
                if d == "batch":
                    dims.append(batch[i])
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


def build_engines(folder: Path, manifest: Manifest, *, fp16: bool, ranges: Ranges, tf32: bool = False, log=print,
                  on_built=None) -> dict:
    """Build one plan per component beside its ONNX file. Each plan and the timing cache are
    written atomically; `on_built(component, plan_name)` runs after each, so an interrupted
    build keeps the plans already made (the CLI records them in the manifest)."""
    require()
    from polygraphy.backend.trt import CreateConfig, Profile, engine_bytes_from_network, network_from_onnx_path

    built = {}
    cache = folder / TIMING_CACHE
    for name in [n for n in PLAN if n in manifest.components]:
        onnx_path = folder / manifest.components[name]["files"][0]
        profile = Profile()
        for inp, (mn, opt, mx) in profile_shapes(name, manifest, ranges).items():
            profile.add(inp, min=mn, opt=opt, max=mx)
        config = CreateConfig(tf32=tf32 and not fp16, profiles=[profile],
                              load_timing_cache=str(cache) if cache.exists() else None)
        log(f"  building TensorRT engine for {name} ({'strongly typed, fp16 graph' if fp16 else 'fp32'}) ...")
        network = network_from_onnx_path(str(onnx_path), strongly_typed=fp16)
        with atomic_path(cache) as tmp_cache:
            plan = engine_bytes_from_network(network, config=config, save_timing_cache=str(tmp_cache))
        lock = Path(str(tmp_cache) + ".lock")
        if lock.exists():
            os.unlink(lock)
        write_bytes(folder / PLAN[name], plan)
        built[name] = PLAN[name]
        if on_built is not None:
            on_built(name, PLAN[name])
    return built
