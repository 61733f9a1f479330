"""`unigs-train CONFIG`: fine-tune UniGS (accelerate underneath: `accelerate launch` scales it)."""

from __future__ import annotations

import logging
import sys

import click

from .config import ConfigError, dump_config, load_config


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, metavar="[CONFIG | RUN...]")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set train.steps=2000 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in train.output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--plot", "plot_to", type=click.Path(dir_okay=False), metavar="PNG",
              help="Train nothing: draw the curves of the RUN folders given (stages in order, joined "
                   "as one run) to PNG, e.g. --plot docs/training.png runs/stage-a runs/stage-b.")
@click.option("--title", default="", help="With --plot: the figure's title.")
@click.option("--print-config", "print_config", is_flag=True,
              help="Train nothing: print the config as it resolves (its base chain, --set and every default).")
def main(paths, overrides, resume, quiet, plot_to, title, print_config):
    """Train a UniGS model from a TOML CONFIG (see configs/). The result is a diffusers-format
    UniGS folder in <train.output>/model that `unigs-export --weights` takes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if plot_to:
        if not paths:
            click.echo("unigs-train: error: --plot needs the run folders to draw, e.g. --plot out.png runs/a runs/b",
                       err=True)
            sys.exit(2)
        from .curves import join, plot

        try:
            click.echo(f"wrote {plot(join(list(paths)), plot_to, title=title)}")
        except ValueError as e:
            click.echo(f"unigs-train: error: {e}", err=True)
            sys.exit(2)
        return
    if len(paths) > 1:
        click.echo(f"unigs-train: error: one CONFIG at a time, got {len(paths)} ({' '.join(paths)}); "
                   "to draw runs' curves use --plot PNG RUN...", err=True)
        sys.exit(2)
    config = paths[0] if paths else None
    try:
        cfg = load_config(config, list(overrides))
        if print_config:
            click.echo(dump_config(cfg), nl=False)
            return
        from .trainer import Trainer

        trainer = Trainer(cfg, resume=resume, progress=not quiet)
        if quiet:  # no bar: say once what runs, or a long run looks hung until its first checkpoint
            t = cfg["train"]
            every = f"checkpoints every {t['checkpoint_every']} steps" if t["checkpoint_every"] else "no checkpoints"
            click.echo(f"training steps {trainer.step}-{t['stop_at'] or t['steps']} into {t['output']} "
                       f"({every}; no progress bar: --quiet)", err=True)
        out = trainer.train()
    except (ConfigError, ValueError) as e:
        click.echo(f"unigs-train: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    skipped = trainer.source.dataset.skipped
    if any(any(v.values()) if isinstance(v, dict) else v for v in skipped.values()):  # a mix: per dataset
        click.echo(f"skipped images: {skipped}")
    last = trainer.losses[-10:]
    click.echo(f"trained {trainer.step} steps, final loss {sum(last) / max(1, len(last)):.4f}; model saved to {out}")


if __name__ == "__main__":
    main()
