"""CLIP tokenisation from an engine folder's `tokenizer.json` (the `tokenizers` library, no torch).

Same ids as transformers' `CLIPTokenizer(Fast)` on the same files: start token, BPE ids, end
token, padded with the pad token (SD-1.5 pads with the end token) and truncated to 77.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


class CLIPTokenizer:
    """Tokenise prompts into (batch, max_length) int32 ids for the exported text encoder."""

    def __init__(self, path: str | Path, *, max_length: int = MAX_LENGTH, pad_token: str | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} is missing: export the model again (it writes tokenizer.json)")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a tokenizers JSON file ({e})") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_length = max_length
        self.bos_id = self._id(BOS)
        self.eos_id = self._id(EOS)
        self.pad_id = self._id(pad_token) if pad_token else self.eos_id

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"the tokenizer has no {token!r} token: not a CLIP tokenizer")
        return i

    def __call__(self, prompts: str | list[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        out = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            ids = self._tok.encode(prompt, add_special_tokens=False).ids
            if len(ids) > self.max_length - 2:
                warnings.warn(
                    f"prompt is {len(ids)} tokens, the text encoder takes {self.max_length - 2}: truncated",
                    stacklevel=2)
                ids = ids[: self.max_length - 2]
            seq = [self.bos_id, *ids, self.eos_id]
            out[row, : len(seq)] = seq
        return out


def build_clip_bpe(corpus, *, vocab_size: int | None = None):
    """A CLIP-style byte-level BPE (`</w>` word ends, lower-case) whose vocabulary holds every
    word of `corpus` whole; any other text falls back to byte pieces.

    For models the project makes itself (tiny, demo, random sd15): the real CLIP vocabulary is
    not on PyPI and a model hub is out of reach. Built deterministically (sorted words, merges
    left to right), so the same corpus always gives the same ids. Returns a `tokenizers.Tokenizer`.
    """
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    del vocab_size  # the vocabulary is the corpus' words plus the byte alphabet
    pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    words = sorted({w for text in corpus for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower())})
    merges = []
    for word in words:
        symbols = [byte_level.pre_tokenize_str(ch)[0][0] for ch in word]
        symbols[-1] += "</w>"
        left = symbols[0]
        for right in symbols[1:]:
            merged = left + right
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((left, right))
            left = merged
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=EOS, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True), byte_level])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS])
    tok.post_processor = processors.RobertaProcessing(
        (EOS, tok.token_to_id(EOS)), (BOS, tok.token_to_id(BOS)), add_prefix_space=False, trim_offsets=False)
    return tok


def shapes_corpus() -> list[str]:
    """Captions of the shapes world: every colour and kind, alone and in pairs."""
    from .shapes import COLOUR_NAMES, KINDS

    words = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {k}" for c in COLOUR_NAMES for k in KINDS]
    return words + [f"{a} and {b}" for a in words[::3] for b in words[1::5]] + ["a photo of a cat", ""]


def save_tokenizer_folder(tokenizer, folder: str | Path) -> None:
    """tokenizer.json plus vocab.json, merges.txt and tokenizer_config.json: a folder that
    transformers' `CLIPTokenizer.from_pretrained` reads too."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS, "eos_token": EOS,
        "pad_token": EOS, "unk_token": EOS, "do_lower_case": True}, indent=2))
    model = json.loads(tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
