"""The engine manifest (`unigs.json`): what every exported file is and how to call it."""

from __future__ import annotations

import json
from pathlib import Path

from . import io

FORMAT = "unigs-engines"
FORMAT_VERSION = 1
MANIFEST_NAME = "unigs.json"
COMPONENTS = ("unet", "text_encoder", "vae_encoder", "vae_decoder")


class ManifestError(ValueError):
    """A missing, foreign or inconsistent manifest; the message says what to do."""


def manifest_path(engine: str | Path) -> Path:
    """The manifest beside an engine file, or inside an engine folder."""
    engine = Path(engine)
    return engine / MANIFEST_NAME if engine.is_dir() else engine.parent / MANIFEST_NAME


def load(path: str | Path) -> dict:
    path = manifest_path(path) if Path(path).name != MANIFEST_NAME else Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}: export the model with unigs-export, which writes it")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}): export again") from None
    validate(data, path)
    data["_folder"] = str(path.parent)
    return data


def validate(data: dict, where: str | Path = "manifest") -> None:
    if data.get("format") != FORMAT:
        raise ManifestError(f"{where} is not a unigs-deploy engine manifest (format {data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where} has format version {data.get('format_version')}, this unigs-deploy reads "
                            f"version {FORMAT_VERSION}: export the model again with this version")
    comps = data.get("components", {})
    missing = [c for c in COMPONENTS if c not in comps]
    if missing:
        raise ManifestError(f"{where} lacks components {', '.join(missing)}: the export was incomplete; export again")
    for name in COMPONENTS:
        c = comps[name]
        for key in ("files", "inputs", "outputs"):
            if key not in c:
                raise ManifestError(f"{where}: component {name} has no {key!r}")
    unet_in = comps["unet"]["inputs"]["sample"]["shape"][1]
    if unet_in != data["model"]["unet_in_channels"]:
        raise ManifestError(f"{where}: the UNet takes {unet_in} channels but the manifest says "
                            f"{data['model']['unet_in_channels']}: the files do not belong together")


def write(folder: str | Path, data: dict) -> Path:
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    validate(data, Path(folder) / MANIFEST_NAME)
    return io.write_json(Path(folder) / MANIFEST_NAME, data)
