"""The engine manifest (`unigs.json`): what every exported file is and how to call it.

One typed schema, written by `unigs-export` and read by the runtime, the backends and the
TensorRT builder; `FORMAT_VERSION` changes whenever a reader would misread an older file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import io

FORMAT = "unigs-engines"
FORMAT_VERSION = 1
MANIFEST_NAME = "unigs.json"
COMPONENTS = ("unet", "text_encoder", "vae_encoder", "vae_decoder")
# an AutoencoderTiny, where one was exported; the inpaint reranker (rerank.py), where the model has one
OPTIONAL_COMPONENTS = ("tiny_vae_encoder", "tiny_vae_decoder", "reranker")


class ManifestError(ValueError):
    """A missing, foreign or inconsistent manifest; the message says what to do."""


@dataclass
class ModelInfo:
    """What the runtime needs to know of the model to feed it."""

    unet_in_channels: int
    unet_out_channels: int
    latent_channels: int
    vae_scale_factor: int  # image pixels per latent pixel
    vae_scaling_factor: float  # latents are multiplied by it after encoding
    unet_spatial_multiple: int  # latent H and W must be multiples of it
    text_hidden_size: int
    max_text_length: int
    task_embedding: bool
    tasks: list = field(default_factory=list)
    resolution: int | None = None  # the image side the model was trained at (pixels): the native resolution
    self_attention: list = field(default_factory=list)  # [{"factor": latent downsampling, "heads": n}, ...]

    @property
    def pixel_multiple(self) -> int:
        """Image H and W must be multiples of this."""
        return self.vae_scale_factor * self.unet_spatial_multiple


@dataclass
class Manifest:
    model: ModelInfo
    components: dict  # name -> {files, inputs, outputs, spatial_multiple, validation, ...}
    scheduler: dict  # diffusers scheduler config
    precision: str = "fp32"
    tokenizer: str = "tokenizer.json"
    created: str = ""
    source: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)
    engines: dict = field(default_factory=dict)  # e.g. {"tensorrt": {"files": {component: plan}, ...}}
    # task -> {steps, guidance, scheduler, spacing, threshold, stop, tiny_vae}: this model's
    task_defaults: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    folder: Path | None = field(default=None, compare=False)  # where it was read from; never written

    # ------------------------------------------------------------ files

    def path(self, component: str) -> Path:
        """The (first) file of a component, in the manifest's folder."""
        return self._folder() / self.components[component]["files"][0]

    def plan(self, component: str) -> Path | None:
        """The TensorRT plan of a component, where one was built."""
        name = self.engines.get("tensorrt", {}).get("files", {}).get(component)
        return self._folder() / name if name else None

    def tokenizer_path(self) -> Path:
        return self._folder() / self.tokenizer

    def _folder(self) -> Path:
        if self.folder is None:
            raise ManifestError("this manifest was not read from a folder: load it with Manifest.load")
        return self.folder

    # ------------------------------------------------------------ reading and writing

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        del data["folder"]
        order = ("format", "format_version", "created", "precision", "model", "scheduler", "task_defaults",
                 "tokenizer", "components", "source", "tools", "engines")
        return {k: data[k] for k in order if k not in ("engines", "task_defaults") or data[k]}

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "manifest", folder: Path | None = None) -> Manifest:
        _validate(data, where)
        fields = {f.name for f in dataclasses.fields(cls)} - {"folder", "model"}
        try:
            model = ModelInfo(**data["model"])
        except TypeError as e:
            raise ManifestError(f"{where}: its model section does not fit this unigs-deploy ({e}): export again") \
                from None
        return cls(model=model, folder=folder, **{k: v for k, v in data.items() if k in fields})

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """From an engine file (the manifest beside it), an engine folder or the manifest itself."""
        path = Path(path)
        path = path if path.name == MANIFEST_NAME else manifest_path(path)
        if not path.is_file():
            raise ManifestError(f"no manifest at {path}: export the model with unigs-export, which writes it")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not valid JSON ({e}): export again") from None
        return cls.from_dict(data, path, folder=path.parent)

    def write(self, folder: str | Path | None = None) -> Path:
        """Atomically, into `folder` (default: where it was read from)."""
        folder = Path(folder) if folder is not None else self._folder()
        data = self.to_dict()
        _validate(data, folder / MANIFEST_NAME)
        return io.write_json(folder / MANIFEST_NAME, data)


def manifest_path(engine: str | Path) -> Path:
    """The manifest beside an engine file, or inside an engine folder."""
    engine = Path(engine)
    return engine / MANIFEST_NAME if engine.is_dir() else engine.parent / MANIFEST_NAME


def load(path: str | Path) -> Manifest:
    return Manifest.load(path)


def _validate(data: dict, where: str | Path) -> None:
    if data.get("format") != FORMAT:
        raise ManifestError(f"{where} is not a unigs-deploy engine manifest (format {data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where} has format version {data.get('format_version')}, this unigs-deploy reads "
                            f"version {FORMAT_VERSION}: export the model again with this version")
    comps = data.get("components", {})
    missing = [c for c in COMPONENTS if c not in comps]
    if missing:
        raise ManifestError(f"{where} lacks components {', '.join(missing)}: the export was incomplete; export again")
    for name in COMPONENTS + tuple(c for c in OPTIONAL_COMPONENTS if c in comps):
        for key in ("files", "inputs", "outputs"):
            if key not in comps[name]:
                raise ManifestError(f"{where}: component {name} has no {key!r}")
    unet_in = comps["unet"]["inputs"]["sample"]["shape"][1]
    if unet_in != data["model"]["unet_in_channels"]:
        raise ManifestError(f"{where}: the UNet takes {unet_in} channels but the manifest says "
                            f"{data['model']['unet_in_channels']}: the files do not belong together")
