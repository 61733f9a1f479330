"""Torch side: build, load and expand UniGS models (export, training and benchmarks use it;
the runtime never imports it: it installs as unigs_deploy.modeling but lives outside unigs_deploy/).

UniGS UNet = diffusers `UNet2DConditionModel` with 13 input channels
`[z_img_t(4), z_cmap_t(4), mask(1), control(4)]` and 8 output channels `[eps_img, eps_cmap]`,
optionally with a 4-task embedding (`num_class_embeds=4`, tasks in `TASKS` order).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unigs_deploy import tasks
from unigs_deploy.tokenizer import BOS, EOS

from .vocabulary import build_clip_bpe, save_tokenizer_folder, shapes_corpus

log = logging.getLogger(__name__)

TASKS = tasks.NAMES
LATENT = 4
UNIGS_IN, UNIGS_OUT = 13, 8
SD_INPAINT_IN, SD_TEXT2IMG_IN, SD_OUT = 9, 4, 4
SCALES = ("tiny", "demo", "sd15")
# per-task sampling defaults measured for a model (unigs-bench steps), kept beside its weights
TASK_DEFAULTS = "task_defaults.json"
TINY_VAE = "tiny_vae"  # optional subfolder: a diffusers AutoencoderTiny for this model's latents

# diffusers' scheduler_config.json of SD-1.5 (DDIM fields; PNDM fields are ignored by DDIM)
SD15_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
# scheduler settings a model folder may add to those (kept by load; the runtime schedulers read them)
SCHEDULER_EXTRAS = ("rescale_betas_zero_snr",)


class ModelError(ValueError):
    """A model folder or checkpoint that cannot be used; the message says what to do."""


@dataclass
class UniGSModel:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    scheduler_config: dict = field(default_factory=lambda: dict(SD15_SCHEDULER))
    source: dict = field(default_factory=dict)
    task_defaults: dict = field(default_factory=dict)  # per task: steps, guidance, scheduler, spacing, threshold, stop
    tiny_vae: torch.nn.Module | None = None  # optional diffusers AutoencoderTiny: fast encode/decode
    reranker: torch.nn.Module | None = None  # optional: chooses among inpaint candidates (modeling/reranker.py)

    @property
    def task_embedding(self) -> bool:
        return self.unet.config.num_class_embeds is not None

    def eval(self) -> UniGSModel:
        for m in (self.unet, self.vae, self.text_encoder, self.tiny_vae, self.reranker):
            if m is not None:
                m.eval().requires_grad_(False)
        return self


# ------------------------------------------------------------------ configurations


def unet_config(scale: str, *, in_channels: int = UNIGS_IN, out_channels: int = UNIGS_OUT,
                task_embedding: bool = False) -> dict:
    if scale == "sd15":
        cfg = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                   cross_attention_dim=768, attention_head_dim=8)
    elif scale == "demo":
        cfg = dict(sample_size=16, block_out_channels=(64, 128, 192), layers_per_block=1,
                   down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                   cross_attention_dim=128, attention_head_dim=8)
    elif scale == "tiny":
        cfg = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                   cross_attention_dim=32, attention_head_dim=8)
    else:
        raise ModelError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    cfg.update(in_channels=in_channels, out_channels=out_channels)
    if task_embedding:
        cfg.update(class_embed_type=None, num_class_embeds=len(TASKS))
    return cfg


def vae_config(scale: str) -> dict:
    if scale == "sd15":
        ch = (128, 256, 512, 512)
    elif scale == "demo":
        ch = (16, 32, 64)  # factor 4: 64x64 images -> 16x16 latents
    elif scale == "tiny":
        ch = (32, 32)
    else:
        raise ModelError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    extra = {"norm_num_groups": 16, "mid_block_add_attention": False} if scale == "demo" else {}
    return dict(in_channels=3, out_channels=3, latent_channels=LATENT, block_out_channels=ch,
                down_block_types=("DownEncoderBlock2D",) * len(ch), up_block_types=("UpDecoderBlock2D",) * len(ch),
                layers_per_block=2 if scale == "sd15" else 1, norm_num_groups=32,
                sample_size=512 if scale == "sd15" else 64, scaling_factor=0.18215) | extra


def tiny_vae_config(vae) -> dict:
    """diffusers AutoencoderTiny at `vae`'s factor and latent channels: for SD's 4 levels, TAESD's own
    architecture; smaller VAEs get 32 channels and 2 blocks a level."""
    n = len(vae.config.block_out_channels)
    if n == 4:
        ch, enc, dec = (64,) * 4, (1, 3, 3, 3), (3, 3, 3, 1)
    else:
        ch, enc, dec = (32,) * n, (1,) + (2,) * (n - 1), (2,) * (n - 1) + (1,)
    return dict(encoder_block_out_channels=ch, decoder_block_out_channels=ch, num_encoder_blocks=enc,
                num_decoder_blocks=dec, latent_channels=vae.config.latent_channels)


def tiny_vae_factor(tiny) -> int:
    return 2 ** (len(tiny.config.encoder_block_out_channels) - 1)


_TINY_VAE_OWN_KEY = re.compile(r"attributes \{'block_out_channels': \[[^\]]*\]\} were passed to AutoencoderTiny")


class _TinyVaeOwnKey(logging.Filter):
    """Drops diffusers' warning that `block_out_channels` in an AutoencoderTiny config.json is
    unexpected: AutoencoderTiny writes that key into its own config (diffusers 0.42), so every
    folder it saved draws a "Please verify your config.json" on load that asks the user to fix
    nothing. Other config warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _TINY_VAE_OWN_KEY.search(record.getMessage())


