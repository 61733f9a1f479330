"""The exported components (the four, and the optional tiny VAE and reranker): torch wrappers, ONNX
names (optimum's), example inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unigs_deploy.modeling import UniGSModel


class UNetWrapper(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, class_labels=None):
        return self.unet(sample, timestep, encoder_hidden_states, class_labels=class_labels, return_dict=False)[0]


class VAEEncoderWrapper(torch.nn.Module):
    """Image -> latent distribution parameters (mean, log-variance): sampling stays on the host."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        h = self.vae.encoder(sample)
        return self.vae.quant_conv(h) if self.vae.quant_conv is not None else h


class VAEDecoderWrapper(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


class TinyEncoderWrapper(torch.nn.Module):
    """Image in [-1, 1] -> the UNet's latent (scaling applied): deterministic, nothing to sample."""

    def __init__(self, tiny):
        super().__init__()
        self.tiny = tiny

    def forward(self, sample):
        return self.tiny.encoder(sample) * self.tiny.config.scaling_factor


class TinyDecoderWrapper(torch.nn.Module):
    """The UNet's latent -> image in [-1, 1]."""

    def __init__(self, tiny):
        super().__init__()
        self.tiny = tiny

    def forward(self, latent_sample):
        return self.tiny.decoder(latent_sample / self.tiny.config.scaling_factor)


class TextEncoderWrapper(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


@dataclass
class Spec:
    name: str
    file: str
    module: torch.nn.Module
    inputs: dict  # name -> (dtype str, symbolic shape list)
    outputs: dict
    latent_multiple: int  # spatial sizes must be multiples of this (in the component's own units)
    extra: dict = field(default_factory=dict)  # more for the manifest's entry (what the runtime needs to call it)

    @property
    def dynamic_axes(self) -> dict:
        axes = {}
        for name, (_, shape) in {**self.inputs, **self.outputs}.items():
            axes[name] = {i: d for i, d in enumerate(shape) if isinstance(d, str)}
        return axes


def unet_spec(unet, hidden: int, file: str = "unigs.onnx") -> Spec:
    """Any diffusers UNet2DConditionModel (UniGS 13->8, SD-inpainting 9->4, ...) as a component."""
    c_in, c_out = unet.config.in_channels, unet.config.out_channels
    inputs = {
        "sample": ("float32", ["batch", c_in, "height", "width"]),
        "timestep": ("float32", ["batch"]),
        "encoder_hidden_states": ("float32", ["batch", "sequence", hidden]),
    }
    if unet.config.num_class_embeds is not None:
        inputs["class_labels"] = ("int64", ["batch"])
    return Spec("unet", file, UNetWrapper(unet), inputs,
                {"out_sample": ("float32", ["batch", c_out, "height", "width"])},
                2 ** (len(unet.config.block_out_channels) - 1))


def specs(model: UniGSModel) -> list[Spec]:
    vae, text = model.vae, model.text_encoder
    lat = vae.config.latent_channels
    hidden = text.config.hidden_size
    vae_down = 2 ** (len(vae.config.block_out_channels) - 1)
    return [
        unet_spec(model.unet, hidden),
        Spec("text_encoder", "text_encoder.onnx", TextEncoderWrapper(text),
             {"input_ids": ("int32", ["batch", "sequence"])},
             {"last_hidden_state": ("float32", ["batch", "sequence", hidden])}, 1),
        Spec("vae_encoder", "vae_encoder.onnx", VAEEncoderWrapper(vae),
             {"sample": ("float32", ["batch", 3, "height", "width"])},
             {"latent_parameters": ("float32", ["batch", 2 * lat, "latent_height", "latent_width"])}, vae_down),
        Spec("vae_decoder", "vae_decoder.onnx", VAEDecoderWrapper(vae),
             {"latent_sample": ("float32", ["batch", lat, "latent_height", "latent_width"])},
             {"sample": ("float32", ["batch", 3, "height", "width"])}, 1),
    ] + (tiny_vae_specs(model.tiny_vae) if model.tiny_vae is not None else []) \
      + ([reranker_spec(model.reranker)] if model.reranker is not None else [])


def reranker_spec(ranker) -> Spec:
    """The optional inpaint reranker: fixed-size crops -> its vocabulary's logits; the manifest
    entry carries the vocabulary and crop size the runtime needs (extra)."""
    shape = ["batch", len(ranker.config["channels"]), ranker.crop, ranker.crop]
    return Spec("reranker", "reranker.onnx", ranker, {"crop": ("float32", shape)},
                {"logits": ("float32", ["batch", sum(len(v) for v in ranker.groups.values())])}, 1,
                extra={"groups": ranker.groups, "crop": ranker.crop, "channels": ranker.config["channels"]})


def tiny_vae_specs(tiny) -> list[Spec]:
    """The optional AutoencoderTiny as two components that work in the UNet's latent space."""
    lat = tiny.config.latent_channels
    down = 2 ** (len(tiny.config.encoder_block_out_channels) - 1)
    return [
        Spec("tiny_vae_encoder", "tiny_vae_encoder.onnx", TinyEncoderWrapper(tiny),
             {"sample": ("float32", ["batch", 3, "height", "width"])},
             {"latent_sample": ("float32", ["batch", lat, "latent_height", "latent_width"])}, down),
        Spec("tiny_vae_decoder", "tiny_vae_decoder.onnx", TinyDecoderWrapper(tiny),
             {"latent_sample": ("float32", ["batch", lat, "latent_height", "latent_width"])},
             {"sample": ("float32", ["batch", 3, "height", "width"])}, 1),
    ]


def example_inputs(spec: Spec, model: UniGSModel, *, batch: int, size: int, seed: int = 0) -> dict:
    """Inputs for tracing and validation; `size` is the spatial size in the component's input units."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (_, shape) in spec.inputs.items():
        dims = []
        for d in shape:
            if d == "batch":
                dims.append(batch)
            elif d == "sequence":
                dims.append(model.text_encoder.config.max_position_embeddings)
            elif d in ("height", "latent_height"):
                dims.append(size)
            elif d in ("width", "latent_width"):
                dims.append(size + spec.latent_multiple)  # non-square on purpose
            else:
                dims.append(d)
        if name == "timestep":
            out[name] = torch.randint(1, 1000, dims, generator=g).float()
        elif name == "class_labels":
            out[name] = torch.randint(0, 4, dims, generator=g)
        elif name == "input_ids":
            vocab = model.text_encoder.config.vocab_size
            out[name] = torch.randint(0, vocab, dims, generator=g, dtype=torch.int32)
        else:
            out[name] = torch.randn(dims, generator=g)
    return out
