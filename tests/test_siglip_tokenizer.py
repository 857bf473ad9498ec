"""SigLIP's tokenizer as checkpoints ship it (spiece.model, no tokenizer.json): our tokenizer.json
built from the SentencePiece model, run by the serving tokenizer, against transformers'
SiglipTokenizer on a fuzzed corpus of what users type."""

from __future__ import annotations

import random
import string
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from service.export.hf import tokenizer_rules
from service.texts import TextTokenizer
from training.tiny_families import corpus, sentencepiece_model

pytestmark = pytest.mark.export

CONTEXT = 16
# what users type, in units (an emoji with its modifier or joiners is one unit); units of a pool
# are glued together, pools meet at word boundaries
POOLS = [
    list(string.punctuation),
    list(" \t\n\r\x0b\x0c\x1c\x1d\x85\u00a0\u2002\u3000\u2581\u200b"),  # every kind of space
    list("éàüñçßøæœÉÀÜ"),  # precomposed
    ["e\u0301", "a\u0300", "u\u0308", "n\u0303"],  # decomposed (NFD) accents
    list("ΣΑΣ σας ΟΔΟΣ"),  # final sigma: Python's str.lower, not Rust's
    list("привет мир"),
    list("日本語中文한국어"),
    ["😀", "🎉", "👍🏽", "❤️", "👨\u200d👩\u200d👧", "🏳️\u200d🌈"],
    list("\uff26\uff35\uff2c\uff2c\uff10\uff11"),  # full width
    list("\u00a8\u00b4\u02d8\u2460\u3300\ufb01\ufb02"),  # compatibility characters
    list("\u0130\u0131\u212a\u00b5\u1c89\ua7cb"),  # special case maps, new letters
    ["&amp;", "&lt;", "&#x27;", "<b>", "</b>"],
    list("0123456789"),
]


def _fuzzed(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = " ".join(corpus()).split()
    texts = []
    for _ in range(count):
        parts: list[str] = []
        for _ in range(rng.randint(0, 14)):
            if rng.random() < 0.5:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 4))))
        texts.append("".join(p + rng.choice(["", " ", " ", "  "]) for p in parts))
    return texts


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sentencepiece_model(tmp_path_factory.mktemp("spm") / "spiece.model")


def _ours(slow: object, folder: Path) -> TextTokenizer:
    tokenizer_json, text, _ = tokenizer_rules(slow, "tiny-siglip", CONTEXT)
    (folder / "tokenizer.json").write_text(tokenizer_json)
    return TextTokenizer(text, folder)


@pytest.mark.parametrize("legacy", [True, False])
def test_token_ids_equal_siglip_tokenizer_on_fuzzed_text(
    spm_file: Path, tmp_path: Path, legacy: bool
) -> None:
    from transformers import SiglipTokenizer

    slow = SiglipTokenizer(str(spm_file), model_max_length=CONTEXT, legacy=legacy)
    ours = _ours(slow, tmp_path)
    texts = _fuzzed(2000, seed=int(legacy))
    texts += ["", "   ", "A PHOTO OF A CAT!!!", "x" * 200, " ".join(["word"] * 40)]
    ref = slow(texts, padding="max_length", truncation=True, max_length=CONTEXT)["input_ids"]
    ids, mask = ours.encode(texts)
    differ = [
        (t, ids[i].tolist(), ref[i]) for i, t in enumerate(texts) if ids[i].tolist() != ref[i]
    ]
    assert not differ, f"{len(differ)} of {len(texts)} differ, e.g. {differ[:3]}"
    # padded with </s> (SigLIP's pad is its EOS), truncated keeping </s> last
    assert ours.spec.pad_id == slow.pad_token_id == slow.eos_token_id
    long_row = ids[texts.index("x" * 200)]
    assert mask[texts.index("x" * 200)].all() and long_row[-1] == slow.eos_token_id


def test_canonicalisation_happens_in_python(spm_file: Path, tmp_path: Path) -> None:
    """Final sigma and U+001C-001F are where Rust's lower-casing and whitespace differ from
    Python's, which SiglipTokenizer uses: the manifest's cleaning does it in Python."""
    from transformers import SiglipTokenizer

    slow = SiglipTokenizer(str(spm_file), model_max_length=CONTEXT)
    ours = _ours(slow, tmp_path)
    assert ours.spec.clean == "siglip" and ours.spec.lowercase
    texts = ["ΟΔΟΣ ΣΑΣ", "a\x1cb\x1fc", "Hello, World! (yes)", "snake_case", "a\u2581 b"]
    ref = slow(texts, padding="max_length", max_length=CONTEXT)["input_ids"]
    assert ours.encode(texts)[0].tolist() == ref


def test_known_deviations_are_the_documented_ones(spm_file: Path, tmp_path: Path) -> None:
    """Two named deviations, and only where they are said to be: a literal '</s>' in a text,
    and combining marks after a character the SentencePiece normaliser rewrites."""
    from transformers import SiglipTokenizer

    slow = SiglipTokenizer(str(spm_file), model_max_length=CONTEXT)
    ours = _ours(slow, tmp_path)
    _, _, deviations = tokenizer_rules(slow, "tiny-siglip", CONTEXT)
    assert [d.name for d in deviations] == ["special_token_text", "grapheme_normalisation"]
    for dev in deviations:
        ref = slow(list(dev.texts), padding="max_length", max_length=CONTEXT)["input_ids"]
        assert ours.encode(list(dev.texts))[0].tolist() != ref
    eos = slow.eos_token_id
    ref = slow(["a photo of </s> a cat"])["input_ids"][0]
    assert ref.count(eos) == 2 and ours.ids("a photo of </s> a cat").count(eos) == 1
    # without the ligature before the accent, the same accent tokenises the same
    plain = ["the fi\u0301ne print"]
    assert (
        ours.encode(plain)[0].tolist()
        == slow(plain, padding="max_length", max_length=16)["input_ids"]
    )
    assert unicodedata.combining("\u0301")
    assert np.array_equal(ours.encode([""])[0][0][:1], [eos])