def load_tiny_vae(path: str | Path, vae) -> torch.nn.Module:
    """A diffusers AutoencoderTiny folder (TAESD for SD 1.5, or one `unigs-train` distilled from
    this model's VAE; its model folder works too), checked to fit `vae`'s latent space."""
    from diffusers import AutoencoderTiny

    path = Path(path)
    if not (path / "config.json").is_file() and (path / TINY_VAE / "config.json").is_file():
        path = path / TINY_VAE  # a model folder (unigs-train's tiny_vae stage writes one) holding it
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a diffusers AutoencoderTiny folder (no config.json): give the folder "
                         "holding config.json and the weights (e.g. a copy of madebyollin/taesd)")
    quiet = _TinyVaeOwnKey()
    config_log = logging.getLogger("diffusers.configuration_utils")
    config_log.addFilter(quiet)
    try:
        tiny = AutoencoderTiny.from_pretrained(path, local_files_only=True).float().eval()
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise ModelError(f"cannot load the tiny VAE in {path}: {str(e).splitlines()[0]}") from None
    finally:
        config_log.removeFilter(quiet)
    want_c, want_f = vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
    if tiny.config.latent_channels != want_c or tiny_vae_factor(tiny) != want_f:
        raise ModelError(f"the tiny VAE in {path} makes {tiny.config.latent_channels}-channel latents at 1/"
                         f"{tiny_vae_factor(tiny)} size but the model's VAE {want_c} at 1/{want_f}: "
                         "use a tiny VAE made for this model's VAE")
    return tiny.requires_grad_(False)


def text_config(scale: str, vocab_size: int) -> dict:
    if scale == "sd15":
        return dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
    dims = {"demo": (128, 4, 512, 4), "tiny": (32, 2, 64, 2)}
    if scale not in dims:
        raise ModelError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    hidden, layers, inter, heads = dims[scale]
    return dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=77, hidden_act="quick_gelu")


