"""Text -> token ids for the text tower, with the `tokenizers` library on `tokenizer.json`.

The cleaning and truncation rules come from the manifest so that one code path reproduces
OpenCLIP (ftfy + HTML unescape + lowercase, EOT kept as the last token) and Hugging Face
tokenizers (whose own normalizer and post-processor live inside tokenizer.json).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from service.manifest import TextPreprocess

_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str, mode: str) -> str:
    if mode == "clip":
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
    if mode in ("clip", "whitespace"):
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
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask
