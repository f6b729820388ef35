"""GAN losses against the course's Sigmoid + BCELoss formulation and hand-computed values, their
gradients, and the gradient penalties against torch.autograd.grad taken by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from catgan.config import LOSSES, parse_params
from catgan.errors import UserError
from catgan.model.losses import GAN_LOSSES, d_loss, g_loss, grad_norm, gradient_penalty, paired, relativistic

MODERATE = torch.tensor([-3.0, -1.2, -0.1, 0.0, 0.4, 1.7, 3.0])


def course_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    probs = torch.sigmoid(logits)
    return nn.BCELoss()(probs, torch.full_like(probs, target))


def test_d_loss_matches_course_formulation():
    real = MODERATE
    fake = MODERATE.flip(0) * 0.7
    expected = course_bce(real, 1.0) + course_bce(fake, 0.0)
    torch.testing.assert_close(d_loss(real, fake), expected)


def test_g_losses_match_course_formulation():
    torch.testing.assert_close(g_loss(MODERATE, "non_saturating"), course_bce(MODERATE, 1.0))
    # Minimising mean log(1 - D(G(z))) is minimising -BCE(D(G(z)) -> 0).
    expected = torch.log1p(-torch.sigmoid(MODERATE)).mean()
    torch.testing.assert_close(g_loss(MODERATE, "saturating"), expected)
    torch.testing.assert_close(g_loss(MODERATE, "saturating"), -course_bce(MODERATE, 0.0))


def logit_grad(kind: str, value: float) -> float:
    logit = torch.tensor([value], requires_grad=True)
    g_loss(logit, kind).backward()
    return logit.grad.item()


def test_saturating_gradient_vanishes_when_d_rejects_fakes():
    # logit -10 means D(G(z)) ~ 4.5e-5: the discriminator confidently rejects the fake.
    assert abs(logit_grad("saturating", -10.0)) < 1e-4
    assert logit_grad("non_saturating", -10.0) == pytest.approx(-1.0, abs=1e-3)


def test_losses_stay_finite_where_sigmoid_bce_clamps():
    extreme = torch.tensor([-200.0])
    # Sigmoid + BCELoss clamps log at -100 and would report 100 here.
    torch.testing.assert_close(g_loss(extreme, "non_saturating"), torch.tensor(200.0))
    assert torch.isfinite(d_loss(torch.tensor([-200.0]), torch.tensor([200.0])))
    assert logit_grad("non_saturating", -200.0) == pytest.approx(-1.0)


def test_every_g_loss_form_is_accepted_and_others_are_refused():
    for kind in ("non_saturating", "saturating"):
        assert torch.isfinite(g_loss(MODERATE, kind))
    with pytest.raises(ValueError, match="wasserstein"):
        g_loss(MODERATE, "wasserstein")


def test_each_loss_params_allow_is_a_pair_of_d_and_g_losses():
    """train.loss's name picks D's loss and G's: the course's D loss with either G form, or the
    relativistic pair, G's judging the reals again (after D's step) before the fakes."""
    assert tuple(GAN_LOSSES) == LOSSES
    judged = []

    def judge(images: torch.Tensor) -> torch.Tensor:
        judged.append(images)
        return images

    for name, (d, g, realness) in GAN_LOSSES.items():
        relative = name in ("rasgan", "ralsgan", "rpgan")
        pair = (lambda a, b, name: paired(a, b)) if name == "rpgan" else relativistic
        expected = pair(REAL, FAKE, name) if relative else d_loss(REAL, FAKE)
        torch.testing.assert_close(d(REAL, FAKE), expected)
        judged.clear()
        expected = pair(FAKE, REAL, name) if relative else g_loss(FAKE, name)
        torch.testing.assert_close(g(judge, FAKE, REAL), expected)
        assert list(map(id, judged)) == list(map(id, [REAL, FAKE] if relative else [FAKE])), name
        # ADA's signal: D's logit, or how far each real is ahead of the fakes it is compared with
        ahead = {"rpgan": [3.0, -1.0], "rasgan": [2.0, 0.0], "ralsgan": [2.0, 0.0]}
        assert realness(REAL, FAKE).tolist() == ahead.get(name, REAL.tolist()), name


REAL, FAKE = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])  # means 1 and 0


def softplus(v: float) -> float:
    """BCE(l -> 1) = softplus(-l) and BCE(l -> 0) = softplus(l)."""
    return math.log1p(math.exp(v))


def test_relativistic_average_losses_on_hand_computed_logits():
    # Against the other batch's mean: real 2 - 0, 0 - 0 = [2, 0]; fake -1 - 1, 1 - 1 = [-2, 0].
    rasgan_d = (softplus(-2) + softplus(0)) / 2 + (softplus(-2) + softplus(0)) / 2
    assert relativistic(REAL, FAKE, "rasgan").item() == pytest.approx(rasgan_d)
    # G's: fake against real's mean [-2, 0] must look real, real against fake's [2, 0] fake.
    rasgan_g = (softplus(2) + softplus(0)) / 2 + (softplus(2) + softplus(0)) / 2
    assert relativistic(FAKE, REAL, "rasgan").item() == pytest.approx(rasgan_g)
    # RaLSGAN: mean([2 - 1, 0 - 1]^2) + mean([-2 + 1, 0 + 1]^2) = 1 + 1;
    # G's: mean([-2 - 1, 0 - 1]^2) + mean([2 + 1, 0 + 1]^2) = 5 + 5.
    assert relativistic(REAL, FAKE, "ralsgan").item() == pytest.approx(2.0)
    assert relativistic(FAKE, REAL, "ralsgan").item() == pytest.approx(10.0)


def test_the_paired_loss_on_hand_computed_logits():
    # Pairs: real 2 with fake -1, real 0 with fake 1. D's: softplus(fake - real) = sp(-3), sp(1);
    # G's the same with the roles swapped: sp(3), sp(-1).
    assert paired(REAL, FAKE).item() == pytest.approx((softplus(-3) + softplus(1)) / 2)
    assert paired(FAKE, REAL).item() == pytest.approx((softplus(3) + softplus(-1)) / 2)
    real = REAL.clone().requires_grad_()
    paired(real, FAKE).backward()  # d sp(f - r) / dr = -sigmoid(f - r), averaged over 2 pairs
    assert real.grad.tolist() == pytest.approx([-1 / (1 + math.exp(3)) / 2, -1 / (1 + math.exp(-1)) / 2])


def _tiny_d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 1), nn.Flatten(0))


def test_the_gradient_penalty_is_the_batch_mean_squared_input_gradient_and_trains_d():
    D, images = _tiny_d(), torch.randn(3, 3, 5, 5)
    x = images.clone().requires_grad_()
    penalty = gradient_penalty(D(x), x)
    by_hand = [torch.autograd.grad(D(image[None]).sum(), image)[0].square().sum()
               for image in images.clone().requires_grad_().unbind()]
    assert penalty.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)
    # Zero-centred: a D that ignores its input costs nothing; and D's weights get its gradient.
    flat = nn.Sequential(nn.Flatten(), nn.Linear(75, 1, bias=True), nn.Flatten(0))
    nn.init.zeros_(flat[1].weight)
    y = images.clone().requires_grad_()
    assert gradient_penalty(flat(y), y).item() == 0
    penalty.backward()
    weight = D[3].weight.grad
    assert weight is not None and weight.abs().sum() > 0


def test_relativistic_losses_pass_gradient_through_both_batches():
    """G's relativistic loss also pulls on the fakes through the reals' term (the mean)."""
    fake = FAKE.clone().requires_grad_()
    relativistic(fake, REAL, "rasgan").backward()
    alone = FAKE.clone().requires_grad_()
    g_loss(alone - REAL.mean(), "non_saturating").backward()  # the first term alone
    assert not torch.allclose(fake.grad, alone.grad)
    for kind in ("rasgan", "ralsgan"):
        real = REAL.clone().requires_grad_()
        relativistic(real, FAKE, kind).backward()
        assert torch.isfinite(real.grad).all() and real.grad.abs().sum() > 0


def test_every_relativistic_loss_params_allow_is_known_and_others_are_refused():
    for kind in ("rasgan", "ralsgan"):
        assert torch.isfinite(relativistic(MODERATE, MODERATE.flip(0), kind))
    with pytest.raises(ValueError, match="'wgan'"):
        relativistic(REAL, FAKE, "wgan")


@pytest.mark.parametrize("raw, message", [
    ({"loss": "wgan"}, "train.loss = 'wgan' is not allowed; expected one of non_saturating, "
                       "saturating, rasgan, ralsgan, rpgan"),
    ({"r1": -1}, "train.r1 = -1.0 is not allowed; expected a value >= 0.0"),
    ({"r2": "big"}, "train.r2 = 'big' is not allowed; expected a number"),
    ({"r1": 1, "compile": True}, "train.r1 and train.r2 differentiate D's gradient"),
    ({"loss": "standard"}, "train.loss = 'standard' is not allowed"),
    # An old params file: train.g_loss is gone, and the error says what replaced it.
    ({"g_loss": "saturating", "loss": "standard"},
     "params.yaml: key 'train.g_loss' is gone: G's loss is set by train.loss now"),
])
def test_a_loss_that_does_not_exist_or_is_gone_is_refused_on_load(raw, message):
    with pytest.raises(UserError) as err:
        parse_params({"train": raw})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "g_loss" not in raw or "train.loss: standard with train.g_loss: X is train.loss: X" \
        in str(err.value)


def test_grad_norm_is_total_l2_norm_without_touching_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    unused = nn.Parameter(torch.ones(5))  # never used, so its grad is None and must be skipped
    model(torch.randn(6, 4)).pow(2).sum().backward()
    grads_before = [p.grad.clone() for p in model.parameters()]

    norm = grad_norm([*model.parameters(), unused])

    assert isinstance(norm, torch.Tensor) and norm.dim() == 0
    expected = torch.cat([g.flatten() for g in grads_before]).pow(2).sum().sqrt()
    torch.testing.assert_close(norm, expected)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads_before))


def test_grad_norm_without_gradients_is_zero():
    norm = grad_norm(nn.Linear(2, 2).parameters())
    assert norm.dim() == 0 and norm.item() == 0.0
