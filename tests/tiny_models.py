"""Small random models shared by the tests (a tiny width keeps a forward pass in milliseconds)."""

from __future__ import annotations

import torch

import fcnseg


def random_score_model(num_classes: int = 4) -> torch.nn.Module:
    """fcn32s at width 1/16 whose score layer is random (N(0, 1)), so its masks differ by image."""
    model = fcnseg.create_model("fcn32s", num_classes=num_classes, width=0.0625)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("score"):
                param.normal_(0, 1.0) if name.endswith("weight") else param.zero_()
    return model
