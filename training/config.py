"""Training configuration: a TOML file plus `--set section.key=value` overrides.

Unknown keys are an error before any work starts (a typo must not silently train the default).
"""

from __future__ import annotations

import copy
from pathlib import Path

import tomllib

DEFAULTS = {
    "model": {
        "init": "scale:tiny",  # scale:{tiny,demo,sd15} or a local diffusers folder (SD, SD-inpainting, UniGS)
        "task_embedding": True,
        "vae": "",  # optional diffusers AutoencoderKL folder replacing the init's VAE
        "train_text_encoder": False,
        "prediction_type": "",  # epsilon | sample | v_prediction; "" keeps the init's scheduler's
        "seed": 0,
    },
    "data": {
        "kind": "shapes",  # shapes (generated on the fly) | coco (any COCO-format JSON) | openimages
        "annotations": "",  # coco: the JSON; openimages: the segmentation CSV
        "images": "",
        "masks": "",  # openimages: the folder of mask PNGs
        "classes": "",  # openimages: class-descriptions CSV (LabelName, DisplayName), optional
        "size": 64,
        "max_entities": 4,
    },
    "train": {
        "stage": "unet",  # unet | vae (the demo model's own VAE, trained first)
        "steps": 100,
        "batch_size": 4,
        "lr": 1e-4,
        "warmup_steps": 10,
        "weight_decay": 1e-2,
        "grad_accum": 1,
        "max_grad_norm": 1.0,
        "ema_decay": 0.999,
        "gradient_checkpointing": False,
        "mixed_precision": "no",
        "cfg_dropout": 0.1,
        "seed": 0,
        "checkpoint_every": 50,
        "sample_every": 0,
        "log_every": 10,
        "output": "runs/unigs",
        "tasks": {"inpaint": 0.3, "synthesize": 0.3, "refer": 0.2, "segment": 0.2},
    },
}


class ConfigError(ValueError):
    pass


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            user = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        _merge(cfg, user, str(path))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        _merge(cfg, {section: {name: _parse_value(value)}}, "--set")
    ratios = cfg["train"]["tasks"]
    if not any(v > 0 for v in ratios.values()):
        raise ConfigError("train.tasks gives no task a positive ratio")
    return cfg


def _merge(cfg: dict, user: dict, where: str) -> None:
    for section, values in user.items():
        if section not in cfg:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(cfg)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for k, v in values.items():
            if k not in cfg[section]:
                raise ConfigError(f"{where}: unknown key {section}.{k} (known: {', '.join(cfg[section])})")
            if k == "tasks":
                unknown = set(v) - set(DEFAULTS["train"]["tasks"])
                if unknown:
                    raise ConfigError(f"{where}: unknown task(s) {', '.join(sorted(unknown))}")
                cfg[section][k] = {**{t: 0.0 for t in DEFAULTS['train']['tasks']}, **v}
            else:
                cfg[section][k] = v