def build(scale: str, *, task_embedding: bool = False, seed: int = 0, tiny_vae: bool = False) -> UniGSModel:
    """A randomly initialised UniGS model of the given scale (weights seeded); tiny_vae adds a
    random AutoencoderTiny (speed measurements only)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = build_clip_bpe(shapes_corpus(), vocab_size=1000)
    unet = UNet2DConditionModel(**unet_config(scale, task_embedding=task_embedding))
    vae = AutoencoderKL(**vae_config(scale))
    ids = {k: tok.token_to_id(t) for k, t in (("bos_token_id", BOS), ("eos_token_id", EOS), ("pad_token_id", EOS))}
    text = CLIPTextModel(CLIPTextConfig(**text_config(scale, tok.get_vocab_size()), **ids))
    tiny = AutoencoderTiny(**tiny_vae_config(vae)) if tiny_vae else None
    return UniGSModel(unet, vae, text, tok, source={"kind": "random", "scale": scale, "seed": seed},
                      tiny_vae=tiny).eval()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ expansion


def expand_unet(unet, *, task_embedding: bool = False):
    """SD UNet (9 in inpainting, or 4 in text-to-image; 4 out) -> UniGS UNet (13 in, 8 out).

    Old weights go to their new slots and new ones are zero, so the expanded model computes
    exactly what the old one did on the image half (eps_cmap starts at zero).
    """
    from diffusers import UNet2DConditionModel

    cin, cout = unet.config.in_channels, unet.config.out_channels
    if (cin, cout) == (UNIGS_IN, UNIGS_OUT):
        return unet
    if cout != SD_OUT or cin not in (SD_INPAINT_IN, SD_TEXT2IMG_IN):
        raise ModelError(
            f"UNet has {cin} input and {cout} output channels; expected Stable Diffusion "
            f"({SD_INPAINT_IN} or {SD_TEXT2IMG_IN} in, {SD_OUT} out) or UniGS ({UNIGS_IN} in, {UNIGS_OUT} out)")
    if cin == SD_TEXT2IMG_IN:
        warnings.warn("expanding a text-to-image UNet: the new mask/control channels start at zero; "
                      "an SD-inpainting UNet is the better start", stacklevel=2)
    cfg = dict(unet.config)
    cfg.update(in_channels=UNIGS_IN, out_channels=UNIGS_OUT)
    if task_embedding:
        cfg.update(class_embed_type=None, num_class_embeds=len(TASKS))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    new = UNet2DConditionModel(**cfg)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith(("conv_in.", "conv_out."))}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    with torch.no_grad():
        w_in = torch.zeros_like(new.conv_in.weight)
        old = unet.conv_in.weight
        w_in[:, 0:4] = old[:, 0:4]  # z_t -> z_img_t; z_cmap_t (4:8) stays zero
        if cin == SD_INPAINT_IN:
            w_in[:, 8] = old[:, 4]  # mask
            w_in[:, 9:13] = old[:, 5:9]  # masked-image latent -> control latent
        new.conv_in.weight.copy_(w_in)
        new.conv_in.bias.copy_(unet.conv_in.bias)
        new.conv_out.weight.zero_()
        new.conv_out.bias.zero_()
        new.conv_out.weight[0:4] = unet.conv_out.weight
        new.conv_out.bias[0:4] = unet.conv_out.bias
        if task_embedding:
            new.class_embedding.weight.zero_()  # start as the single-task model
    return new if new.dtype == unet.dtype else new.to(unet.dtype)


def deepen_unet(unet, transformer_layers: list[int]):
    """The UNet with deeper cross-attention transformers: `transformer_layers[i]` blocks in down
    block i's (its up block mirrors it; the mid block takes the last), as SDXL varies them.

    Kept blocks keep their weights; each added block's three residual branches (self-attention,
    cross-attention, feed-forward) end in zeroed projections, so the deeper UNet starts computing
    exactly what the init did and training grows capacity where the caption meets the image.
    """
    from diffusers import UNet2DConditionModel

    depths = [int(n) for n in transformer_layers]
    old = unet.config.transformer_layers_per_block
    n_down = len(unet.config.down_block_types)
    old = list(old) if isinstance(old, (list, tuple)) else [old] * n_down
    if len(depths) != n_down or min(depths) < 1:
        raise ModelError(f"model.transformer_layers needs {n_down} depths of at least 1 (one per down block), "
                         f"got {depths}")
    if any(n < o for n, o in zip(depths, old, strict=True)):
        raise ModelError(f"model.transformer_layers {depths} is shallower than the init's {old}: "
                         "layers can be added, not removed")
    if depths == old:
        return unet
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg.update(transformer_layers_per_block=depths, reverse_transformer_layers_per_block=None)
    new = UNet2DConditionModel(**cfg)
    new = new if new.dtype == unet.dtype else new.to(unet.dtype)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected:
        raise ModelError(f"deepening the UNet left weights without a place: {unexpected[:3]}")
    if any(".transformer_blocks." not in k for k in missing):
        raise ModelError(f"deepening the UNet missed weights outside the new transformer blocks: {missing[:3]}")
    added = set()
    for k in missing:
        parent, rest = k.split(".transformer_blocks.", 1)
        added.add(f"{parent}.transformer_blocks.{rest.split('.')[0]}")
    with torch.no_grad():
        for name in added:
            block = new.get_submodule(name)
            for proj in (block.attn1.to_out[0], block.attn2.to_out[0], block.ff.net[-1]):
                proj.weight.zero_()
                proj.bias.zero_()
    return new


def pool_caption(unet, heads: int, *, gain: float = 0.0):
    """The UNet with the caption also pooled into its time embedding: diffusers'
    `addition_embed_type = "text"` (TextTimeEmbedding: attention pooling over the text encoder's
    hidden states, as DeepFloyd IF), so every block sees the caption as one global signal, as it
    sees the task, and not only where cross-attention looks. It reads the same
    encoder_hidden_states, so the engines' inputs do not change.

    The pooled embedding's closing LayerNorm starts at `gain` (bias zero). At 0 the new UNet starts
    computing exactly what the init did, but the gain's gradient is the loss's correlation with a
    randomly pooled caption, and from scratch it stayed near zero (docs/demo-model.md); at 1 (diffusers'
    default) the caption is a unit-scale vector from the start, as a task label is.
    """
    from diffusers import UNet2DConditionModel

    width = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
    have = unet.config.addition_embed_type
    if have == "text":
        if unet.config.addition_embed_type_num_heads != heads:
            raise ModelError(f"model.caption_pooling_heads {heads}: the init already pools the caption with "
                             f"{unet.config.addition_embed_type_num_heads} heads; set that or 0")
        return unet
    if have is not None:
        raise ModelError(f"model.caption_pooling_heads: the init's UNet already has addition_embed_type {have!r}; "
                         "caption pooling replaces none")
    if heads < 1 or width % heads:
        raise ModelError(f"model.caption_pooling_heads must divide the text width {width}, got {heads}")
    cfg = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg.update(addition_embed_type="text", addition_embed_type_num_heads=heads)
    new = UNet2DConditionModel(**cfg)
    new = new if new.dtype == unet.dtype else new.to(unet.dtype)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("add_embedding.") for k in missing):
        raise ModelError(f"adding caption pooling moved weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        new.add_embedding.norm2.weight.fill_(gain)
        new.add_embedding.norm2.bias.zero_()
    return new


# ------------------------------------------------------------------ loading


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load(path: str | Path, *, task_embedding: bool | None = None) -> UniGSModel:
    """A local diffusers folder (SD-inpainting, SD text-to-image or UniGS) or a single-file
    CompVis/LDM checkpoint (.ckpt/.safetensors); SD UNets are expanded to UniGS."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"weights not found: {path} does not exist")
    if path.is_file():
        return _load_single_file(path, task_embedding)
    return _load_folder(path, task_embedding)


