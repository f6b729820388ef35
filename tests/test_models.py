"""Architecture, init and layer-table checks for catgan.model.nets."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from catgan import config
from catgan.errors import UserError
from catgan.model.nets import (
    VARIANTS,
    batch_statistics,
    build,
    format_layer_table,
    init_weights,
    layer_table,
    sample,
)

LATENT = 100


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def d_block(c_in: int, c_out: int, size: int) -> list[tuple[str, list[int], int]]:
    shape = [c_out, size, size]
    return [
        ("Conv2d", shape, conv_params(c_in, c_out, 4)),
        ("BatchNorm2d", shape, 2 * c_out),
        ("LeakyReLU", shape, 0),
    ]


def g_block(c_in: int, c_out: int, size: int) -> list[tuple[str, list[int], int]]:
    shape = [c_out, size, size]
    return [
        ("ConvTranspose2d", shape, conv_params(c_in, c_out, 4)),
        ("BatchNorm2d", shape, 2 * c_out),
        ("ReLU", shape, 0),
    ]


D_TRUNK = d_block(3, 64, 32) + d_block(64, 128, 16) + d_block(128, 256, 8)
G_TRUNK = g_block(LATENT, 512, 4) + g_block(512, 256, 8) + g_block(256, 128, 16)

EXPECTED = {
    ("baseline", "G"): G_TRUNK
    + g_block(128, 64, 32)
    + [("ConvTranspose2d", [3, 64, 64], conv_params(64, 3, 4)), ("Tanh", [3, 64, 64], 0)],
    ("baseline", "D"): D_TRUNK
    + d_block(256, 512, 4)
    + [("Conv2d", [1, 1, 1], conv_params(512, 1, 4)), ("Flatten", [1], 0)],
    ("fused", "G"): G_TRUNK
    + [("ConvTranspose2d", [3, 64, 64], conv_params(128, 3, 8)), ("Tanh", [3, 64, 64], 0)],
    ("fused", "D"): D_TRUNK + [("Conv2d", [1, 1, 1], conv_params(256, 1, 8)), ("Flatten", [1], 0)],
}

INPUT_SHAPES = {"G": (LATENT, 1, 1), "D": (3, 64, 64)}


def networks(variant: str, init: str = "default") -> dict[str, nn.Module]:
    generator, discriminator = build(variant, LATENT, init)
    return {"G": generator, "D": discriminator}


def test_every_variant_params_allow_has_a_builder_and_no_other():
    assert sorted(VARIANTS) == sorted(config.VARIANTS) == ["baseline", "fused"]


@pytest.mark.parametrize("variant,net", sorted(EXPECTED))
def test_layer_shapes_and_params_match_the_design(variant, net):
    model = networks(variant)[net]
    rows = layer_table(model, INPUT_SHAPES[net])

    got = [(row["layer"].split("(")[0], row["output_shape"], row["params"]) for row in rows]
    assert got == EXPECTED[(variant, net)]
    total = sum(row["params"] for row in rows)
    assert total == sum(p.numel() for p in model.parameters())
    assert total == sum(params for _, _, params in EXPECTED[(variant, net)])
    assert f"Total parameters: {total:,}" in format_layer_table(rows, f"{variant} {net}")


def test_every_conv_is_bias_free():
    for variant in VARIANTS:
        for model in networks(variant).values():
            convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
            assert convs and all(m.bias is None for m in convs)


def test_fused_heads_use_8x8_kernels():
    nets = networks("fused")
    g_head = layer_table(nets["G"], INPUT_SHAPES["G"])[-2]["layer"]
    d_head = layer_table(nets["D"], INPUT_SHAPES["D"])[-2]["layer"]
    assert "kernel_size=(8, 8), stride=(4, 4), padding=(2, 2)" in g_head
    assert "kernel_size=(8, 8), stride=(1, 1)" in d_head


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shapes_and_ranges(variant):
    torch.manual_seed(0)
    nets = networks(variant, "dcgan")
    z = torch.randn(5, LATENT, 1, 1)
    images = nets["G"](z)
    assert images.shape == (5, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    logits = nets["D"](images)
    assert logits.shape == (5,)
    assert not any(isinstance(m, nn.Sigmoid) for m in nets["D"].modules())  # logits, not scores


def test_layer_table_formats_as_markdown():
    rows = layer_table(networks("baseline")["D"], INPUT_SHAPES["D"])
    text = format_layer_table(rows, "baseline discriminator")
    lines = text.splitlines()
    assert "baseline discriminator" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    first = "`Conv2d(3, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)`"
    assert first in table[2]
    assert "64 x 32 x 32" in table[2] and "3,072" in table[2]


def test_layer_table_leaves_rng_bn_stats_and_mode_alone():
    torch.manual_seed(1)
    discriminator = networks("baseline", "dcgan")["D"]
    discriminator(torch.randn(4, 3, 64, 64))  # give the BN layers non-trivial running stats
    before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    rng = torch.get_rng_state()

    layer_table(discriminator, INPUT_SHAPES["D"])

    assert torch.equal(torch.get_rng_state(), rng)
    after = discriminator.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert discriminator.training
    assert all(not m._forward_hooks for m in discriminator.modules())


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    nets = networks("baseline", "dcgan")
    modules = [m for net in nets.values() for m in net.modules()]
    conv_w = torch.cat(
        [m.weight.flatten() for m in modules if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    )
    bn = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight.flatten() for m in bn])
    assert conv_w.std().item() == pytest.approx(0.02, abs=0.001)
    assert abs(conv_w.mean().item()) < 0.001
    assert bn_w.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_w.std().item() == pytest.approx(0.02, abs=0.005)
    assert all(torch.count_nonzero(m.bias) == 0 for m in bn)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_default_init_is_pytorchs_and_builds_are_reproducible(variant):
    torch.manual_seed(3)
    built = build(variant, LATENT, "default")
    torch.manual_seed(3)
    fresh = VARIANTS[variant](LATENT)
    for ours, theirs in zip(built, fresh):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    torch.manual_seed(3)
    first = build(variant, LATENT, "dcgan")
    torch.manual_seed(3)
    second = build(variant, LATENT, "dcgan")
    for one, two in zip(first, second):
        a, b = one.state_dict(), two.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(first[0][0].weight, built[0][0].weight)


@pytest.mark.parametrize("key,bad,allowed", [
    ("model.variant", "resnet", "baseline, fused"), ("model.init", "xavier", "default, dcgan"),
    ("model.latent_dim", 0, ">= 1"), ("model.latent_dim", 2.5, "an integer"),
    ("model.latent_dim", True, "an integer"), ("model.latent_dim", "100", "an integer")])
def test_bad_model_params_are_refused_on_load_naming_key_and_choices(key, bad, allowed):
    group, name = key.split(".")
    with pytest.raises(UserError) as err:
        config.parse_params({group: {name: bad}})
    assert f"{key} = {bad!r}" in str(err.value) and allowed in str(err.value)


def test_init_weights_refuses_a_scheme_config_does_not_know():
    with pytest.raises(ValueError, match="xavier"):
        init_weights(nn.Conv2d(1, 1, 1), "xavier")


def test_sample_uses_batch_statistics_and_leaves_running_stats_alone():
    torch.manual_seed(0)
    G, _ = build("baseline", 16, "default")
    G.eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z = torch.randn(8, 16, 1, 1)
    out = sample(G, z)
    assert not G.training
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    reference = copy.deepcopy(G).train()
    with torch.no_grad():
        assert torch.equal(out, reference(z))
    assert out.std() > 0.01  # untrained noise, not the flat grey that eval mode gives


def sn_block(c_in: int, c_out: int, size: int) -> list[tuple[str, list[int], int]]:
    return [("Conv2d", [c_out, size, size], conv_params(c_in, c_out, 4)),
            ("LeakyReLU", [c_out, size, size], 0)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_spectral_norm_normalises_every_conv_of_d_and_drops_its_batchnorm(variant):
    torch.manual_seed(0)
    G, D = build(variant, LATENT, "dcgan", d_norm="spectral")
    rows = layer_table(D, INPUT_SHAPES["D"])
    plain = [row for row in EXPECTED[(variant, "D")] if row[0] != "BatchNorm2d"]
    assert [(r["layer"].split("(")[0], r["output_shape"], r["params"]) for r in rows] == plain
    convs = [r["layer"] for r in rows if r["layer"].startswith("Conv2d")]
    assert convs and all(layer.endswith(") + SpectralNorm(weight)") for layer in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert layer_table(G, INPUT_SHAPES["G"]) == layer_table(networks(variant)["G"], INPUT_SHAPES["G"])


def test_spectral_norm_keeps_each_convs_largest_singular_value_at_one():
    torch.manual_seed(0)
    _, D = build("fused", LATENT, "dcgan", d_norm="spectral")
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:  # far from 1 without the normalisation
            conv.parametrizations.weight.original.mul_(10)
        for _ in range(40):  # in training mode each read of the weight (each forward) iterates
            for conv in convs:
                conv.weight
    for conv in convs:
        w = conv.weight.detach().flatten(1).double()
        sigma = torch.linalg.eigvalsh(w @ w.T).max().sqrt()  # the largest singular value
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_without_spectral_norm_the_build_draws_nothing_more():
    torch.manual_seed(4)
    build("baseline", LATENT, "default")
    plain = torch.get_rng_state()
    torch.manual_seed(4)
    build("baseline", LATENT, "default", d_norm="batchnorm")
    assert torch.equal(torch.get_rng_state(), plain)


def test_batch_statistics_leave_spectral_norms_vectors_alone():
    torch.manual_seed(0)
    _, D = build("fused", LATENT, "default", d_norm="spectral")
    D.eval()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    with batch_statistics(D) as running:
        running(torch.randn(4, 3, 64, 64))  # a training-mode forward: a power iteration
        moved = {k: v.clone() for k, v in D.state_dict().items()}
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.endswith("_u"))
    assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())
    assert not D.training
