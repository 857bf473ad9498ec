"""Side by side with peers on the same weights: a small random CLIP saved in Hugging Face format
(so every peer can load it), exported for clipserve, then the same load against each server.

    python benchmarks/peers.py build /tmp/peer-clip      # HF folder + clipserve export
    # start clipserve on /tmp/peer-clip-repo and the peer on /tmp/peer-clip, then for each:
    clipserve bench --url URL --model MODEL --encoding float --path /embeddings ...

The model: CLIPConfig with a 224 px / patch 32 image tower and a 77-token text tower, width 256,
4 layers each, OpenAI CLIP's BPE vocabulary (from open_clip), random weights.
"""

from __future__ import annotations

import sys
from pathlib import Path


def build(folder: Path) -> None:
    import open_clip
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    from service.export import export_model
    from service.export.clip_bpe import clip_bpe_tokenizer

    simple = open_clip.get_tokenizer("ViT-B-32")
    tok = CLIPTokenizerFast(
        tokenizer_object=clip_bpe_tokenizer(simple),
        bos_token="<start_of_text>",
        eos_token="<end_of_text>",
        unk_token="<end_of_text>",
        pad_token="<end_of_text>",
        model_max_length=77,
    )
    layers = {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    }
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={**layers, "image_size": 224, "patch_size": 32},
        projection_dim=256,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(folder)
    export_model(f"hf:{folder}", folder.parent / f"{folder.name}-repo" / folder.name)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "build":
        raise SystemExit(__doc__)
    build(Path(sys.argv[2]))
