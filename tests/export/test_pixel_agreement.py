"""Pixel agreement, the one measure the ONNX parity check and the int8 verification share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcnseg.export.agreement import PixelAgreement, pixel_agreement


def test_pixel_agreement_of_a_hand_counted_case():
    reference = torch.tensor([[0, 1, 2], [2, 2, 1]], dtype=torch.uint8)
    mask = np.array([[0, 1, 1], [2, 0, 1]])  # int64 arg-max of a runtime's logits: 4 of 6 pixels agree
    assert pixel_agreement(mask, reference) == 4 / 6
    assert pixel_agreement(reference, reference) == 1.0


def test_agreement_is_pooled_over_pixels_and_the_worst_mask_is_kept():
    agreement = PixelAgreement()
    assert agreement.add(torch.zeros(2, 2), torch.tensor([[0, 0], [0, 1]])) == 3 / 4
    assert agreement.add(torch.zeros(4, 4), torch.zeros(4, 4)) == 1.0
    # pooled over pixels (3 + 16 of 4 + 16), not the mean of the masks' shares (0.875)
    assert agreement.pooled == 19 / 20 and agreement.worst == 3 / 4 and agreement.shares == [3 / 4, 1.0]


def test_masks_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        pixel_agreement(torch.zeros(2, 3), torch.zeros(3, 2))
