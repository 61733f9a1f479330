"""The generative tasks' sampler settings on a trained model: inpaint (region IoU, colour and
shape-kind match) and synthesize (PQ of the synthesized image segmented back at segment's
defaults), scored as `unigs-bench quality` scores them, for every steps x guidance pair (and, for
inpaint, every way of locating the generated entity asked for and every number of candidates).

What a model's inpaint / synthesize `steps`, `guidance`, `guidance_interval` (and inpaint's `locate`,
`candidates`) task defaults are chosen from. Images come from held-out indices `offset`.. (default
5000, training's evaluation stream), not the 0..99 `unigs-bench quality` reports on, so a choice
made here is checked on images it was not chosen on.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from unigs_deploy import palette
from unigs_deploy.synthetic.shapes import ENTITIES, held_out_example

from .common import held_out_size, machine
from .quality import add_image, inpaint_scores, others, truth_labels

TASKS = ("inpaint", "synthesize")


def run(engine, *, n: int = 40, offset: int = 5000, steps=(25,), guidance=(3.0, 7.5), guidance_interval=(None,),
        scheduler: str | None = None, spacing: str | None = None, locate=(None,), candidates=(None,), rerank=(None,),
        tasks=TASKS, size: int | None = None, threads: int = 0) -> dict:
    """scheduler / spacing / a guidance interval, locate, candidates or rerank of None: each task's default."""
    from tqdm.auto import tqdm

    from unigs_deploy.evaluation.panoptic import PQAccumulator
    from unigs_deploy.pipeline import UniGSPipeline

    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(sorted(unknown))}: choose from {', '.join(TASKS)}")
    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    examples = [held_out_example(offset + i, size) for i in range(n)]
    # synthesize's input and truth per image, made once for every setting of the grid
    layouts = [(palette.encode_colormap(ex[1]), truth_labels(ex[1], with_background=True)) for ex in examples]
    inpaint_axes = (locate, candidates, rerank) if "inpaint" in tasks else ((None,), (None,), (None,))
    grid = list(itertools.product(steps, guidance, guidance_interval, *inpaint_axes))
    rows = []
    bar = tqdm(total=len(grid) * n, desc="generative", unit="image")
    for s, g, interval, where, n_cand, ranked in grid:
        kw = dict(steps=int(s), guidance=float(g), guidance_interval=interval, scheduler=scheduler, spacing=spacing)
        row = {"steps": int(s), "guidance": float(g), "guidance_interval": None if interval is None else list(interval)}
        inp, syn, syn_share, seconds = [], PQAccumulator(), [], {t: [] for t in tasks}
        for i, (image, masks, captions, region, j) in enumerate(examples):
            if "inpaint" in tasks:
                t0 = time.perf_counter()
                res = pipe.inpaint(image, [(region, captions[j])], seed=i, locate=where, candidates=n_cand,
                                   rerank=ranked, **kw)
                seconds["inpaint"].append(time.perf_counter() - t0)
                inp.append(inpaint_scores(res, region, masks[j], captions[j]))
                row.update(inpaint_scheduler=res.settings["scheduler"], locate=res.settings["locate"],
                           inpaint_guidance_interval=res.settings["guidance_interval"],
                           candidates=res.settings["candidates"], rerank=bool(res.settings.get("rerank", False)))
            if "synthesize" in tasks:
                t0 = time.perf_counter()
                cmap, truth = layouts[i]
                res = pipe.synthesize(cmap, ", ".join(captions), seed=i, **kw)
                seconds["synthesize"].append(time.perf_counter() - t0)
                syn_share.append(add_image(syn, pipe.segment(res.image, seed=i).labels, truth))
                row["synthesize_scheduler"] = res.settings["scheduler"]
            bar.update(1)
        per_image = {}
        if inp:
            iou, colour, kind = np.mean(np.asarray(inp, float), axis=0)
            row.update(inpaint_iou=float(iou), colour_match=float(colour), shape_kind=float(kind))
            per_image.update(inpaint_region_iou=[float(v[0]) for v in inp], inpaint_colour=[bool(v[1]) for v in inp],
                             inpaint_kind=[bool(v[2]) for v in inp])
        if "synthesize" in tasks:
            row["synthesize_pq"] = syn.result()["all"]["pq"]
            per_image["synthesize"] = syn_share
        row.update({f"{t}_s": float(np.median(v)) for t, v in seconds.items()})
        # quality's per-image record for the same tasks, so `unigs-bench compare` can tell two
        # settings (two rows) apart image by image
        row["per_image"] = per_image
        rows.append(row)
    bar.close()
    return {"benchmark": "generative", "machine": machine(threads=threads or None), "images": n, "offset": offset,
            "size": size, "scheduler": scheduler, "spacing": spacing, "tasks": list(tasks), "engine": str(engine),
            "rows": rows}


