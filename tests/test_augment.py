"""DiffAugment: each change against hand-made expectations, seeded, differentiable, in layout."""
from __future__ import annotations

import pytest
import torch

from catgan import config
from catgan.model.augment import (
    POLICIES,
    augment,
    brightness,
    contrast,
    cutout,
    saturation,
    translate,
)

ALL = "color,translation,cutout"


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_every_policy_params_allow_has_a_function_and_no_other():
    assert sorted(POLICIES) == sorted(config.AUGMENTS) == ["color", "cutout", "translation"]


def test_translate_moves_each_image_by_its_own_shift_with_zeros_behind():
    x = images(3, 8)
    out = translate(x, torch.tensor([2, -3, 0]), torch.tensor([-1, 0, 4]))
    expected = torch.zeros_like(x)
    expected[0, :, 2:, :7] = x[0, :, :6, 1:]  # 2 rows down, 1 column left
    expected[1, :, :5, :] = x[1, :, 3:, :]  # 3 rows up
    expected[2, :, :, 4:] = x[2, :, :, :4]  # 4 columns right
    assert torch.equal(out, expected)


def test_cutout_zeros_each_images_square_clipped_at_the_edges():
    x = images(2, 8)
    out = cutout(x, torch.tensor([1, -2]), torch.tensor([5, 3]), size=4)
    expected = x.clone()
    expected[0, :, 1:5, 5:8] = 0  # 4 x 4 from (1, 5): its last column is past the edge
    expected[1, :, 0:2, 3:7] = 0  # from (-2, 3): its first two rows are above the image
    assert torch.equal(out, expected)


def test_colour_changes_follow_the_papers_formulas():
    x = images(2, 4)
    shift, factor = torch.tensor([0.25, -0.5]), torch.tensor([0.0, 1.5])
    torch.testing.assert_close(brightness(x, shift), x + shift.view(2, 1, 1, 1))
    grey = x.mean(dim=1, keepdim=True)
    sat = saturation(x, factor)
    torch.testing.assert_close(sat[0], grey[0].expand(3, 4, 4))  # factor 0: no colour left
    torch.testing.assert_close(sat[1], grey[1] + 1.5 * (x[1] - grey[1]))
    con = contrast(x, factor)
    torch.testing.assert_close(con[0], x[0].mean().expand(3, 4, 4))
    torch.testing.assert_close(con[1], x[1].mean() + 1.5 * (x[1] - x[1].mean()))


def test_same_seed_same_changes_other_seed_other_changes():
    x = images()
    first = augment(x, ALL, torch.Generator().manual_seed(7))
    again = augment(x, ALL, torch.Generator().manual_seed(7))
    other = augment(x, ALL, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, x)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_each_policy_changes_every_image_differently(policy):
    x = images(8, 16).mul(0.5)  # away from 0, so that a cut-out or shifted-in zero shows
    out = augment(x, policy, torch.Generator().manual_seed(0))
    changes = {tuple((out[i] - x[i]).flatten()[:64].tolist()) for i in range(8)}
    assert len(changes) > 1 and not torch.equal(out, x)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_gradients_flow_through_every_policy(policy):
    """gradcheck compares autograd's Jacobian with finite differences, the random draws repeated
    exactly by re-seeding for every evaluation."""
    x = images(2, 8).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: augment(t, policy, torch.Generator().manual_seed(3)),
                                    (x,))
    augment(x, policy, torch.Generator().manual_seed(3)).sum().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_memory_layout_and_dtype_are_kept(layout):
    x = images(4, 16).contiguous(memory_format=layout)
    out = augment(x, ALL, torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=layout) and out.dtype == x.dtype
    assert out.shape == x.shape


def test_an_unknown_policy_is_refused_naming_it():
    with pytest.raises(ValueError, match="'zoom'"):
        augment(images(), "color,zoom", torch.Generator())
