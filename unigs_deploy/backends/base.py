"""What every backend's runner is: the contract the pipeline relies on.

A runner runs one exported component (UNet, text encoder, VAE encoder or decoder). Building an
engine and running one are different objects (export/ builds, a runner only loads and runs).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """One loaded component.

    `inputs`: the input names the component takes. `provider`: where it runs, as a person reads it
    (e.g. "CPUExecutionProvider", "TensorRT"). `__call__(**feed)` takes numpy arrays by input name
    (converted to the component's dtypes) and returns its one output as a numpy array that the
    runner owns: valid until the next call, which may overwrite it (copy it to keep it). This
    is what lets a denoising loop run without allocating per step. `close()` frees what the
    runner holds (sessions, device buffers); a closed runner cannot be called.
    """

    inputs: list[str]

    @property
    def provider(self) -> str: ...

    def __call__(self, **feed: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...