def kinds(engine, *, n: int = 15, offset: int = 5000, size: int | None = None, entities: tuple[int, int] = ENTITIES,
          guidance: float | None = None, threads: int = 0) -> dict:
    """Does the caption's kind steer inpainting? Each image's region inpainted four times at the
    task's defaults (guidance None: inpaint's own), the same seed and colour, once per kind: the
    judged kind against the asked one (a confusion matrix), and how alike the four generated
    masks are (mean IoU of the six pairs: 1 when the kind changes nothing)."""
    from tqdm.auto import tqdm

    from unigs_deploy import metrics
    from unigs_deploy.labels import dominant_in
    from unigs_deploy.pipeline import UniGSPipeline
    from unigs_deploy.synthetic.shapes import KINDS, caption

    from . import detect

    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    confusion = np.zeros((len(KINDS), len(KINDS)), int)
    alike, truth = [], 0
    for i in tqdm(range(n), desc="kinds", unit="image"):
        image, masks, captions, region, j = held_out_example(offset + i, size, entities)
        colour, true_kind = captions[j].split()[1:]
        truth += detect.shape_kind(masks[j], hidden=others(masks, j)) == true_kind
        drawn = []
        for asked, kind in enumerate(KINDS):
            res = pipe.inpaint(image, [(region, caption(colour, kind))], seed=i, guidance=guidance)
            gen = dominant_in(res.labels, region)
            drawn.append(gen)
            if gen.any():
                confusion[asked, KINDS.index(detect.shape_kind(gen, hidden=(res.labels > 0) & ~gen))] += 1
        alike += [metrics.mask_iou(a, b) for a, b in itertools.combinations(drawn, 2)]
    return {"benchmark": "kinds", "machine": machine(threads=threads or None), "images": n, "offset": offset,
            "size": size, "entities": list(entities), "guidance": guidance, "engine": str(engine), "kinds": list(KINDS),
            "confusion": confusion.tolist(),
            "match": float(np.trace(confusion) / max(1, confusion.sum())), "truth_match": truth / max(1, n),
            "mask_iou_between_kinds": float(np.mean(alike))}


def render_kinds(r: dict) -> str:
    from .common import confusion_table

    lo, hi = r.get("entities", ENTITIES)
    if (lo, hi) == ENTITIES:
        scenes = ""
    elif lo == hi:
        scenes = f" (scenes of {lo} entit{'y' if lo == 1 else 'ies'})"
    else:
        scenes = f" (scenes of {lo}-{hi} entities)"
    settings = "inpaint's defaults" + ("" if r.get("guidance") is None else f" but guidance {r['guidance']:g}")
    return confusion_table(r["kinds"], r["confusion"]) + (
        f"\nShape-kind match {r['match']:.2f} (chance 0.25); mean IoU between the masks drawn for the four kinds "
        f"{r['mask_iou_between_kinds']:.2f} (1: the kind changes nothing). {r['images']} held-out "
        f"{r['size']}x{r['size']} images from index {r['offset']}{scenes}, {settings}, one seed per image."
        + (f" The true entities are judged their kind {r['truth_match']:.2f} (the judge's ceiling)."
           if "truth_match" in r else ""))


def render(r: dict) -> str:
    from .report import markdown_table

    columns = [("steps", "steps"), ("guidance", "guidance")]
    rows = r["rows"]
    if any(row.get("guidance_interval") for row in rows):
        rows = [{**row, "guided": "every step" if row["guidance_interval"] is None else
                 "t in {:g}..{:g}".format(*row["guidance_interval"])} for row in rows]
        columns.append(("guided", "guided steps"))
    if "inpaint" in r["tasks"]:
        columns += [("inpaint_scheduler", "inpaint scheduler"), ("locate", "located by"), ("candidates", "candidates"),
                    ("rerank", "reranked"),
                    ("inpaint_iou", "inpaint region IoU"),
                    ("colour_match", "colour match"),
                    ("shape_kind", "shape-kind"), ("inpaint_s", "inpaint s")]
    if "synthesize" in r["tasks"]:
        columns += [("synthesize_scheduler", "synthesize scheduler"), ("synthesize_pq", "synthesize PQ"),
                    ("synthesize_s", "synthesize s")]
    return markdown_table(rows, columns) + (
        f"\n\n{r['images']} held-out {r['size']}x{r['size']} images from index {r['offset']} (seed = index); "
        "synthesize is segmented back at segment's defaults (its time not counted); seconds are medians per image.")
