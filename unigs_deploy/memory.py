"""Will a run fit in memory? Checked before the first UNet call, so a run that cannot fit ends
with one line that says what to change, before any output is written, instead of the kernel
killing the process (or onnxruntime failing with a traceback) minutes later.

What dominates is self-attention in a plain exported graph: at T latent tokens it holds the
(heads x T x T) score matrix and its softmax, per batch element. An engine exported with
`--optimize` runs MultiHeadAttention (tiled flash attention on CPU): memory linear in T.
"""

from __future__ import annotations

import math
from pathlib import Path

from .manifest import Manifest

# Peak bytes per element of one attention's (batch x heads x T x T) scores: measured 4.4 on the
# demo engine (peak RSS at 1,024 / 4,096 / 9,216 tokens, batch 1 and 2), see docs/design.md "Memory".
SCORE_BYTES = 4.5
RUN_BYTES = 100e6  # a step's activations without attention scores, at the sizes the demo model runs


class OutOfMemory(MemoryError):
    """A run that would not fit; the message says what to change."""


def available_bytes() -> int | None:
    """Memory this process can still take: the machine's available memory, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            left = int(limit) - int(usage)
            avail = left if avail is None else min(avail, left)
        break
    return avail


def flash_attention(manifest: Manifest) -> bool:
    """True when the UNet's self-attention never materialises the score matrix."""
    fused = manifest.components["unet"].get("optimized") or {}
    return bool(fused.get("MultiHeadAttention")) and not fused.get("Attention")


def estimate(manifest: Manifest, latent_hw: tuple[int, int], batch: int) -> tuple[float, str]:
    """(bytes one UNet call adds to a process whose sessions are loaded, what dominates it).

    The weights are not counted: the check runs after the pipeline has loaded them, so they
    are already outside what /proc/meminfo calls available."""
    attention, why = RUN_BYTES, "activations"
    if not flash_attention(manifest):
        for level in manifest.model.self_attention:
            f = level["factor"]
            tokens = math.ceil(latent_hw[0] / f) * math.ceil(latent_hw[1] / f)
            need = SCORE_BYTES * batch * level["heads"] * tokens**2
            if need > attention:
                attention = need
                why = f"self-attention over {tokens:,} latent tokens"
    return attention, why


def check(manifest: Manifest, latent_hw: tuple[int, int], *, batch: int, work: tuple[int, int]) -> None:
    avail = available_bytes()
    if avail is None:
        return
    need, why = estimate(manifest, latent_hw, batch)
    if need * 1.1 <= avail:  # 10% headroom: the estimate is calibrated, not exact
        return
    native = manifest.model.resolution
    fixes = [f"--resolution native ({native} px, what the model was trained at)" if native else
             "a smaller --resolution N"]
    if not flash_attention(manifest):
        fixes.append("an engine exported with unigs-export --optimize (memory-efficient attention)")
    raise OutOfMemory(f"a {work[1]}x{work[0]} run needs about {need / 1e9:.1f} GB ({why}) but "
                      f"{avail / 1e9:.1f} GB are available: use {' or '.join(fixes)}")
