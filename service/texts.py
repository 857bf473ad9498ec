"""Text -> token ids for the text tower, with the `tokenizers` library on `tokenizer.json`.

The cleaning and truncation rules come from the manifest so that one code path reproduces
OpenCLIP (ftfy + HTML unescape + lowercase, EOT kept as the last token) and Hugging Face
tokenizers (whose own normalizer and post-processor live inside tokenizer.json).
"""

from __future__ import annotations

import html
import json
import re
import string
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Vocabulary:
    """What the tokenizer can represent: a word-level vocabulary (a small trained model) maps
    every other word to one unknown token, so such texts all embed alike; byte-level BPE (CLIP)
    has no unknown token."""

    kind: str  # the `tokenizers` model: WordLevel, BPE, Unigram, WordPiece
    size: int
    unknown_token: str | None
    known_words: list[str] | None  # word-level vocabularies only: every word it knows


def _vocabulary(tok: Tokenizer, path: Path) -> Vocabulary:
    model = json.loads(path.read_text())["model"]
    kind = str(model.get("type", "unknown"))
    unk = model.get("unk_token")
    if kind == "Unigram" and model.get("unk_id") is not None:
        unk = str(model["vocab"][model["unk_id"]][0])
    special = {t.content for t in tok.get_added_tokens_decoder().values()} | {unk}
    words = None
    if kind == "WordLevel":
        words = sorted(w for w in tok.get_vocab(with_added_tokens=False) if w not in special)
    return Vocabulary(kind, tok.get_vocab_size(), unk, words)


class TextTokenizer:
    def __init__(self, spec: TextPreprocess, model_dir: Path) -> None:
        self.spec = spec
        self._tok = Tokenizer.from_file(str(model_dir / spec.tokenizer))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.vocabulary = _vocabulary(self._tok, model_dir / spec.tokenizer)
        unk = self.vocabulary.unknown_token
        self._unk_id = None if unk is None else self._tok.token_to_id(unk)

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
        ids, mask, _ = self.encode_counting_unknown(texts)
        return ids, mask

    def encode_counting_unknown(
        self, texts: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`encode`, plus per text the number of tokens the vocabulary did not know (special
        tokens the tokenizer adds itself are not counted: CLIP's BPE names its end-of-text
        token as its unknown token too)."""
        ctx = self.spec.context_length
        encodings = self._tok.encode_batch([self.normalize(t) for t in texts])
        ids = np.full((len(texts), ctx), self.spec.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), ctx), dtype=np.int64)
        unknown = np.zeros(len(texts), dtype=np.int64)
        for row, enc in enumerate(encodings):
            if self._unk_id is not None:
                unknown[row] = sum(
                    i == self._unk_id and not special
                    for i, special in zip(enc.ids, enc.special_tokens_mask, strict=True)
                )
            seq = enc.ids
            if len(seq) > ctx:
                keep_eot = self.spec.eot_id is not None and seq[-1] == self.spec.eot_id
                seq = [*seq[: ctx - 1], seq[-1]] if keep_eot else seq[:ctx]
            start = ctx - len(seq) if self.spec.padding_side == "left" else 0
            ids[row, start : start + len(seq)] = seq
            mask[row, start : start + len(seq)] = 1
        return ids, mask, unknown
