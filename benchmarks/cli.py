"""`unigs-bench`: every sub-command prints a Markdown table and can write JSON."""

from __future__ import annotations

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


if __name__ == "__main__":
    main()


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
@click.option("--repeats", default=50, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def capi(repeats, json_path):
    """The C boundary's cost: unigs_decode_colormap from C vs decode_colormap from Python, 512x512."""
    from . import capi as bench

    result = bench.run(repeats=repeats)
    table = markdown_table(result["rows"], [("caller", "caller"), ("median_ms", "median ms"), ("min_ms", "min ms"),
                                            ("vs_python", "x Python")])
    _emit(result, table, json_path)
