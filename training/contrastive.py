"""CLIP's training objective and optimiser step, shared by the training scripts (mini-clip and
mnist-clip train the same way: only their data and towers differ)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, keys: Sequence[Hashable]
) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: pairs whose keys match (captions of the same digit,
    emoji or scene) are all positives, not false negatives."""
    logits = scale * img @ txt.T
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([index[k] for k in keys])
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return (
        torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
        + torch.sum(-targets * F.log_softmax(logits.T, 1), 1).mean()
    ) / 2


def optimizer_step(model: Any, opt: Any, sched: Any, loss: torch.Tensor) -> float:
    """One step of the optimiser and its schedule; the logit scale stays within CLIP's bound
    (at most 100). Returns the loss."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, np.log(100))
    return float(loss.detach())
