"""Tokenisation on the shipped tokenizer.json: padding, truncation that keeps EOT, cleaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from service.manifest import TextPreprocess, load_manifest
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


def _tokenizer_folder(tmp_path: Path, tok: Tokenizer) -> tuple[TextPreprocess, Path]:
    tok.save(str(tmp_path / "tokenizer.json"))
    spec = TextPreprocess(kind="wordlevel", context_length=8, eot_id=3, lowercase=False)
    return spec, tmp_path


def test_word_level_vocabularies_count_unknown_words(tmp_path: Path) -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "<s>": 2, "</s>": 3, "a": 4, "seven": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tok.add_special_tokens(["[PAD]", "[UNK]", "<s>", "</s>"])
    tokenizer = TextTokenizer(*_tokenizer_folder(tmp_path, tok))
    ids, _, unknown = tokenizer.encode_counting_unknown(["a seven", "a cat", "cat dog bird", ""])
    assert unknown.tolist() == [0, 1, 3, 0]
    assert np.array_equal(ids, tokenizer.encode(["a seven", "a cat", "cat dog bird", ""])[0])
    vocabulary = tokenizer.vocabulary
    assert (vocabulary.kind, vocabulary.size, vocabulary.unknown_token) == ("WordLevel", 6, "[UNK]")
    assert vocabulary.known_words == ["a", "seven"]


def test_an_unknown_token_that_is_also_the_end_token_is_not_counted(tmp_path: Path) -> None:
    """Hugging Face's CLIP tokenizer.json names `<|endoftext|>` as its BPE unknown token too."""
    vocab = {"<pad>": 0, "<|endoftext|>": 1, "<s>": 2, "a": 3, "b": 4, "ab": 5}
    tok = Tokenizer(models.BPE(vocab, [("a", "b")], unk_token="<|endoftext|>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A <|endoftext|>", special_tokens=[("<s>", 2), ("<|endoftext|>", 1)]
    )
    tok.add_special_tokens(["<pad>", "<|endoftext|>", "<s>"])
    tokenizer = TextTokenizer(*_tokenizer_folder(tmp_path, tok))
    _, _, unknown = tokenizer.encode_counting_unknown(["ab", "abc"])
    assert unknown.tolist() == [0, 1]
    assert tokenizer.vocabulary.kind == "BPE" and tokenizer.vocabulary.known_words is None
