"""Tokenizers for the models this project makes itself (tiny, demo, random sd15): the real
CLIP vocabulary is not on PyPI and a model hub is out of reach. Training and export use these;
the runtime only reads the `tokenizer.json` they write (unigs_deploy/tokenizer.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from unigs_deploy.tokenizer import BOS, EOS, MAX_LENGTH


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
    from unigs_deploy.synthetic.shapes import COLOUR_NAMES, KINDS, caption

    words = [caption(c, k) for c in COLOUR_NAMES for k in KINDS]
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
