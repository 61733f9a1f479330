"""Training configuration: a TOML file plus `--set section.key=value` overrides.

Unknown keys are an error before any work starts (a typo must not silently train the default).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import tomllib

from unigs_deploy.synthetic.shapes import ENTITIES

DEFAULTS = {
    "model": {
        "init": "scale:tiny",  # scale:{tiny,demo,sd15} or a local diffusers folder (SD, SD-inpainting, UniGS)
        "task_embedding": True,
        "vae": "",  # optional diffusers AutoencoderKL folder replacing the init's VAE
        # optional model folder (or its text_encoder/) whose text encoder replaces the init's: e.g. an
        # earlier stage's, kept frozen (train_text_encoder = false) while the UNet goes on learning
        "text_encoder": "",
        "train_text_encoder": False,
        # the tasks whose examples train the text encoder (empty: all): the others' prompts reach
        # the UNet through it but send it no gradient (training it beside segment / refer cost the
        # demo model's inpainting, docs/demo-model.md)
        "text_encoder_tasks": [],
        "prediction_type": "",  # epsilon | sample | v_prediction; "" keeps the init's scheduler's
        # true: the noise schedule rescaled to zero SNR at its last timestep (Lin et al. 2024), so the
        # model never sees signal at t = T in training, as it never does when sampling from noise;
        # false keeps the init's scheduler's setting
        "zero_terminal_snr": False,
        # cross-attention transformer blocks per down block (its up block mirrors it, the mid block
        # takes the last), e.g. [1, 2, 3]: blocks added to the init's start as identity
        # (modeling.deepen_unet); [] keeps the init's
        "transformer_layers": [],
        # the caption attention-pooled into the time embedding with this many heads (diffusers'
        # addition_embed_type = "text", modeling.pool_caption): a global caption signal beside
        # cross-attention; 0 keeps the init's
        "caption_pooling_heads": 0,
        # the pooling's starting gain (its closing LayerNorm's): 0 starts as the init; 1 is diffusers'
        # default, the caption a unit-scale vector from the first step (what a class label gives)
        "caption_pooling_gain": 0.0,
        "seed": 0,
    },
    "data": {
        # shapes (generated on the fly) | coco (COCO instances: COCO, EntitySeg) | panoptic (COCO panoptic
        # JSON + data.masks, its PNG folder) | openimages | refer (a refer JSON)
        "kind": "shapes",
        "annotations": "",  # coco: the JSON; openimages: the segmentation CSV
        "images": "",
        "masks": "",  # openimages: the folder of mask PNGs; panoptic: the folder of panoptic PNGs
        "classes": "",  # openimages: class-descriptions CSV (LabelName, DisplayName), optional
        "size": 64,
        "max_entities": 4,
        # the share of inpaint examples that fill one region (the rest: 1..max_entities regions):
        # one region names one shape kind, the examples train.caption_kind_loss learns from
        "inpaint_one_entity": 0.0,
        # shapes: how many entities a scene asks for, [fewest, most] (the held-out images' range by
        # default); [1, 1] draws one unoccluded entity a scene
        "entities": list(ENTITIES),
        # shapes: the share of shapes drawn unrotated. Rotation is what averages a kind's outline
        # out of the posterior mean an x0 prediction learns where the caption decides (docs/demo-model.md,
        # `unigs-bench kind-means`); the held-out images stay rotated. 0: every shape rotated
        "upright": 0.0,
        # a mix instead of one dataset: [[data.datasets]] tables, each with kind/annotations/images/...
        # (as above), an optional name, and tasks = {task = weight}: the share of that task's
        # examples it serves (configs/paper-mix.toml is the paper's split)
        "datasets": [],
    },
    "train": {
        # unet | vae (the demo model's own VAE, trained first) | tiny_vae (an AutoencoderTiny distilled
        # from the model's VAE: fast encode/decode, `unigs-export` exports it as tiny_vae_*) |
        # vae_decoder (the VAE's decoder only: the latent space, and so a trained UNet, stays valid)
        "stage": "unet",
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
        # end the run at this step while train.steps still sets the learning-rate schedule's length:
        # how a stage stopped early is reproduced (0: train.steps)
        "stop_at": 0,
        "output": "runs/unigs",
        "tasks": {"inpaint": 0.3, "synthesize": 0.3, "refer": 0.2, "segment": 0.2},
        "lr_schedule": "constant",  # constant | cosine (to 0 at train.steps), both after warmup_steps
        # one-step mode (Garcia et al. 2024): these tasks train at the trailing single step t = T - 1,
        # where an x0-predicting model's output is the answer (what the 1-step default runs)
        "onestep_tasks": [],
        "onestep_fraction": 1.0,  # share of those tasks' examples drawn at t = T - 1 (the rest: any t)
        # the timesteps one-step examples are drawn from (uniformly): [999, 499] are a 2-step
        # trailing schedule's, so the losses below also train the step a 2-step default ends on
        "onestep_timesteps": [999],
        # one-step examples below T - 1 start where a trailing sampler's later step does: the model's
        # own x0 prediction from pure noise at T - 1, moved to t (not the noised truth)
        "onestep_unroll": False,
        "eval_every": 0,  # held-out segment PQ / refer mIoU through the product pipeline every N steps
        "eval_images": 24,
        "eval_steps": 1,  # trailing DPM-Solver++ steps of the held-out evaluation
        # vae / tiny_vae stages: an L1 term beside the MSE (sharper, flatter colormap regions)
        "l1_weight": 0.0,
        # unet stage: a loss on the predicted colormap in pixels (the frozen VAE decoder applied to
        # the x0 prediction; L1 + MSE) for the one-step examples, as Garcia et al. 2024 fine-tune
        # end-to-end; needs prediction_type = "sample"
        "colormap_pixel_loss": 0.0,
        # unet stage: on the same decoded one-step colormaps, each entity's colour flat and apart
        # from the others' (training/losses.py: what the dichotomy decoder needs to split them)
        "entity_separation_loss": 0.0,
        # unet stage: Min-SNR-gamma loss weighting (Hang et al. 2023) for the examples that are not
        # one-step: an x0 prediction's error is weighted by min(SNR(t), gamma), so the near-pure-noise
        # timesteps, whose answer is a blurred mean, no longer dominate (on the demo model it did not
        # help: docs/demo-model.md, stage 15); 0: off (every example weighted 1)
        "snr_gamma": 0.0,
        # unet stage: for inpaint examples whose captions name a shape kind, the same input denoised
        # again under the prompt with one kind swapped (training/data.py: kind_swapped); a logistic
        # loss asks the true prompt's error inside the region to be the lower (the demo model's UNet
        # ignores the kind under the plain loss; with this it followed the kind but did not draw
        # it: docs/demo-model.md, stage 16). 0: off
        "caption_contrast": 0.0,
        # unet stage: inpaint examples of one entity whose caption names a shape kind are drawn at
        # timesteps in kind_timesteps, where the demo model consults the caption, and their x0
        # colormap's entity mask is scored by a small shape-kind classifier (training/kind_judge.py,
        # trained on true masks when the run starts); cross-entropy with the asked kind. 0: off
        "kind_loss": 0.0,
        "kind_timesteps": [600, 999],
        # unet stage: a task's examples drawn at timesteps in its [low, high] instead of uniformly,
        # e.g. { inpaint = [500, 999] }, to spend more of its steps where the layout is decided (the
        # demo model reads the entity's outline from the noisy latent below t ~ 700); the share of
        # that task's examples so drawn is timestep_range_share, the rest stay uniform. One-step
        # and judged examples keep their own timesteps (on the demo model, half of inpaint's at
        # [600, 999] did not help: docs/demo-model.md, probe S). {}: off
        "timestep_ranges": {},
        "timestep_range_share": 1.0,
        # unet stage, with kind_loss: judge the model's own sample instead, the x0 a trailing DDIM
        # sampler of this many steps reaches from pure noise under the example's region and caption,
        # with gradients through every step (DRaFT, Clark et al. 2024). At one noised-truth timestep
        # the x0 is a mean over the kinds the caption leaves open, so the judge grades a blur (docs/demo-model.md,
        # stage 17); a sample commits to one outline. The judged examples' denoising loss stays at
        # uniform timesteps. On the demo model the judge was gamed (docs/demo-model.md, stages 23-24). 0: off
        "kind_sampled_steps": 0,
        # with kind_sampled_steps: whether that term's gradient reaches a learning text encoder (stage
        # 23 let it, and refer fell from 0.93 to 0.69 in 1,000 steps: docs/demo-model.md); false trains the UNet only
        "kind_loss_text_encoder": True,
        # what kind_loss scores the drawn entity against: "judge", the classifier's cross-entropy with
        # the asked kind (gamed on the demo model: stripes it rated a triangle, stages 23-24), or
        # "fit", one minus the soft IoU with the asked kind's best-fitting shape (training/kind_fit.py),
        # a concrete outline that a stripe or a fill does not match (any colour counts as drawn in
        # the colormap, and the image's colour went: stage 26), or "fit-image", the same inside the
        # region on the image half's pixels near the caption's colour
        "kind_target": "judge",
        # unet stage: the learning rate of the caption pooling (model.caption_pooling_heads) and the
        # kind probe below: modules new to an already trained UNet; 0: train.lr
        "caption_pooling_lr": 0.0,
        # unet stage: a linear probe on the pooled caption (model.caption_pooling_heads) is asked the
        # shape kind the caption names (inpaint examples of one entity), cross-entropy at this weight:
        # the kind extracted from the caption before the UNet has learned to use it (a class label
        # of the kind was learned where the plain caption was not: docs/demo-model.md). The probe is
        # saved beside the model (kind_probe.pt), and a stage started from that model goes on with it
        "caption_kind_loss": 0.0,
        # unet stage: learning without forgetting (Li & Hoiem 2017). A model folder (a trained UniGS with
        # its own text encoder) whose prediction on the same noisy input, mask, control and prompt
        # the student's is pulled toward (MSE at teacher_loss) for examples of teacher_tasks: what a
        # model learned on one world (probe K: the asked shape kind) kept while the mix trains the
        # rest (stages 29-30 and probe L lost it under the plain loss: docs/demo-model.md)
        "teacher": "",
        "teacher_loss": 0.0,
        "teacher_tasks": ["inpaint"],
        # unet stage: a teacher per task, {task = model folder}, beside or instead of train.teacher (one
        # model for all of teacher_tasks): each task kept from the model that did it best (probe M's
        # return kept probe K's inpainting but lost stage 21's synthesize: docs/demo-model.md). The
        # same teacher_loss weighs every teacher's term
        "teachers": {},
        # unet stage: a task's own weight of its teacher term, {task = weight}, in place of teacher_loss
        # (which weighs the tasks not named): a loose pull on one task while the others are held (at
        # weight 4 on every task the model stays put, whatever inpaint learns from: probe R)
        "teacher_weights": {},
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
        _merge(cfg, _read_tables(path), str(path))
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        _merge(cfg, {section: {name: _parse_value(value)}}, "--set")
    _check_mix(cfg)
    t = cfg["train"]
    if t["stage"] not in ("unet", "vae", "vae_decoder", "tiny_vae"):
        raise ConfigError(f"train.stage must be unet, vae, vae_decoder or tiny_vae, not {t['stage']!r}")
    if not any(v > 0 for v in t["tasks"].values()):
        raise ConfigError("train.tasks gives no task a positive ratio")
    if t["lr_schedule"] not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule must be constant or cosine, not {t['lr_schedule']!r}")
    _check_tasks("train.onestep_tasks", t["onestep_tasks"])
    if not 0.0 <= t["onestep_fraction"] <= 1.0:
        raise ConfigError(f"train.onestep_fraction must be in [0, 1], not {t['onestep_fraction']}")
    ts = t["onestep_timesteps"]
    if not ts or not all(isinstance(v, int) and 0 <= v <= 999 for v in ts):
        raise ConfigError(f"train.onestep_timesteps must be a non-empty list of integers in [0, 999], not {ts!r}")
    if t["onestep_unroll"] and (not t["onestep_tasks"] or min(ts) == 999):
        raise ConfigError("train.onestep_unroll applies to one-step examples below t = 999: set train.onestep_tasks "
                          "and a lower train.onestep_timesteps entry (e.g. [999, 499])")
    if not (isinstance(t["eval_steps"], int) and t["eval_steps"] >= 1):
        raise ConfigError(f"train.eval_steps must be an integer >= 1, not {t['eval_steps']!r}")
    for key in ("l1_weight", "colormap_pixel_loss", "entity_separation_loss", "snr_gamma", "caption_contrast",
                "kind_loss", "caption_pooling_lr", "caption_kind_loss", "teacher_loss"):
        if t[key] < 0:
            raise ConfigError(f"train.{key} must be >= 0, not {t[key]}")
    for key in ("colormap_pixel_loss", "entity_separation_loss"):
        if t[key] and not t["onestep_tasks"]:
            raise ConfigError(f"train.{key} applies to one-step examples: set train.onestep_tasks too")
    kt = t["kind_timesteps"]
    if not (isinstance(kt, list) and len(kt) == 2 and all(isinstance(v, int) for v in kt)
            and 0 <= kt[0] <= kt[1] <= 999):
        raise ConfigError(f"train.kind_timesteps must be [low, high] integers with 0 <= low <= high <= 999, not {kt!r}")
    tr = t["timestep_ranges"]
    if not isinstance(tr, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and 0 <= v[0] <= v[1] <= 999 for v in tr.values()):
        raise ConfigError(f"train.timestep_ranges must be a table of task = [low, high] integers with "
                          f"0 <= low <= high <= 999, not {tr!r}")
    _check_tasks("train.timestep_ranges", tr)
    share = t["timestep_range_share"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError(f"train.timestep_range_share must be a number in (0, 1], not {share!r}")
    ks = t["kind_sampled_steps"]
    if not (isinstance(ks, int) and not isinstance(ks, bool) and ks >= 0):
        raise ConfigError(f"train.kind_sampled_steps must be an integer >= 0 (0: off), not {ks!r}")
    if ks and not t["kind_loss"]:
        raise ConfigError("train.kind_sampled_steps sets how train.kind_loss samples what it judges: set that too")
    if not isinstance(t["kind_loss_text_encoder"], bool):
        raise ConfigError(f"train.kind_loss_text_encoder must be true or false, not {t['kind_loss_text_encoder']!r}")
    if t["kind_target"] not in ("judge", "fit", "fit-image"):
        raise ConfigError(f"train.kind_target must be \"judge\", \"fit\" or \"fit-image\", not {t['kind_target']!r}")
    sa = t["stop_at"]
    if not (isinstance(sa, int) and not isinstance(sa, bool) and 0 <= sa <= t["steps"]):
        raise ConfigError(f"train.stop_at must be an integer in [0, train.steps = {t['steps']}] (0: train.steps), "
                          f"not {sa!r}")
    _check_tasks("train.teacher_tasks", t["teacher_tasks"])
    tt = t["teachers"]
    if not (isinstance(tt, dict) and all(isinstance(v, str) and v for v in tt.values())):
        raise ConfigError(f"train.teachers must be a table of task = \"model folder\", not {tt!r}")
    _check_tasks("train.teachers", tt)
    taught = bool(t["teacher"] or tt)
    if taught != bool(t["teacher_loss"]):
        raise ConfigError("train.teacher (or train.teachers) and train.teacher_loss go together: set both (a model "
                          "folder and a weight > 0) or neither")
    if t["teacher"] and not t["teacher_tasks"]:
        raise ConfigError("train.teacher_tasks is empty: name the tasks whose examples the teacher guides "
                          "(e.g. [\"inpaint\"])")
    both = sorted(set(tt) & set(t["teacher_tasks"])) if t["teacher"] else []
    if both:
        raise ConfigError(f"train.teachers and train.teacher both teach {', '.join(both)}: name each task's teacher "
                          "once (drop it from train.teacher_tasks or from train.teachers)")
    tw = t["teacher_weights"]
    if not (isinstance(tw, dict) and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
                                         for v in tw.values())):
        raise ConfigError(f"train.teacher_weights must be a table of task = weight >= 0, not {tw!r}")
    _check_tasks("train.teacher_weights", tw)
    untaught = sorted(set(tw) - set(teacher_paths(t)))
    if untaught:
        raise ConfigError(f"train.teacher_weights names {', '.join(untaught)}, which no teacher teaches: give it a "
                          "teacher (train.teachers) or drop its weight")
    if taught and t["stage"] != "unet":
        raise ConfigError(f"train.teacher distils the UNet: it needs train.stage = \"unet\", not {t['stage']!r}")
    _check_share("data.inpaint_one_entity", cfg["data"]["inpaint_one_entity"])
    _check_shapes_world("data", cfg["data"])
    tl = cfg["model"]["transformer_layers"]
    if not (isinstance(tl, list) and all(isinstance(v, int) and v >= 1 for v in tl)):
        raise ConfigError(f"model.transformer_layers must be a list of integers >= 1 (one per down block), not {tl!r}")
    ch = cfg["model"]["caption_pooling_heads"]
    if not (isinstance(ch, int) and not isinstance(ch, bool) and ch >= 0):
        raise ConfigError(f"model.caption_pooling_heads must be an integer >= 0 (0: off), not {ch!r}")
    g = cfg["model"]["caption_pooling_gain"]
    if not (isinstance(g, (int, float)) and not isinstance(g, bool) and g >= 0):
        raise ConfigError(f"model.caption_pooling_gain must be a number >= 0, not {g!r}")
    if g and not ch:
        raise ConfigError("model.caption_pooling_gain sets the gain of pooling that model.caption_pooling_heads "
                          "adds: set that too")
    _check_tasks("model.text_encoder_tasks", cfg["model"]["text_encoder_tasks"])
    if cfg["model"]["text_encoder_tasks"] and not cfg["model"]["train_text_encoder"]:
        raise ConfigError("model.text_encoder_tasks needs model.train_text_encoder = true")
    return cfg


def _read_tables(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's tables laid over those of the config its top-level `base` names.

    A stage that changes a few keys of another says so in a few lines, and its file still reads as
    the record of what changed. A key it sets replaces the base's value whole (tasks and
    datasets included); paths in `base` are relative to the file that names them.
    """
    try:
        tables = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    base = tables.pop("base", None)
    _merge(copy.deepcopy(DEFAULTS), tables, str(path))  # a typo is named in the file that has it
    if base is None:
        return tables
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of the config this one changes, not {base!r}")
    base_path = path.parent / base
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        loop = " -> ".join(p.name for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: its base chain loops ({loop}): remove one of the base keys")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base!r} does not exist (paths are relative to {path.parent}/)")
    merged = _read_tables(base_path, chain)
    output = merged.get("train", {}).get("output")
    if output is not None and "output" not in tables.get("train", {}):
        raise ConfigError(f"{path}: set train.output: without it this run would write into its base's "
                          f"run folder ({output})")
    for section, values in tables.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def dump_config(cfg: dict) -> str:
    """The resolved config as TOML: what a stage and its chain of bases add up to, defaults spelled out."""
    out = []
    for section, values in cfg.items():
        out.append(f"[{section}]")
        out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {v!r}")


