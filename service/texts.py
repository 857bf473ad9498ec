"""Text -> token ids for the text tower, with the `tokenizers` library on `tokenizer.json`.

The cleaning and truncation rules come from the manifest so that one code path reproduces
OpenCLIP (ftfy + HTML unescape + lowercase, EOT kept as the last token) and Hugging Face
tokenizers (whose own normalizer and post-processor live inside tokenizer.json).
"""

from __future__ import annotations

import html
import re
import string
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from service.manifest import TextPreprocess

_WHITESPACE = re.compile(r"\s+")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)  # ASCII punctuation only


def clean_text(text: str, mode: str) -> str:
    """The source tokenizer's own text cleaning, in Python (its `str.lower` and `\\s` are not
    the Rust normalisers' on final sigma, new Unicode letters and U+001C-001F)."""
    if mode in ("clip", "canonicalize"):
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    if mode == "canonicalize":  # open_clip's: "_" becomes a space, punctuation goes, lower case
        text = text.replace("_", " ").translate(_NO_PUNCTUATION).lower()
    elif mode == "siglip":  # SiglipTokenizer.tokenize: "▁" is a space, then canonicalize_text
        text = text.replace("\u2581", " ").translate(_NO_PUNCTUATION)
    if mode != "none":
        text = _WHITESPACE.sub(" ", text).strip()
    return text


class TextTokenizer:
    def __init__(self, spec: TextPreprocess, model_dir: Path) -> None:
        self.spec = spec
        self._tok = Tokenizer.from_file(str(model_dir / spec.tokenizer))
        self._tok.no_truncation()
        self._tok.no_padding()

    def normalize(self, text: str) -> str:
        text = clean_text(text, self.spec.clean)
        return text.lower() if self.spec.lowercase else text

    def ids(self, text: str) -> list[int]:
        """All token ids of one text, before truncation and padding."""
        return list(self._tok.encode(self.normalize(text)).ids)

    def piece(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id) or f"<{token_id}>"

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64 (n, context_length); over-long texts truncated
        with the end-of-text token kept last, as the text tower pools on it."""
        ctx = self.spec.context_length
        encodings = self._tok.encode_batch([self.normalize(t) for t in texts])
        ids = np.full((len(texts), ctx), self.spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), ctx), dtype=np.int64)
        for row, enc in enumerate(encodings):
            seq = enc.ids
            if len(seq) > ctx:
                keep_eot = self.spec.eot_id is not None and seq[-1] == self.spec.eot_id
                seq = [*seq[: ctx - 1], seq[-1]] if keep_eot else seq[:ctx]
            start = ctx - len(seq) if self.spec.padding_side == "left" else 0
            ids[row, start : start + len(seq)] = seq
            mask[row, start : start + len(seq)] = 1
        return ids, mask