def _load_folder(path: Path, task_embedding) -> UniGSModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from tokenizers import Tokenizer
    from transformers import CLIPTextModel

    needed = ["unet", "vae", "text_encoder", "tokenizer"]
    missing = [d for d in needed if not (path / d).is_dir()]
    if missing:
        raise ModelError(f"{path} is not a complete diffusers model folder: "
                         f"missing {', '.join(m + '/' for m in missing)} "
                         f"(expected {', '.join(d + '/' for d in needed)} and scheduler/)")
    for d in ("unet", "vae", "text_encoder"):
        if not (path / d / "config.json").is_file():
            raise ModelError(f"{path / d} has no config.json: the folder is partial; copy it again")
        if not any((path / d).glob("*.safetensors")) and not any((path / d).glob("*.bin")):
            raise ModelError(f"{path / d} has no weights (*.safetensors or *.bin): the folder is partial")
    try:  # always fp32 on the torch side: fp16 is an export option, and the demo ships fp16 weights
        unet = UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True).float()
        vae = AutoencoderKL.from_pretrained(path / "vae", local_files_only=True).float()
        text = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True).float()
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"cannot load the model in {path}: {str(e).splitlines()[0]}") from None
    tok_file = path / "tokenizer" / "tokenizer.json"
    if tok_file.is_file():
        tok = Tokenizer.from_file(str(tok_file))
    elif (path / "tokenizer" / "vocab.json").is_file():
        tok = _tokenizer_from_vocab(path / "tokenizer")
    else:
        raise ModelError(f"{path / 'tokenizer'} has neither tokenizer.json nor vocab.json + merges.txt")
    sched = dict(SD15_SCHEDULER)
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.is_file():
        sched.update({k: v for k, v in json.loads(sched_file.read_text()).items()
                      if k in SD15_SCHEDULER or k in SCHEDULER_EXTRAS})
    was = (unet.config.in_channels, unet.config.out_channels)
    want_task = task_embedding if task_embedding is not None else unet.config.num_class_embeds is not None
    unet = expand_unet(unet, task_embedding=want_task)
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt")]
    source = {"kind": "diffusers", "path": str(path.resolve()), "unet_channels_in_out": list(was),
              "sha256": _hash_files(files)}
    defaults = json.loads((path / TASK_DEFAULTS).read_text()) if (path / TASK_DEFAULTS).is_file() else {}
    tiny = load_tiny_vae(path / TINY_VAE, vae) if (path / TINY_VAE).is_dir() else None
    from . import reranker

    ranker = reranker.load(path / reranker.FOLDER) if (path / reranker.FOLDER).is_dir() else None
    return UniGSModel(unet, vae, text, tok, sched, source, defaults, tiny, ranker).eval()


