"""Tokenisation on the shipped tokenizer.json: padding, truncation that keeps EOT, cleaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.manifest import load_manifest
from service.texts import TextTokenizer, clean_text


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> TextTokenizer:
    spec = load_manifest(model_dir).text
    assert spec is not None
    return TextTokenizer(spec, model_dir)


def test_padded_to_context_length(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode(["one", "a photo of the number seven"])
    ctx = tokenizer.spec.context_length
    assert ids.shape == mask.shape == (2, ctx) and ids.dtype == np.int64
    assert mask[0].sum() < mask[1].sum() <= ctx
    assert (ids[0][mask[0] == 0] == tokenizer.spec.pad_id).all()
    assert tokenizer.spec.eot_id is not None
    assert ids[0][mask[0].sum() - 1] == tokenizer.spec.eot_id


def test_truncation_keeps_the_end_of_text_token(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode(["seven " * 500])
    assert mask.sum() == tokenizer.spec.context_length
    assert ids[0, -1] == tokenizer.spec.eot_id


def test_case_and_spacing_do_not_change_ids(tokenizer: TextTokenizer) -> None:
    """The shipped tokenizer.json lowercases and splits on whitespace itself."""
    a, _ = tokenizer.encode(["A photo of  the\nnumber SEVEN "])
    b, _ = tokenizer.encode(["a photo of the number seven"])
    c, _ = tokenizer.encode(["a photo of the number one"])
    assert np.array_equal(a, b) and not np.array_equal(b, c)


def test_clip_cleaning_fixes_entities_and_whitespace() -> None:
    assert clean_text("fish &amp;amp; chips\n\t ok", "clip") == "fish & chips ok"
    assert clean_text("  a   b ", "whitespace") == "a b"
    assert clean_text("  a &amp; b ", "none") == "  a &amp; b "
