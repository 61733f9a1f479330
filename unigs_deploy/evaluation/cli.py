"""`unigs-eval score` (prediction files against ground truth, no model) and `unigs-eval run`
(an engine over a COCO-format dataset, then scored)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import one_line_errors
from .datasets import DataError

PATH = click.Path(path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Evaluate UniGS on COCO-format data: entity segmentation (PQ, SQ, RQ, mask AP) and referring
    segmentation (mIoU, cIoU)."""


@main.command()
@click.option("--gt-json", required=True, type=PATH, help="COCO panoptic ground truth JSON.")
@click.option("--gt-dir", required=True, type=PATH, help="Its folder of panoptic PNGs.")
@click.option("--pred-json", required=True, type=PATH, help="Predictions, COCO panoptic JSON.")
@click.option("--pred-dir", required=True, type=PATH, help="Their folder of panoptic PNGs.")
@click.option("--per-category", is_flag=True, help="PQ per category (default: class-agnostic, one 'entity').")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the scores as JSON.")
@one_line_errors("unigs-eval", (DataError, ValueError), interrupted="interrupted; nothing was written")
def score(gt_json, gt_dir, pred_json, pred_dir, per_category, json_path):
    """Score panoptic predictions as panopticapi's pq_compute does (dataset-level sums), plus
    class-agnostic mask AP/AP50/AP75 from the same segments (pycocotools COCOeval)."""
    from unigs_deploy import io

    from . import datasets, scoring

    gt = datasets.PanopticSet(gt_json, gt_dir)
    pred = datasets.PanopticSet(pred_json, pred_dir, "prediction")
    result = scoring.score_panoptic(gt, datasets.Truths(pred), per_category=per_category, progress=sys.stderr.isatty())
    if json_path:
        io.write_json(json_path, result)
    click.echo(scoring.markdown(result))


@main.command()
@click.option("--engine", required=True, type=PATH, help="An exported engine (its .onnx / .plan or folder).")
@click.option("--task", required=True, type=click.Choice(["segment", "refer"]))
@click.option("--data", required=True, type=PATH,
              help="segment: COCO panoptic (with --gt-dir) or instances JSON; refer: a refer JSON.")
@click.option("--gt-dir", type=PATH, help="The panoptic PNG folder of a COCO panoptic --data.")
@click.option("--images", "images_dir", required=True, type=PATH, help="The folder of the dataset's images.")
@click.option("--out", required=True, type=PATH,
              help="Predictions (panoptic.json + panoptic/, results.json), progress.*.jsonl and scores.json; "
                   "running again resumes.")
@click.option("--limit", type=int, help="Only the first N items.")
@click.option("--steps", type=int, help="[default: the task's, from the engine's manifest]")
@click.option("--resolution", default="native", show_default=True)
@click.option("--tiny-vae", type=click.Choice(["off", "colormap", "all"]))
@click.option("--threads", default=0, show_default=True)
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "openvino"]))
@click.option("--quiet", is_flag=True)
@one_line_errors("unigs-eval", (DataError, ValueError, MemoryError, RuntimeError),
                 interrupted="interrupted; finished items are kept in OUT/progress.*.jsonl: run again to resume")
def run(engine, task, data, gt_dir, images_dir, out, limit, steps, resolution, tiny_vae, threads, backend, quiet):
    """Run an engine over a dataset and score it. Shards over processes with `accelerate launch
    -m unigs_deploy.evaluation.cli run ...` (each process a disjoint slice; the first merges)."""
    from unigs_deploy.pipeline import UniGSPipeline

    from . import runner, scoring

    pipe = UniGSPipeline.from_engine(engine, threads=threads, backend=backend)
    res = int(resolution) if str(resolution).isdigit() else resolution
    scores = runner.run(pipe, task, data, images_dir, out, gt_dir=gt_dir, limit=limit, progress=not quiet,
                        steps=steps, resolution=res, tiny_vae=tiny_vae, log=click.echo)
    if scores is not None:  # the first process merged and wrote scores.json
        click.echo(scoring.markdown(scores))


if __name__ == "__main__":
    main()
