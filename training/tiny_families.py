"""Tiny random-weight checkpoints laid out as each source family really ships them, built offline
for the export tests and `benchmarks/family_parity.py`:

- SigLIP (`SiglipModel` + `SiglipProcessor`): `spiece.model` and no tokenizer.json, the
  SentencePiece model trained here on text that ships with Python;
- SigLIP 2 FixRes (`SiglipModel` + a Gemma BPE tokenizer.json, left padding by default);
- open_clip SigLIP configs naming a Hugging Face tokenizer (`hf_tokenizer_name`), with a local
  tokenizer folder (T5 layout, converted by transformers) standing in for the hub;
- open_clip ViT and a MobileCLIP-S1-style FastViT-MCi tower (`fastvit_mci_tiny`, registered
  with timm here: MCi1's blocks, stages of one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPM_SPECIALS = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}  # T5 / SigLIP layout
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
# an open_clip config names this hub tokenizer; tests pass a local folder instead (offline)
ABSENT_HUB_TOKENIZER = "clipserve-tests/absent-siglip-tokenizer"


def corpus() -> list[str]:
    """English sentences from the docstrings of Python's standard library (always offline)."""
    import argparse
    import collections
    import email
    import http.client
    import json as json_module
    import logging
    import os
    import re
    import textwrap
    import unittest

    lines = []
    for module in (argparse, collections, email, http.client, json_module, logging, os, re):
        for name in sorted(dir(module)):
            doc = getattr(getattr(module, name), "__doc__", None)
            if isinstance(doc, str):
                lines += [line.strip() for line in doc.splitlines() if len(line.strip()) > 20]
    lines += [line.strip() for line in (textwrap.__doc__ or "", unittest.__doc__ or "")]
    return [line for line in lines if line]


def sentencepiece_model(path: Path, vocab_size: int = 700) -> Path:
    """A Unigram SentencePiece model with T5's special ids and nmt_nfkc normalisation. The seed
    pieces (substrings of words) are counted here: sentencepiece 0.2.2 spends half a minute
    extracting them from even a small corpus, this takes half a second."""
    import collections

    import sentencepiece as spm

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [line.lower() for line in corpus()]
    seeds: collections.Counter[str] = collections.Counter()
    for word in (f"\u2581{w}" for line in lines for w in line.split()):
        for start in range(len(word)):
            for end in range(start + 2, min(len(word), start + 8) + 1):
                seeds[word[start:end]] += 1
    text, seed_file = path.with_suffix(".txt"), path.with_suffix(".seeds")
    text.write_text("\n".join(lines))
    seed_file.write_text("".join(f"{p}\t{n}\n" for p, n in seeds.most_common(20_000) if n > 1))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(path.with_suffix("")),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=0.9995,
        seed_sentencepieces_file=str(seed_file),
        num_threads=1,
        minloglevel=2,
        **SPM_SPECIALS,
    )
    for scratch in (text, seed_file, path.with_suffix(".vocab")):
        scratch.unlink()
    return path


def gemma_tokenizer(vocab_size: int = 600) -> Any:
    """A Gemma-style BPE tokenizer (transformers' GemmaTokenizer: byte fallback, "▁" for spaces,
    padding on the left by default) with SigLIP 2's settings: no BOS, EOS appended."""
    from tokenizers import Tokenizer, models, normalizers, trainers
    from transformers import GemmaTokenizer

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=GEMMA_SPECIALS,
        initial_alphabet=[f"<0x{b:02X}>" for b in range(256)],
        show_progress=False,
    )
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "\u2581")
    bpe.train_from_iterator([line.lower() for line in corpus()], trainer)
    model = json.loads(bpe.to_str())["model"]
    return GemmaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        add_bos_token=False,
        add_eos_token=True,
    )


def siglip_folder(folder: Path, tokenizer: str = "spm", context: int = 16) -> Path:
    """A SiglipModel folder as the hub ships it; tokenizer "spm" (SigLIP: spiece.model only) or
    "gemma" (SigLIP 2 FixRes: tokenizer.json, bilinear image processor)."""
    import numpy as np
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer == "spm":
        spm_file = sentencepiece_model(folder / "build" / "spiece.model")
        tok: Any = SiglipTokenizer(str(spm_file), model_max_length=context)
        resample = 3  # SigLIP: bicubic
        special = {"pad_token_id": 1, "bos_token_id": None, "eos_token_id": 1}
    else:
        tok = gemma_tokenizer()
        tok.model_max_length = context
        resample = 2  # SigLIP 2: bilinear
        special = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}
    text = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": context,
        **special,
    }
    vision = {
        "image_size": 48,
        "patch_size": 8,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(10.0))
        model.logit_bias.fill_(-3.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 48, "width": 48}, resample=resample).save_pretrained(
        folder
    )
    return folder


def t5_tokenizer_folder(folder: Path, spm_file: Path, context: int) -> Path:
    """The layout of an open_clip SigLIP hub tokenizer (a T5 fast tokenizer.json, EOS-padded),
    converted from `spm_file` by transformers itself."""
    import shutil

    from transformers import AutoTokenizer

    source = folder.parent / f"{folder.name}-spm"
    source.mkdir(parents=True, exist_ok=True)
    shutil.copy(spm_file, source / "spiece.model")
    config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": 0,
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": context,
    }
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    shutil.rmtree(source)
    return folder


_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
OPEN_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-openclip-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": _TEXT,
    },
    # MobileCLIP-S1's wiring (FastViT-MCi image tower, no causal mask in the text tower)
    "tiny-mobileclip-s1": {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "fastvit_mci_tiny",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": None,
            "image_size": 64,
        },
        "text_cfg": {**_TEXT, "no_causal_mask": True},
        "custom_text": True,
    },
    # ViT-B-16-SigLIP's wiring: a Hugging Face tokenizer, canonicalised text, last-token pooling
    "tiny-openclip-siglip": {
        "embed_dim": 32,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 700,
            "hf_tokenizer_name": ABSENT_HUB_TOKENIZER,
            "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": 64,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": True,
            "proj_bias": True,
            "pool_type": "last",
        },
    },
}


def register_fastvit_mci_tiny() -> None:
    """MCi1's block types (RepMixer stages, an attention stage, SE downsamples, conditional
    positional encoding) at one block per stage and small widths."""
    from functools import partial

    from timm.models import fastvit, register_model

    if "fastvit_mci_tiny" in fastvit.__dict__:
        return

    def fastvit_mci_tiny(pretrained: bool = False, **kwargs: Any) -> Any:
        args = dict(
            layers=(1, 1, 1, 1),
            embed_dims=(16, 32, 64, 128),
            mlp_ratios=(3, 3, 3, 3),
            se_downsamples=(False, False, True, True),
            pos_embs=(
                None,
                None,
                None,
                partial(fastvit.RepConditionalPosEnc, spatial_shape=(7, 7)),
            ),
            token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
            lkc_use_act=True,
        )
        return fastvit._create_fastvit("fastvit_mci1", pretrained=False, **dict(args, **kwargs))

    fastvit.fastvit_mci_tiny = fastvit_mci_tiny
    register_model(fastvit_mci_tiny)


def add_open_clip_configs(folder: Path) -> None:
    """Make the tiny configs known to open_clip (and the tiny FastViT to timm)."""
    import open_clip

    register_fastvit_mci_tiny()
    folder.mkdir(parents=True, exist_ok=True)
    for name, cfg in OPEN_CLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