def _tokenizer_from_vocab(folder: Path):
    from transformers import CLIPTokenizerFast

    fast = CLIPTokenizerFast.from_pretrained(folder, local_files_only=True)
    return fast.backend_tokenizer


LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."


def ldm_original_config(ckpt: dict) -> dict:
    """The CompVis/LDM `original_config` of a Stable-Diffusion-1.x-layout checkpoint, read off
    its tensors (what diffusers' single-file conversion needs, without a download). Heads: 8,
    the SD-1.x convention, which the weights cannot tell."""
    def get(key):
        if key not in ckpt:
            raise ModelError(f"the checkpoint has no {key}: not a Stable Diffusion 1.x (CompVis/LDM) checkpoint")
        return ckpt[key]

    conv_in = get(LDM_UNET + "input_blocks.0.0.weight")
    ch = conv_in.shape[0]
    blocks = [k[len(LDM_UNET + "input_blocks."):] for k in ckpt if k.startswith(LDM_UNET + "input_blocks.")]
    idx = {int(b.split(".")[0]) for b in blocks}
    levels = 1 + sum(1 for k in ckpt if k.startswith(LDM_UNET + "input_blocks.") and k.endswith(".0.op.weight"))
    per_level = (max(idx) + 1 - levels) // levels
    mult, attn = [], []
    for i in range(levels):
        first = 1 + i * (per_level + 1)
        mult.append(get(f"{LDM_UNET}input_blocks.{first}.0.out_layers.3.weight").shape[0] // ch)
        if any(k.startswith(f"{LDM_UNET}input_blocks.{first}.1.") for k in ckpt):
            attn.append(2**i)
    to_k = next((v for k, v in ckpt.items() if k.startswith(LDM_UNET) and k.endswith("attn2.to_k.weight")), None)
    proj_in = next((v for k, v in ckpt.items() if k.startswith(LDM_UNET) and k.endswith("proj_in.weight")), None)
    unet = {"in_channels": conv_in.shape[1], "out_channels": get(LDM_UNET + "out.2.weight").shape[0],
            "model_channels": ch, "attention_resolutions": attn, "num_res_blocks": per_level, "channel_mult": mult,
            "num_heads": 8, "context_dim": to_k.shape[1] if to_k is not None else None, "transformer_depth": 1,
            "use_linear_in_transformer": proj_in is not None and proj_in.ndim == 2}
    vch = get(LDM_VAE + "encoder.conv_in.weight").shape[0]
    vlevels = 1 + max(int(k.split(".")[3]) for k in ckpt if k.startswith(LDM_VAE + "encoder.down."))
    vres = 1 + max(int(k.split(".")[5]) for k in ckpt if k.startswith(LDM_VAE + "encoder.down.0.block."))
    vmult = [get(f"{LDM_VAE}encoder.down.{i}.block.0.conv2.weight").shape[0] // vch for i in range(vlevels)]
    dd = {"double_z": True, "z_channels": get(LDM_VAE + "decoder.conv_in.weight").shape[1], "resolution": 256,
          "in_channels": 3, "out_ch": 3, "ch": vch, "ch_mult": vmult, "num_res_blocks": vres, "attn_resolutions": [],
          "dropout": 0.0}
    return {"model": {"params": {"scale_factor": 0.18215, "unet_config": {"params": unet},
                                 "first_stage_config": {"params": {"ddconfig": dd}}}}}


def _load_single_file(path: Path, task_embedding) -> UniGSModel:
    """A CompVis/LDM checkpoint (.ckpt/.safetensors, keys like model.diffusion_model.*) through
    diffusers' own single-file conversion. Its tokenizer comes from a `tokenizer/` folder
    beside the file (single files carry none, and the CLIP vocabulary cannot be downloaded).
    CLIP's head count is not in the weights: hidden // 64 (CLIP's head size; 12 for SD-1.x)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, load_single_file_checkpoint
    from tokenizers import Tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    if path.suffix not in (".ckpt", ".safetensors", ".pt", ".bin"):
        raise ModelError(f"{path}: expected a .ckpt or .safetensors checkpoint, or a diffusers folder")
    tok_dir = path.parent / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file() and not (tok_dir / "vocab.json").is_file():
        raise ModelError(f"{path} carries no tokenizer: put the model's CLIP tokenizer (tokenizer.json, or vocab.json "
                         f"+ merges.txt) in {tok_dir}/")
    try:
        ckpt = load_single_file_checkpoint(str(path), local_files_only=True)
    except Exception as e:  # torch/safetensors raise assorted errors on corrupt files
        raise ModelError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    original = ldm_original_config(ckpt)
    text_sd = convert_ldm_clip_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the conversion consumes the dict it is given: each gets a copy
        unet = UNet2DConditionModel.from_single_file(dict(ckpt), original_config=original,
                                                     local_files_only=True).float()
        vae = AutoencoderKL.from_single_file(dict(ckpt), original_config=original, local_files_only=True).float()
    # SD-1.x files say text_model.*; transformers >= 5 names the same weights without the prefix
    text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items()}
    emb = text_sd.get("embeddings.token_embedding.weight")
    if emb is None:
        raise ModelError(f"{path} has no CLIP text encoder (cond_stage_model.transformer.*)")
    layers = 1 + max(int(k.split(".")[2]) for k in text_sd if k.startswith("encoder.layers."))
    hidden = emb.shape[1]
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=emb.shape[0], hidden_size=hidden, num_hidden_layers=layers,
        intermediate_size=text_sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=max(1, hidden // 64), hidden_act="quick_gelu",
        max_position_embeddings=text_sd["embeddings.position_embedding.weight"].shape[0]))
    own = set(text.state_dict())
    if any(k.startswith("text_model.") for k in own):
        text_sd = {"text_model." + k: v for k, v in text_sd.items()}
    missing, unexpected = text.load_state_dict(text_sd, strict=False)
    if [m for m in missing if "position_ids" not in m] or unexpected:
        raise ModelError(f"{path}: the text encoder weights do not fit a CLIP text model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json")) if (tok_dir / "tokenizer.json").is_file() \
        else _tokenizer_from_vocab(tok_dir)
    was = (unet.config.in_channels, unet.config.out_channels)
    unet = expand_unet(unet, task_embedding=bool(task_embedding))
    source = {"kind": "single-file", "path": str(path.resolve()), "unet_channels_in_out": list(was),
              "sha256": _hash_files([path])}
    return UniGSModel(unet, vae, text.eval(), tok, dict(SD15_SCHEDULER), source).eval()


def save(model: UniGSModel, folder: str | Path, *, half: bool = False) -> Path:
    """Write a diffusers-format UniGS folder (what `unigs-export --weights` takes).

    half=True stores fp16 weights (the shipped demo model: half the size; loading upcasts)."""
    folder = Path(folder)
    for name, module in (("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoder),
                         (TINY_VAE, model.tiny_vae)):
        if module is not None:
            (copy.deepcopy(module).half() if half else module).save_pretrained(folder / name)
    if model.reranker is not None:
        from . import reranker

        reranker.save(model.reranker, folder / reranker.FOLDER)
    save_tokenizer_folder(model.tokenizer, folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.scheduler_config, indent=2))
    if model.task_defaults:
        (folder / TASK_DEFAULTS).write_text(json.dumps(model.task_defaults, indent=1))
    return folder


def demo_weights_dir() -> Path:
    import unigs_deploy

    return Path(unigs_deploy.__file__).parent / "weights" / "demo"


def load_demo() -> UniGSModel:
    """The small UniGS the project trains on its shapes world and ships in the package."""
    folder = demo_weights_dir()
    if not (folder / "unet").is_dir():
        raise ModelError(f"the demo model is not in this installation ({folder} is missing): "
                         "train it with `make demo-model`, or pass --weights / --scale")
    return load(folder)
