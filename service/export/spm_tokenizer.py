"""A SentencePiece model (`spiece.model`) as a `tokenizers` tokenizer.json, for checkpoints that
ship only the slow tokenizer (SigLIP's `SiglipTokenizer`; transformers 5 has no converter for it).

The tokenizer.json reproduces `SentencePieceProcessor.encode` on text that has already been
canonicalised (SigLIP's lower-casing and punctuation stripping run in Python, `texts.clean_text`,
because Python's `str.lower` and `\\s` differ from the Rust normalisers on final sigma, newer
Unicode letters and the ASCII separators U+001C-001F), then appends the end-of-sequence token:
- the model's precompiled normaliser (NFKC-like) and its whitespace rules (strip, collapse runs
  of spaces, a leading "▁"),
- the Unigram pieces with their scores; control pieces (`<pad>`, `</s>`) get a score so low that
  text never turns into them, as SentencePiece never matches control symbols in text,
- `$A </s>` as SiglipTokenizer builds its inputs.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from service.export.errors import ExportError

# SentencePiece piece types (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_NEVER = -1e9  # score of a piece text must never be segmented into


def _proto(model_file: Path) -> object:
    try:
        from sentencepiece import SentencePieceProcessor, sentencepiece_model_pb2
    except Exception as exc:  # not installed, or generated for another protobuf runtime
        raise ExportError(
            "this checkpoint ships a SentencePiece tokenizer (spiece.model) and sentencepiece "
            f"cannot be used ({type(exc).__name__}: {exc}); pip install 'clipserve[export]'"
        ) from None
    processor = SentencePieceProcessor()
    try:
        processor.Load(str(model_file))
    except (OSError, RuntimeError) as exc:
        raise ExportError(f"{model_file}: not a SentencePiece model ({exc})") from exc
    generated = sentencepiece_model_pb2.ModelProto  # type: ignore[attr-defined]
    return generated.FromString(processor.serialized_model_proto())


def sentencepiece_tokenizer(model_file: Path, eos_token: str | None) -> Tokenizer:
    """From a Unigram `spiece.model`; `eos_token` (a piece of the model) ends every text."""
    proto: object = _proto(model_file)
    trainer, spec = proto.trainer_spec, proto.normalizer_spec  # type: ignore[attr-defined]
    if trainer.model_type != 1:  # UNIGRAM; BPE models ship a tokenizer.json in practice
        raise ExportError(f"{model_file}: only Unigram SentencePiece models can be converted")
    pieces = proto.pieces  # type: ignore[attr-defined]
    vocab = [(p.piece, _NEVER if p.type in (_CONTROL, _UNUSED) else float(p.score)) for p in pieces]
    tok = Tokenizer(
        models.Unigram(vocab, unk_id=int(trainer.unk_id), byte_fallback=bool(trainer.byte_fallback))
    )
    steps: list[normalizers.Normalizer] = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # spaces only: SentencePiece leaves other whitespace alone
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    user_defined = [p.piece for p in pieces if p.type == _USER_DEFINED]
    if user_defined:
        raise ExportError(f"{model_file}: user-defined pieces are not supported")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁",
        prepend_scheme="always" if spec.add_dummy_prefix else "never",
        split=bool(trainer.split_by_whitespace),
    )
    tok.decoder = decoders.Metaspace(
        replacement="▁", prepend_scheme="always" if spec.add_dummy_prefix else "never"
    )
    if eos_token is not None:
        eos = next((i for i, p in enumerate(pieces) if p.piece == eos_token), None)
        if eos is None:
            raise ExportError(f"{model_file}: end-of-sequence token {eos_token!r} is not a piece")
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos_token}", special_tokens=[(eos_token, eos)]
        )
    return tok
