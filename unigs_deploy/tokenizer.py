"""CLIP tokenisation from an engine folder's `tokenizer.json` (the `tokenizers` library, no torch).

Same ids as transformers' `CLIPTokenizer(Fast)` on the same files: start token, BPE ids, end
token, padded with the pad token (SD-1.5 pads with the end token) and truncated to 77.
"""

from __future__ import annotations

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
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a tokenizers JSON file ({e})") from None
        self._setup(tok, max_length, pad_token)

    @classmethod
    def from_tokenizer(cls, tokenizer, *, max_length: int = MAX_LENGTH, pad_token: str | None = None) -> CLIPTokenizer:
        """From a `tokenizers.Tokenizer` in memory (a torch-side model's), copied, not changed."""
        self = cls.__new__(cls)
        self._setup(type(tokenizer).from_str(tokenizer.to_str()), max_length, pad_token)
        return self

    def _setup(self, tok, max_length: int, pad_token: str | None) -> None:
        self._tok = tok
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
