"""`unigs-train CONFIG`: fine-tune UniGS (accelerate underneath: `accelerate launch` scales it)."""

from __future__ import annotations

import logging
import sys

import click

from .config import ConfigError, load_config


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set train.steps=2000 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in train.output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(config, overrides, resume, quiet):
    """Train a UniGS model from a TOML CONFIG (see configs/). The result is a diffusers-format
    UniGS folder in <train.output>/model that `unigs-export --weights` takes."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(config, list(overrides))
        from .trainer import Trainer

        trainer = Trainer(cfg, resume=resume, progress=not quiet)
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