def _check_share(name: str, share) -> None:
    if not (isinstance(share, (int, float)) and not isinstance(share, bool) and 0.0 <= share <= 1.0):
        raise ConfigError(f"{name} must be a share in [0, 1], not {share!r}")


def _check_shapes_world(where: str, d: dict) -> None:
    """The shapes world's own keys, at the top of [data] or in one of its [[data.datasets]]."""
    if "upright" in d:
        _check_share(f"{where}.upright", d["upright"])
    en = d.get("entities")  # a mix entry without it inherits [data]'s, checked there
    if en is not None and not (isinstance(en, list) and len(en) == 2 and all(isinstance(v, int) for v in en)
                               and 1 <= en[0] <= en[1]):
        raise ConfigError(f"{where}.entities must be [fewest, most] integers with 1 <= fewest <= most, not {en!r}")


# entities and upright shape the shapes world: a mix can hold one-entity scenes beside full ones
DATASET_KEYS = {"name", "kind", "annotations", "images", "masks", "classes", "tasks", "entities", "upright"}


def _check_mix(cfg: dict) -> None:
    mix = cfg["data"]["datasets"]
    if not isinstance(mix, list) or not all(isinstance(d, dict) for d in mix):
        raise ConfigError("data.datasets must be [[data.datasets]] tables")
    for k, d in enumerate(mix):
        where = f"data.datasets[{k}] ({d.get('name', 'unnamed')})"
        unknown = set(d) - DATASET_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(DATASET_KEYS))})")
        if "kind" not in d or not isinstance(d.get("tasks"), dict) or not d["tasks"]:
            raise ConfigError(f"{where} needs kind and tasks = {{task = weight, ...}}")
        _check_tasks(where, d["tasks"])
        if d["kind"] != "shapes" and {"entities", "upright"} & set(d):
            raise ConfigError(f"{where}: entities and upright shape the shapes world; kind = {d['kind']!r} "
                              "draws its entities from its annotations")
        _check_shapes_world(where, d)
    if mix:
        served = {t for d in mix for t, w in d["tasks"].items() if w > 0}
        wanted = {t for t, r in cfg["train"]["tasks"].items() if r > 0}
        if wanted - served:
            raise ConfigError(f"no dataset in data.datasets serves {', '.join(sorted(wanted - served))}: give one "
                              "a weight for it, or set its train.tasks ratio to 0")


def teacher_paths(t: dict) -> dict:
    """{task: teacher model folder}: train.teacher for each of train.teacher_tasks, and train.teachers.
    The config's checks and the trainer both read who teaches what from here."""
    paths = dict.fromkeys(t["teacher_tasks"], t["teacher"]) if t["teacher"] else {}
    return {**paths, **t["teachers"]}


def _check_tasks(where: str, names) -> None:
    unknown = set(names) - set(DEFAULTS["train"]["tasks"])
    if unknown:
        raise ConfigError(f"{where}: unknown task(s) {', '.join(sorted(unknown))}")


def _merge(cfg: dict, user: dict, where: str) -> None:
    for section, values in user.items():
        if section not in cfg:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(cfg)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for k, v in values.items():
            if k == "base":
                raise ConfigError(f"{where}: {section}.base: base goes at the top of the file, before any [table]")
            if k not in cfg[section]:
                raise ConfigError(f"{where}: unknown key {section}.{k} (known: {', '.join(cfg[section])})")
            if k == "tasks":
                _check_tasks(where, v)
                cfg[section][k] = {**{t: 0.0 for t in DEFAULTS['train']['tasks']}, **v}
            else:
                cfg[section][k] = v
