"""Mix two trained UniGS models' weights (WiSE-FT / model soup): no training.

`python -m unigs_deploy.training.soup A B --alpha 0.5 --out DIR [--only REGEX]` writes A with its UNet and text
encoder moved `alpha` of the way to B's: `(1 - alpha) x A + alpha x B` on every floating weight.
`--only` restricts the UNet entries to those whose name matches REGEX (the text encoder is always
mixed: e.g. `--only 'attn2|add_embedding'` moves the caption's path). The VAE, tokenizer,
scheduler and task defaults are A's. B must be a fine-tune of A's architecture (a later stage).
Why: a fine-tune that learned one skill and lost others can be blended back into its start, and the
blend measured (docs/demo-model.md, "Weight interpolation").
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from unigs_deploy import io, modeling

MIXED = ("unet", "text_encoder")


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 keeps A, 1 takes B), got {alpha}")


def check_only(only: str | None, *, option: str = "only=") -> re.Pattern | None:
    """`only` compiled; `option` is how errors name it (the command line's is '--only ')."""
    try:
        return re.compile(only) if only else None
    except re.error as e:
        raise ValueError(f"{option}{only!r} is not a regular expression: {e}") from None


def soup(a: modeling.UniGSModel, b: modeling.UniGSModel, alpha: float, *, only: str | None = None,
         option: str = "only=") -> int:
    """Move a's UNet and text encoder alpha of the way to b's, in place; the number of weights moved.
    Everything is checked before a is touched; `option` names `only` in errors."""
    import torch

    check_alpha(alpha)
    pattern = check_only(only, option=option)
    states = {name: (getattr(a, name).state_dict(), getattr(b, name).state_dict()) for name in MIXED}
    for name, (sa, sb) in states.items():
        if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
            raise ValueError(f"the two models' {name}s differ in architecture: B must be a fine-tune of A")
    mixed = {name: [k for k, v in sa.items() if v.is_floating_point()
                    and (name != "unet" or pattern is None or pattern.search(k))]
             for name, (sa, _) in states.items()}
    if not mixed["unet"]:
        raise ValueError(f"{option}{only!r} matches no UNet weight (names look like "
                         f"'{next(iter(states['unet'][0]))}')")
    moved = 0
    with torch.no_grad():
        for name, (sa, sb) in states.items():
            new = dict(sa)
            for k in mixed[name]:
                new[k] = torch.lerp(sa[k].float(), sb[k].float(), alpha).to(sa[k].dtype)
                moved += sa[k].numel()
            getattr(a, name).load_state_dict(new)
    return moved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="The model to start from (a UniGS model folder).")
    ap.add_argument("b", help="The model to move towards (a fine-tune of A).")
    ap.add_argument("--alpha", type=float, required=True, help="How far towards B: 0 keeps A, 1 takes B.")
    ap.add_argument("--out", required=True, help="The new model folder.")
    ap.add_argument("--only", help="Mix only the UNet weights whose name matches this regex (and the text encoder).")
    ap.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and not args.overwrite:
            raise ValueError(f"{out} exists: pass --overwrite to replace it")
        check_alpha(args.alpha)  # before loading two models
        check_only(args.only, option="--only ")
        a, b = modeling.load(args.a), modeling.load(args.b)
        moved = soup(a, b, args.alpha, only=args.only, option="--only ")
    except ValueError as e:  # modeling.ModelError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    with io.atomic_dir(out) as tmp:
        modeling.save(a, tmp)
    print(f"{out}: {args.a} + {args.alpha:g} x ({args.b} - {args.a}), {moved:,} weights moved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
