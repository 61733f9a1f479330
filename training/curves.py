"""Training curves: the loss and the held-out quality `unigs-train` records (curves.json) as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = {"segment_pq": 0.80, "refer_miou": 0.75}  # unigs-bench quality's targets for these metrics
LABELS = {"segment_pq": "segment PQ", "refer_miou": "refer mIoU"}


def join(runs: list[str | Path]) -> dict:
    """Stages trained one after another (each initialised from the one before) as one run: each
    stage's steps offset by where the previous ended. A stage's step-0 evaluation repeats the
    previous stage's last one unless its model changed in between (e.g. a swapped text encoder):
    kept only then. `boundaries` holds (step, run name) where each stage begins."""
    joined = {"loss": [], "eval": [], "boundaries": []}
    end = 0
    for k, run in enumerate(runs):
        path = Path(run) / "curves.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist: give run folders written by unigs-train (train.output)")
        c = json.loads(path.read_text())
        if k == 0:
            joined.update({key: c[key] for key in ("eval_settings", "eval_images") if key in c})
        joined["boundaries"].append((end, Path(run).name))
        last = joined["eval"][-1] if joined["eval"] else None
        for e in c["eval"]:
            if e["step"] == 0 and last is not None and all(e.get(m) == last.get(m) for m in LABELS):
                continue
            joined["eval"].append(dict(e, step=e["step"] + end))
        joined["loss"] += [[step + end, value] for step, value in c["loss"]]
        end += max([step for step, _ in c["loss"]] + [e["step"] for e in c["eval"]] + [0])
    return joined


def plot(curves: dict | str | Path, out: str | Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unigs_deploy.io import write_bytes

    if not isinstance(curves, dict):
        curves = json.loads(Path(curves).read_text())
    fig, (ax_loss, ax_q) = plt.subplots(1, 2, figsize=(10, 3.8))
    if curves["loss"]:
        steps, loss = zip(*curves["loss"], strict=True)
        ax_loss.plot(steps, loss, lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss (mean per log interval)", yscale="log")
    ax_loss.grid(alpha=0.3)
    for key, label in LABELS.items():
        pts = [(e["step"], e[key]) for e in curves["eval"] if key in e]
        if pts:
            line, = ax_q.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
            ax_q.axhline(TARGETS[key], color=line.get_color(), ls="--", lw=0.8)
    s = curves.get("eval_settings", {})
    ax_q.set(xlabel="step", ylim=(0, 1), ylabel=f"held-out ({curves.get('eval_images', '?')} images, "
             f"{s.get('steps', '?')} {s.get('scheduler', '')} step)")
    ax_q.grid(alpha=0.3)
    for step, name in curves.get("boundaries", [])[1:]:
        for ax in (ax_loss, ax_q):
            ax.axvline(step, color="gray", lw=0.6, ls=":")
        ax_q.text(step, 0.35, f" {name}", rotation=90, fontsize=6, color="gray", va="bottom")
    if ax_q.lines:
        ax_q.legend(loc="lower right", fontsize=8, title="dashed: targets", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes(out, buf.getvalue())
