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
    """Measure UniGS deployment: decoder speed (more sub-commands land with their issues)."""


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
