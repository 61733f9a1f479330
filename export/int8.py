"""int8 UNet: post-training static quantization with NNCF on OpenVINO, calibrated on what the
UNet really sees (its inputs along the denoising trajectory of calibration images).

Why NNCF/OpenVINO: measured on this CPU, an int8 sd15-shaped UNet step ran ~1.5x faster than
fp32 onnxruntime or OpenVINO (FINDINGS, 4 alternating rounds), and OpenVINO reads the exported
ONNX directly. The result is an OpenVINO IR (`unigs.int8.xml` + `.bin`) beside the fp32 files;
`unigs-run --int8` runs it on the OpenVINO backend. The export measures the int8 UNet against
fp32 (output error, and segmentation agreement on held-out calibration images) and refuses a
result whose segmentations agree with fp32's less than `MIN_AGREEMENT`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

INT8_FILE = "unigs.int8.xml"
MIN_AGREEMENT = 0.80  # mean PQ of int8 segment labels against fp32's on held-out calibration images


class _Recorder:
    """Wraps the UNet runner of a pipeline and keeps a copy of every feed it is given."""

    def __init__(self, runner):
        self.runner, self.feeds = runner, []
        self.inputs, self.provider = runner.inputs, runner.provider

    def __call__(self, **feed):
        self.feeds.append({k: np.array(v, copy=True) for k, v in feed.items()})
        return self.runner(**feed)

    def close(self):
        pass


def calibration_images(folder: Path | None, n: int, size: int) -> list[np.ndarray]:
    """The user's images, or held-out shapes-world images (what the demo model was trained on)."""
    from unigs_deploy import io
    from unigs_deploy.synthetic.shapes import held_out_example

    if folder is None:
        return [held_out_example(1000 + i, size)[0] for i in range(n)]
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise ValueError(f"--calibration {folder} holds no PNG/JPEG images: give a folder of typical inputs")
    return [io.read_any_image(p)[0] for p in files[:n]]


def trajectory_feeds(pipe, images: list[np.ndarray], *, steps: int = 4) -> list[dict]:
    """UNet inputs along the denoising trajectories of segment and refer runs on `images` (the
    fp32 pipeline; a few DDIM steps per image so every noise level is represented)."""
    recorder = _Recorder(pipe.components["unet"])
    pipe.components["unet"] = recorder
    try:
        for i, image in enumerate(images):
            pipe.segment(image, steps=steps, scheduler="ddim", spacing="trailing", seed=i)
            h, w = image.shape[:2]
            region = np.zeros((h, w), bool)
            region[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
            pipe.refer(image, region, "the object", steps=steps, scheduler="ddim", spacing="trailing", seed=i)
    finally:
        pipe.components["unet"] = recorder.runner
    return recorder.feeds


def quantize(folder: Path, *, calibration: Path | None = None, images: int = 16, min_agreement: float = MIN_AGREEMENT,
             log=print) -> dict:
    """Quantize the exported UNet in `folder`; write unigs.int8.xml/.bin and record it in the manifest."""
    import nncf
    import openvino as ov

    from unigs_deploy import io
    from unigs_deploy.manifest import Manifest
    from unigs_deploy.pipeline import UniGSPipeline

    manifest = Manifest.load(folder)
    if manifest.components["unet"].get("optimized"):
        raise ValueError("--int8 quantizes the plain graph with OpenVINO: export without --optimize")
    side = manifest.model.resolution or 512
    pipe = UniGSPipeline.from_engine(folder)
    available = calibration_images(calibration, images + 4, side)
    calib, held_out = available[:images], available[images:]
    t0 = time.perf_counter()
    feeds = trajectory_feeds(pipe, calib)
    log(f"  {len(feeds)} UNet inputs recorded along the trajectories of {len(calib)} calibration images "
        f"({time.perf_counter() - t0:.0f}s)")
    t0 = time.perf_counter()
    model = ov.Core().read_model(str(manifest.path("unet")))
    q = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    with io.atomic_path(folder / INT8_FILE) as tmp:  # the .xml last: it names a complete pair
        ov.save_model(q, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(folder / "unigs.int8.bin")
    log(f"  quantized with NNCF {nncf.__version__} ({time.perf_counter() - t0:.0f}s)")

    try:  # the result against fp32: the UNet's output on recorded inputs, and whole segmentations
        report = _check(folder, pipe, feeds, held_out or calib[:4], calibration, calib, min_agreement, nncf, ov)
    except BaseException:  # nothing half-made stays behind: the IR goes with a failed or refused check
        (folder / INT8_FILE).unlink(missing_ok=True)
        (folder / "unigs.int8.bin").unlink(missing_ok=True)
        raise
    manifest.components["unet"]["int8"] = report
    manifest.write()
    return report


def _check(folder, pipe, feeds, held_out, calibration, calib, min_agreement, nncf, ov) -> dict:
    from unigs_deploy import metrics
    from unigs_deploy.backends.openvino import OvSession

    int8 = OvSession(folder / INT8_FILE)
    err = max(float(np.abs(int8(**f) - pipe.components["unet"](**f)).max()) for f in feeds[:: max(1, len(feeds) // 8)])
    agree = []
    for i, image in enumerate(held_out):
        ref = pipe.segment(image, seed=i).labels
        fp32_unet = pipe.components["unet"]
        pipe.components["unet"] = int8
        try:
            got = pipe.segment(image, seed=i).labels
        finally:
            pipe.components["unet"] = fp32_unet
        agree.append(metrics.panoptic_quality(got, ref)["pq"])
    report = {"file": INT8_FILE, "toolkit": f"nncf {nncf.__version__} + openvino {ov.__version__}",
              "calibration": str(calibration) if calibration else "shapes world (held-out generator seeds)",
              "calibration_images": len(calib), "calibration_inputs": len(feeds),
              "max_abs_error_vs_fp32": err, "segment_agreement_pq": float(np.mean(agree)),
              "min_agreement": min_agreement}
    if report["segment_agreement_pq"] < min_agreement:
        raise ValueError(f"the int8 UNet's segmentations agree with fp32's at PQ {report['segment_agreement_pq']:.3f}, "
                         f"under the {min_agreement} this export accepts: calibrate on more or more typical images "
                         "(--calibration DIR), or keep fp32")
    return report
