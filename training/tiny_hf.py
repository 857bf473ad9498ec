"""Tiny Hugging Face CLIP folders with a word-level tokenizer, for training and export tests.

The same construction serves the shipped default model (trained) and the export tests (random).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"]


def word_tokenizer(words: list[str]) -> Tokenizer:
    """Lowercasing word-level tokenizer that wraps each text in start/end-of-text tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in sorted({w.lower() for w in words}):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[
            ("<|startoftext|>", vocab["<|startoftext|>"]),
            ("<|endoftext|>", vocab["<|endoftext|>"]),
        ],
    )
    return tok


def clip_config(
    vocab_size: int, context: int, image_size: int, patch: int, width: int, layers: int, dim: int
) -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": max(1, width // 32),
            "max_position_embeddings": context,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": patch,
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_hidden_layers": layers,
            "num_attention_heads": max(1, width // 32),
            "num_channels": 3,
        },
        projection_dim=dim,
    )


def save_hf_folder(model: Any, tok: Tokenizer, folder: Path, image_size: int, context: int) -> None:
    """Model + fast tokenizer + CLIP image processor, as `from_pretrained` expects them."""
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=context,
    )
    fast.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(folder)
