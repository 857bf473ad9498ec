"""The default model's training script (needs the export extra: torch, open_clip)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import train_default as td

pytestmark = pytest.mark.export


def test_short_text_path_is_open_clips_77_token_tower() -> None:
    """Training runs the text tower on the caption's length only: the same function as
    open_clip's own `encode_text` on 77 tokens, for captions of every length."""
    model = td.create_model(seed=1).eval()
    captions = ["seven", "a blue square left of a green triangle", "flag: Germany", "🙂 x"]
    short = td.Captions()(captions)
    full = torch.zeros(len(captions), 77, dtype=torch.long)
    full[:, : short.shape[1]] = short
    with torch.no_grad():
        assert torch.allclose(
            td.encode_text_short(model, short), model.encode_text(full), atol=1e-5
        )
    assert short.shape[1] < 77 and int(short[0].argmax()) == 2  # start, "seven", end of text


@pytest.mark.slow
def test_training_is_deterministic(training_data: Path) -> None:
    sources = td.Sources()
    weights = []
    for _ in range(2):
        model = td.create_model(seed=0)
        td.train(model, steps=3, seed=0, sources=sources, log_every=3)
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    first = td.create_model(seed=0).state_dict()
    assert not torch.equal(first["visual.conv1.weight"], weights[0]["visual.conv1.weight"])
