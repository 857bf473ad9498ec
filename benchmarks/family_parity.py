"""Export a tiny random-weight checkpoint of every supported family, as it ships, at each
precision, and print the parity figures as the README's family table (markdown).

python benchmarks/family_parity.py [--out DIR]

Random weights make the figures a check of the pipeline (preprocessing, tokenizer, graph,
precision), not of a trained model's sensitivity; the deviations column shows what the report
lists by name, with the worst cosine of each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import torch

from service.export import ExportError, export_model
from training.tiny_families import (
    add_open_clip_configs,
    sentencepiece_model,
    siglip_folder,
    t5_tokenizer_folder,
)
from training.tiny_hf import clip_config, save_hf_folder, word_tokenizer


def _clip_folder(folder: Path) -> Path:
    from transformers import CLIPModel

    tok = word_tokenizer(["a", "photo", "of", "the", "cat", "dog", "number", "seven"])
    torch.manual_seed(0)
    model = CLIPModel(clip_config(tok.get_vocab_size(), 16, 48, 8, 64, 2, 32)).eval()
    save_hf_folder(model, tok, folder, 48, 16)
    return folder


def _row(family: str, source: str, precision: str, parity: dict[str, Any]) -> str:
    deviations = ", ".join(f"{d['name']} {d['min_cosine']:.3f}" for d in parity["deviations"])
    u8 = parity.get("image_uint8") or {}
    return (
        f"| {family} | `{source}` | {precision} | {parity['image']['min_cosine']:.6f} | "
        f"{u8.get('min_cosine', float('nan')):.6f} | {parity['text']['min_cosine']:.6f} | "
        f"{'yes' if parity['token_ids_equal'] else 'NO'} | "
        f"{parity['pixel_p99_abs_diff']:.4f} | {'PASS' if parity['passed'] else 'FAIL'} | "
        f"{deviations} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="keep the exports here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="family-parity-"))
    add_open_clip_configs(root / "open_clip_configs")
    spm = sentencepiece_model(root / "spm" / "spiece.model")
    tokenizer_dir = t5_tokenizer_folder(root / "siglip-tokenizer", spm, context=16)
    clip = _clip_folder(root / "clip-hf")
    siglip = siglip_folder(root / "siglip-hf", "spm")
    siglip2 = siglip_folder(root / "siglip2-hf", "gemma")
    runs: list[tuple[str, str, dict[str, Any]]] = [
        ("HF CLIP (tokenizer.json)", f"hf:{clip}", {}),
        ("HF SigLIP (spiece.model only)", f"hf:{siglip}", {}),
        ("HF SigLIP, mask call", f"hf:{siglip}", {"text_attention_mask": True}),
        ("HF SigLIP 2 FixRes (Gemma, left padding)", f"hf:{siglip2}", {}),
        ("open_clip ViT (BPE)", "open_clip:tiny-openclip-vit", {}),
        ("open_clip MobileCLIP-S1 (FastViT-MCi)", "open_clip:tiny-mobileclip-s1", {}),
        (
            "open_clip SigLIP (HF tokenizer, local folder)",
            "open_clip:tiny-openclip-siglip",
            {"tokenizer_dir": tokenizer_dir},
        ),
    ]
    print(
        "| family | test source | precision | image min cos | uint8 variant | text min cos "
        "| token ids equal | pixel p99 | report | deviations (min cos) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family, source, options in runs:
        for fp16 in (False, True):
            if fp16 and options.get("text_attention_mask"):
                continue
            name = f"{source.split(':')[-1].split('/')[-1]}-{len(options)}-{int(fp16)}"
            torch.manual_seed(0)
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the report, as a row below
                    manifest = export_model(source, root / "models" / name, fp16=fp16, **options)
            except ExportError as exc:
                print(f"| {family} | `{source}` | {'fp16' if fp16 else 'fp32'} | {exc} |")
                continue
            shown = source if source.startswith("open_clip") else "hf:<folder>"
            print(_row(family, shown, "fp16" if fp16 else "fp32", manifest.parity), flush=True)


if __name__ == "__main__":
    main()
