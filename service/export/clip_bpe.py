"""OpenCLIP's BPE tokenizer as a `tokenizers` tokenizer.json, built from open_clip's own vocabulary.

Same construction as Hugging Face's CLIP converter: NFC + whitespace collapse + lowercase, CLIP's
split pattern, byte-level symbols, `</w>` word ends, start/end-of-text around every text.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

_PATTERN = (
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


def clip_bpe_tokenizer(simple_tokenizer: Any) -> Tokenizer:
    """From an `open_clip.tokenizer.SimpleTokenizer` (its encoder and BPE merge ranks)."""
    vocab = dict(simple_tokenizer.encoder)
    merges = [pair for pair, _ in sorted(simple_tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    sot, eot = simple_tokenizer.sot_token_id, simple_tokenizer.eot_token_id
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>",
        special_tokens=[("<start_of_text>", sot), ("<end_of_text>", eot)],
    )
    tok.add_special_tokens(["<start_of_text>", "<end_of_text>"])
    return tok
