"""`unigs-bench`: every sub-command prints a Markdown table and can write JSON."""

from __future__ import annotations

from pathlib import Path

import click

from unigs_deploy import io

from .common import markdown_table


def _emit(result: dict, table: str, json_path: str | None) -> None:
    click.echo(table)
    if json_path:
        io.write_json(json_path, result)
        click.echo(f"wrote {json_path}")


@click.group()
def main() -> None:
    """Measure UniGS deployment: speed, size and quality, each as a Markdown table and JSON."""


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--quick", is_flag=True, help="Fewer repeats, skip the slowest 1024x1024 runs.")
def decoder(json_path: str | None, quick: bool) -> None:
    """Progressive dichotomy decoder: Numba vs numpy reference vs scikit-learn, one core."""
    from . import decoder as bench

    result = bench.run(quick=quick)
    table = markdown_table(result["rows"], [("size", "colormap"), ("impl", "implementation"),
                                            ("median_ms", "median ms"), ("min_ms", "min ms"),
                                            ("x_slower_than_numba", "x numba"), ("pq", "PQ")])
    table += f"\n\ncold start (fresh process, JIT cache warm): {result['cold_start_ms']:.0f} ms\n\n"
    table += markdown_table(result["robustness"], [("corruption", "corruption"), ("layouts", "layouts"),
                                                   ("mean_pq", "mean PQ"), ("min_pq", "min PQ"),
                                                   ("fp_per_image", "FP/image"), ("fn_per_image", "FN/image")])
    _emit(result, table, json_path)


@main.command()
@click.option("--engine", default="engines/unigs.onnx", show_default=True, type=click.Path(),
              help="The exported demo model.")
@click.option("--images", default=100, show_default=True, help="Held-out images per task.")
@click.option("--steps", default=25, show_default=True)
@click.option("--guidance", default=3.0, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def quality(engine, images, steps, guidance, threads, json_path):
    """The demo model on held-out shapes-world images: all four tasks, against the targets."""
    from . import quality as bench

    result = bench.run(engine, n=images, steps=steps, guidance=guidance, threads=threads)
    table = markdown_table(result["rows"], [("task", "task"), ("metric", "metric"), ("value", "value"),
                                            ("target", "target"), ("met", "met")])
    table += "\n\nseconds per image: " + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds_per_image"].items())
    _emit(result, table, json_path)


@main.command()
@click.option("--repeats", default=20, show_default=True, help="Calls per round.")
@click.option("--rounds", default=15, show_default=True, help="Alternating C / Python rounds.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def capi(repeats, rounds, json_path):
    """The C boundary's cost: unigs_decode_colormap from C vs decode_colormap from Python, 512x512."""
    from . import capi as bench

    result = bench.run(repeats=repeats, rounds=rounds)
    table = markdown_table(result["rows"], [("caller", "caller"), ("median_ms", "median ms"), ("min_ms", "min ms"),
                                            ("vs_python", "x Python"), ("faults_per_call", "page faults/call")])
    table += (f"\n\nboundary cost per call (4x4 colormap, C minus Python): {result['boundary_overhead_us']:.1f} us"
              f" = {result['boundary_overhead_pct_of_512']:.2f}% of a 512x512 decode")
    _emit(result, table, json_path)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=click.Choice(["sd15", "demo", "tiny"]))
@click.option("--size", default=256, show_default=True, help="Image side (the paper: 512).")
@click.option("--steps", default=10, show_default=True, help="DDIM steps (the paper: 200).")
@click.option("--repeats", default=2, show_default=True)
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path),
              help="Where the UNet ONNX files go.")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def table1(scale, size, steps, repeats, workdir, threads, json_path):
    """The paper's Table 1: parameters and s/image, SD-inpainting vs UniGS UNet, same loop."""
    from . import speed

    r = speed.table1(scale=scale, size=size, steps=steps, repeats=repeats, workdir=workdir,
                     threads=threads)
    table = markdown_table(r["rows"], [("method", "method"), ("in_out", "channels"), ("parameters", "parameters"),
                                       ("seconds_per_image", "s/image"), ("peak_rss_mb", "peak RSS MB")])
    table += f"\n\nUniGS / SD time ratio: {r['unigs_over_sd_time']:.3f} (paper: {r['paper']['ratio']:.3f}); {r['note']}"
    _emit(r, table, json_path)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=click.Choice(["sd15", "demo", "tiny"]))
@click.option("--sizes", default="256,512", show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path))
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def backends(scale, sizes, repeats, workdir, threads, json_path):
    """One UniGS UNet step: torch eager vs ONNX Runtime (plain, fused) vs TensorRT."""
    from . import speed

    r = speed.backends(scale=scale, sizes=[int(s) for s in sizes.split(",")], repeats=repeats,
                       workdir=workdir, threads=threads)
    table = markdown_table(r["rows"], [("size", "image"), ("backend", "backend"), ("median_ms", "median ms"),
                                       ("min_ms", "min ms"), ("speedup_vs_torch", "x torch"),
                                       ("peak_rss_mb", "peak RSS MB")])
    table += f"\n\nTensorRT: {r['tensorrt']}"
    _emit(r, table, json_path)


@main.command()
@click.option("--engine", default="engines/unigs.onnx", show_default=True)
@click.option("--size", default=256, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def components(engine, size, steps, threads, json_path):
    """Share of one whole segmentation per component, and the loop's own overhead."""
    from . import speed

    r = speed.components(engine, size=size, steps=steps, threads=threads)
    table = markdown_table(r["rows"], [("stage", "stage"), ("seconds", "seconds"), ("share", "share of total")])
    table += f"\n\nloop overhead: {100 * r['loop_overhead_share_of_loop']:.2f}% of the denoising loop"
    _emit(r, table, json_path)


if __name__ == "__main__":
    main()
