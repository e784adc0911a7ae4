"""Voice heads of the shipped architecture with untrained weights, saved for tests that need a head file."""

from __future__ import annotations

import torch

from multimodal_ser import heads, voice
from multimodal_ser.training.audio import HeadRecipe, head_config


def saved_voice_head(path, reference: str = "none"):
    """A voice head (seeded random weights) saved at ``path`` with ``reference`` in its config."""
    config = head_config(HeadRecipe(reference=reference), data="none (a test's untrained head)", speakers=[], seed=0)
    torch.manual_seed(0)
    head = voice.VoiceHead(**config["architecture"])
    return heads.save_head(path, head.state_dict(), config)
