"""train.augment_p: ADA's adaptive probability against hand arithmetic, and augmentation applied
to each image with that probability."""
from __future__ import annotations

import pytest
import torch

from catgan.config import parse_params
from catgan.errors import UserError
from catgan.model import ada
from catgan.model.ada import AugmentP
from catgan.model.augment import augment

CPU = torch.device("cpu")
CALLED_REAL = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])  # every real judged real: sign mean 1
CALLED_FAKE = -CALLED_REAL  # sign mean -1
AT_TARGET = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0])  # sign mean (4 - 1) / 5 = 0.6 exactly


def steps(p: AugmentP, realness: torch.Tensor, n: int) -> list[float]:
    seen = []
    for _ in range(n):
        p.observe(realness)
        seen.append(p.p.item())
    return seen


def test_p_starts_at_0_and_moves_one_notch_every_4_steps_towards_the_target():
    p = AugmentP("auto", batch_size=128, device=CPU)
    notch = 128 * 4 / 500_000  # from 0 to 1 in 500k images, 4 steps of 128 at a time
    assert p.p.item() == 0 and (ada.TARGET, ada.INTERVAL, ada.SPEED_IMAGES) == (0.6, 4, 500_000)
    # r_t = 1 > 0.6: one notch up after the 4th step and the 8th, none in between
    assert steps(p, CALLED_REAL, 8) == pytest.approx([0, 0, 0, notch, notch, notch, notch, 2 * notch])
    # r_t = (1 + 1 + 1 - 1) / 4 = 0.5 < 0.6: a notch down
    steps(p, CALLED_REAL, 3)
    assert steps(p, CALLED_FAKE, 1) == pytest.approx([notch])
    # r_t exactly at the target: p stays; then below it, down to 0 and no further
    assert steps(p, AT_TARGET, 4) == pytest.approx([notch] * 4)
    assert steps(p, CALLED_FAKE, 8)[-1] == 0 and steps(p, CALLED_FAKE, 4)[-1] == 0


def test_p_stays_within_1_a_fixed_p_never_moves_and_the_state_round_trips():
    p = AugmentP("auto", batch_size=500_000, device=CPU)  # one notch is 4: to 1 at once
    assert steps(p, CALLED_REAL, 4)[-1] == 1.0
    fixed = AugmentP(0.3, batch_size=128, device=CPU)
    assert steps(fixed, CALLED_REAL, 8) == pytest.approx([0.3] * 8)
    half = AugmentP("auto", batch_size=128, device=CPU)
    steps(half, CALLED_REAL, 6)  # one notch, and 2 steps into the next interval
    again = AugmentP("auto", batch_size=128, device=CPU)
    again.load_state_dict(half.state_dict())
    assert steps(again, CALLED_REAL, 2) == steps(half, CALLED_REAL, 2)
    assert again.p.item() == pytest.approx(2 * 128 * 4 / 500_000)


def test_each_policy_changes_each_image_with_probability_p_and_the_same_seed_repeats():
    x = torch.rand(400, 3, 16, 16) * 2 - 1
    for p, low, high in ((0.0, 0, 0), (0.25, 0.18, 0.32), (1.0, 1, 1)):
        out = augment(x, "cutout", torch.Generator().manual_seed(1), torch.tensor(p))
        changed = (out != x).flatten(1).any(dim=1).float().mean().item()
        assert low <= changed <= high, (p, changed)
        again = augment(x, "cutout", torch.Generator().manual_seed(1), torch.tensor(p))
        assert torch.equal(out, again)


def test_gradient_reaches_every_image_whether_augmented_or_not():
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    augment(x, "color,translation", torch.Generator().manual_seed(0), torch.tensor(0.5)).sum().backward()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("train, message", [
    ({"augment_p": "sometimes", "augment": "color"},
     "train.augment_p = 'sometimes' is not allowed; expected a number in [0.0, 1.0] or auto"),
    ({"augment_p": 1.5, "augment": "color"}, "train.augment_p = 1.5 is not allowed; expected a value <= 1.0"),
    ({"augment_p": "auto"}, "train.augment_p = auto needs augmentations to apply: set train.augment"),
    ({"augment_p": 0.5}, "train.augment_p = 0.5 needs augmentations to apply"),
])
def test_bad_augment_p_is_refused_in_one_line(train, message):
    with pytest.raises(UserError) as err:
        parse_params({"train": train})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_augment_p_takes_auto_numbers_and_integers():
    read = [parse_params({"train": {"augment": "color", "augment_p": v}}).train.augment_p
            for v in ("auto", 0.25, 0, 1)]
    assert read == ["auto", 0.25, 0.0, 1.0]
