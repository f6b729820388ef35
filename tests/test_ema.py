"""The average of G's weights: its update against hand arithmetic, its ramp, buffers and state."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from catgan.model.ema import GeneratorEMA, ramped


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def set_all(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in [*model.parameters(), model[1].running_mean, model[1].running_var]:
            t.fill_(value)


def test_the_decay_ramps_up_with_the_update_count_to_its_cap():
    assert ramped(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ramped(0.999, 10) == pytest.approx(11 / 20)
    assert ramped(0.999, 219) == pytest.approx(220 / 229)  # a 3-epoch CPU run's last step
    assert ramped(0.9, 1000) == 0.9  # capped once (1 + n) / (10 + n) passes it
    assert ramped(0.0, 5) == 0.0


def test_each_update_moves_the_average_by_one_minus_the_ramped_decay():
    model = net()
    set_all(model, 0.0)
    ema = GeneratorEMA(model, decay=0.9)
    set_all(model, 1.0)
    ema.update_parameters(model)  # 0 + (1 - 0.1) * (1 - 0)
    for t in [*ema.module.parameters(), ema.module[1].running_mean, ema.module[1].running_var]:
        torch.testing.assert_close(t, torch.full_like(t, 0.9))
    set_all(model, 2.0)
    ema.update_parameters(model)  # decay min(0.9, 2 / 11): 0.9 + (1 - 2/11) * (2 - 0.9)
    expected = 0.9 + (1 - 2 / 11) * 1.1
    torch.testing.assert_close(ema.module[0].weight, torch.full((2, 2), expected))
    assert int(ema.n_averaged) == 2
    ema.n_averaged.fill_(500)  # long past the ramp: the cap holds
    before = ema.module[0].bias.clone()
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module[0].bias, before + 0.1 * (2.0 - before))
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in model.parameters())  # G untouched


def test_the_average_is_a_copy_of_the_model_that_the_model_never_moves():
    model = net()
    ema = GeneratorEMA(model, decay=0.5)
    assert ema.module is not model
    with torch.no_grad():
        model[0].weight.add_(1)
    assert not torch.equal(ema.module[0].weight, model[0].weight)  # until the next update


def test_the_update_count_stays_on_the_cpu_and_in_the_state_dict():
    model = net()
    ema = GeneratorEMA(model, decay=0.99)
    for _ in range(3):
        ema.update_parameters(model)
    state = ema.state_dict()
    assert state["n_averaged"].device.type == "cpu" and int(state["n_averaged"]) == 3
    other = GeneratorEMA(net(), decay=0.99)
    other.load_state_dict(state)
    assert int(other.n_averaged) == 3
    assert torch.equal(other.module[0].weight, ema.module[0].weight)
