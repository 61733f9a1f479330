"""`unigs-bench quality`: the trained demo model on held-out shapes-world images, all four tasks,
through the exported ONNX engines and the lean runtime.

Held-out images come from a seed stream training never draws from (training: [0, index];
here: [10_000 + i]). Metrics: segment PQ (dataset level: sums over all images, as panopticapi and
`unigs-eval` compute it) and class-agnostic mask AP (pycocotools COCOeval with
every category set to 1); refer mean IoU; inpaint IoU of the generated entity with the region's
entity, colour and shape-kind match (unigs_deploy.detect); synthesize PQ of segmenting the
synthesized image against the input colormap's entities.
"""

from __future__ import annotations

import time

import numpy as np

from unigs_deploy import metrics, palette
from unigs_deploy.labels import dominant_in, masks_to_labels
from unigs_deploy.synthetic.shapes import held_out_example

from . import detect, posterior
from .common import held_out_size, machine


def add_image(acc, pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """One image's labels into a dataset-level PQ (unigs_deploy.evaluation, as unigs-eval scores);
    returns the image's share, which `unigs-bench compare` resamples."""
    from unigs_deploy.evaluation.panoptic import labels_to_panoptic

    return acc.add(*labels_to_panoptic(truth), *labels_to_panoptic(pred))


def segment_pq(engine, *, n: int = 100, size: int | None = None, threads: int = 0, **kw) -> float:
    """Dataset-level segment PQ on held-out images 0..n-1 (seed = index) at the task's defaults."""
    from unigs_deploy.evaluation.panoptic import PQAccumulator
    from unigs_deploy.pipeline import UniGSPipeline

    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    acc = PQAccumulator()
    for i in range(n):
        image, masks, *_ = held_out_example(i, size)
        add_image(acc, pipe.segment(image, seed=i, **kw).labels, truth_labels(masks, with_background=True))
    return acc.result()["all"]["pq"]


def breakdown(acc) -> dict:
    """Where a PQ is lost: SQ (fit of matched segments), RQ (recognition) and the matched /
    false / missed segment counts, summed over categories (one, class-agnostic, here)."""
    r = acc.result()
    counts = {k: sum(c[k] for c in r["per_category"].values()) for k in ("tp", "fp", "fn")}
    return {k: r["all"][k] for k in ("pq", "sq", "rq")} | counts


def vae_round_trip(pipe, colormap: np.ndarray) -> dict:
    """A colormap encoded once by the engine's VAE (the encoder's mean), decoded by its VAE and,
    where the engine has one, its tiny VAE, then split by the dichotomy decoder with the codec's
    settings: {"vae": labels, "tiny_vae": labels}."""
    from unigs_deploy import dichotomy

    x = np.ascontiguousarray(palette.colormap_to_unit(colormap).transpose(2, 0, 1)[None])
    mean = (np.split(pipe.components["vae_encoder"](sample=x), 2, axis=1)[0] * pipe.scaling).astype(np.float32)
    min_area = dichotomy.min_area_for(*colormap.shape[:2])
    return {name: dichotomy.decode_colormap(pipe.decode_latent(mean, tiny=name == "tiny_vae"), keep_background=True,
                                            min_area=min_area)
            for name in ("vae", "tiny_vae") if name == "vae" or pipe.has_tiny_vae}


def truth_labels(masks, with_background: bool) -> np.ndarray:
    return masks_to_labels(masks, background=len(masks) + 1 if with_background else 0)


def mask_ap(preds: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Class-agnostic COCO mask AP over images; every predicted segment scored by its area share."""
    import contextlib
    import io as _io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from unigs_deploy.io import masks_to_rle

    images, gts, dts = [], [], []
    for i, (p, t) in enumerate(zip(preds, truths, strict=True)):
        h, w = t.shape
        images.append({"id": i, "height": h, "width": w})
        for k in np.unique(t[t > 0]):
            rle = masks_to_rle((t == k)[None])[0]
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": 1, "segmentation": rle,
                        "area": int((t == k).sum()), "bbox": _bbox(t == k), "iscrowd": 0})
        for k in np.unique(p[p > 0]):
            m = p == k
            dts.append({"image_id": i, "category_id": 1, "segmentation": masks_to_rle(m[None])[0],
                        "score": float(0.5 + 0.5 * m.mean()), "bbox": _bbox(m)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": "entity"}]}
    with contextlib.redirect_stdout(_io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dts) if dts else COCO()
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def inpaint_scores(res, region: np.ndarray, mask: np.ndarray, caption: str) -> tuple[float, bool, bool]:
    """The entity generated in the region against the true one: region IoU, colour match and
    shape-kind match (captions read "a <colour> <kind>"; the kind judged where no other generated
    entity covers it); nothing generated scores 0."""
    gen = dominant_in(res.labels, region)
    if not gen.any():
        return 0.0, False, False
    _, colour, kind = caption.split()[:3]
    return (metrics.mask_iou(gen, mask), detect.colour_name(res.image, gen) == colour,
            detect.shape_kind(gen, hidden=(res.labels > 0) & ~gen) == kind)


def others(masks: np.ndarray, j: int) -> np.ndarray:
    """Where the true entities other than j lie: what may cover entity j."""
    return np.delete(masks, j, axis=0).any(axis=0)


def _bbox(m):
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def run(engine, *, n: int = 100, steps: int | None = None, guidance: float | None = None, tiny_vae: str | None = None,
        size: int | None = None, threads: int = 0) -> dict:
    """steps / guidance / tiny_vae None: each task's defaults (the model's manifest, else tasks.py);
    size None: the model's training side."""
    from tqdm.auto import tqdm

    from unigs_deploy.evaluation.panoptic import PQAccumulator
    from unigs_deploy.pipeline import UniGSPipeline

    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    seg_acc, syn_acc = PQAccumulator(), PQAccumulator()
    ceiling = {"vae": PQAccumulator(), **({"tiny_vae": PQAccumulator()} if pipe.has_tiny_vae else {})}
    seg_preds, seg_truths, refer_iou, inp_iou, inp_colour, inp_kind = [], [], [], [], [], []
    seg_share, syn_share = [], []
    # the references: the detector on the truth, the region filled, a perfect inpainter (box regions)
    truth_kind, region_iou, perfect, on_box = [], [], [], []
    times = {t: [] for t in ("segment", "refer", "inpaint", "synthesize")}
    used = {}  # the settings each task ran with

    def keep(res):
        keys = ("steps", "scheduler", "spacing", "guidance", "guidance_interval", "tiny_vae", "locate",
                "keep_unmasked", "candidates", "rerank")
        used[res.task] = {k: res.settings[k] for k in keys if k in res.settings}
        return res
    for i in tqdm(range(n), desc="quality", unit="image"):
        image, masks, captions, region, j = held_out_example(i, size)
        kw = dict(steps=steps, guidance=guidance, tiny_vae=tiny_vae, seed=i)

        t0 = time.perf_counter()
        res = keep(pipe.segment(image, **kw))
        times["segment"].append(time.perf_counter() - t0)
        truth = truth_labels(masks, with_background=True)
        cmap = palette.encode_colormap(masks)
        seg_share.append(add_image(seg_acc, res.labels, truth))
        for decoder, labels in vae_round_trip(pipe, cmap).items():
            add_image(ceiling[decoder], labels, truth)
        seg_preds.append(res.labels)
        seg_truths.append(truth)

        t0 = time.perf_counter()
        res = keep(pipe.refer(image, region, captions[j], **kw))
        times["refer"].append(time.perf_counter() - t0)
        refer_iou.append(metrics.mask_iou(res.mask, masks[j]))

        truth_kind.append(detect.shape_kind(masks[j], hidden=others(masks, j)) == captions[j].split()[2])
        region_iou.append(metrics.mask_iou(region, masks[j]))
        t0 = time.perf_counter()
        res = keep(pipe.inpaint(image, [(region, captions[j])], **kw))
        times["inpaint"].append(time.perf_counter() - t0)
        for scores, score in zip((inp_iou, inp_colour, inp_kind), inpaint_scores(res, region, masks[j], captions[j]),
                                 strict=True):
            scores.append(score)
        best = posterior.posterior_region_iou(i, size)
        if best is not None:
            perfect.append(best)
            on_box.append(inp_iou[-1])

        t0 = time.perf_counter()
        res = keep(pipe.synthesize(cmap, ", ".join(captions), **kw))
        seg = pipe.segment(res.image, **kw)
        times["synthesize"].append(time.perf_counter() - t0)
        syn_share.append(add_image(syn_acc, seg.labels, truth))

    rows = [
        {"task": "segment", "metric": "PQ", "value": seg_acc.result()["all"]["pq"], "target": 0.80},
        {"task": "segment", "metric": "mask AP (class-agnostic)", "value": mask_ap(seg_preds, seg_truths),
         "target": 0.60},
        {"task": "refer", "metric": "mIoU", "value": float(np.mean(refer_iou)), "target": 0.75},
        {"task": "inpaint", "metric": "region IoU", "value": float(np.mean(inp_iou)), "target": 0.60},
        {"task": "inpaint", "metric": "colour match", "value": float(np.mean(inp_colour)), "target": 0.80},
        {"task": "inpaint", "metric": "shape-kind match", "value": float(np.mean(inp_kind)), "target": 0.60},
        {"task": "synthesize", "metric": "PQ (segmented back)", "value": syn_acc.result()["all"]["pq"],
         "target": 0.60},
    ]
    for r in rows:
        r["met"] = r["value"] >= r["target"]
    judged = np.asarray(truth_kind)
    return {"benchmark": "quality", "machine": machine(threads=threads or None), "images": n, "size": size,
            "steps": steps, "guidance": guidance, "tiny_vae": tiny_vae, "settings": used, "engine": str(engine),
            "rows": rows,
            "pq_breakdown": {"segment": breakdown(seg_acc), "synthesize": breakdown(syn_acc)},
            # segment PQ of the true colormap encoded and decoded by the engine's VAE (and tiny VAE),
            # then the dichotomy decoder: the most any UNet could reach through these autoencoders
            "segment_pq_ceiling": {k: acc.result()["all"]["pq"] for k, acc in ceiling.items()},
            # what the inpaint metrics mean: shapes are clipped by the border and occluded, so the
            # detector names the caption's kind from the true entity's visible mask only so often
            # (a perfect inpainting scores that); the kind match counted only where it does; and
            # the region IoU of answering with the whole coarse region; and on the images whose
            # region is a box, the region IoU a perfect inpainter would expect (benchmarks/posterior.py)
            # beside the model's own there
            "inpaint_references": {
                "shape_kind_of_the_truth": float(judged.mean()),
                "shape_kind_where_the_truth_is_judged": float(np.mean(np.asarray(inp_kind)[judged])) if judged.any()
                else None,
                "region_iou_of_the_region": float(np.mean(region_iou)),
                "box_region_images": len(perfect),
                "region_iou_of_a_perfect_inpainter_on_box_regions": float(np.mean(perfect)) if perfect else None,
                "region_iou_on_box_regions": float(np.mean(on_box)) if on_box else None},
            # each image's scores (seed = index), so two runs on the same images can be compared
            # image by image (`unigs-bench compare`); PQ rows as [matched IoU sum, tp, fp, fn]
            "per_image": {"segment": seg_share, "refer": [float(v) for v in refer_iou],
                          "inpaint_region_iou": [float(v) for v in inp_iou],
                          "inpaint_colour": [bool(v) for v in inp_colour],
                          "inpaint_kind": [bool(v) for v in inp_kind], "synthesize": syn_share},
            "seconds_per_image": {k: float(np.mean(v)) for k, v in times.items()}}
