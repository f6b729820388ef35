"""SWD against a direct numpy reference, and its behaviour on known distributions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catgan.errors import UserError
from catgan.metrics.swd import draw_samples, laplacian_pyramid, pyramid_resolutions, swd

KERNEL_2D = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def colour_fields(n: int, size: int, seed: int, grid: int = 8, mode: str = "bilinear",
                  detail: float = 0.0) -> torch.Tensor:
    """A toy image distribution: a random grid x grid colour field upsampled, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, grid, grid, generator=g)
    corners = {} if mode == "nearest" else {"align_corners": False}
    images = F.interpolate(coarse, size=(size, size), mode=mode, **corners)
    images = images + detail * torch.randn(n, 3, size, size, generator=g)
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


# --- direct numpy reference, written from the ProGAN description with plain loops -------------

def mirror(i: int, n: int) -> int:
    """Index into 0..n-1 reflected about the edge pixels, which are not repeated (scipy 'mirror')."""
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def ref_convolve(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    _, _, h, w = images.shape
    out = np.zeros_like(images)
    for dy in range(-2, 3):
        rows = [mirror(y + dy, h) for y in range(h)]
        for dx in range(-2, 3):
            cols = [mirror(x + dx, w) for x in range(w)]
            out += kernel[dy + 2, dx + 2] * images[:, :, rows][:, :, :, cols]
    return out


def ref_pyramid(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
    pyramid = [images.astype(np.float64)]
    for _ in range(1, num_levels):
        low = ref_convolve(pyramid[-1], KERNEL_2D)[:, :, ::2, ::2]
        spread = np.zeros_like(pyramid[-1])
        spread[:, :, ::2, ::2] = low
        pyramid[-1] = pyramid[-1] - ref_convolve(spread, KERNEL_2D * 4)
        pyramid.append(low)
    return pyramid


def ref_descriptors(level: np.ndarray, centres: np.ndarray, patch_size: int) -> np.ndarray:
    r = patch_size // 2
    patches = []
    for i in range(level.shape[0]):
        for y, x in centres[i]:
            patches.append(level[i, :, y - r:y + r + 1, x - r:x + r + 1])
    desc = np.array(patches)
    desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
    desc /= desc.std(axis=(0, 2, 3), keepdims=True)
    return desc.reshape(len(desc), -1)


def ref_sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    per_repeat = []
    for dirs in directions:
        per_dir = []
        for k in range(dirs.shape[1]):
            proj_a = np.sort(a @ dirs[:, k])
            proj_b = np.sort(b @ dirs[:, k])
            per_dir.append(np.mean(np.abs(proj_a - proj_b)))
        per_repeat.append(np.mean(per_dir))
    return float(np.mean(per_repeat))


# --- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [16, 32])
def test_matches_direct_numpy_reference(size):
    real = colour_fields(8, size, seed=1, detail=0.1)
    fake = colour_fields(8, size, seed=2, detail=0.3)
    settings = dict(patches_per_image=6, patch_size=5, dirs_per_repeat=10, repeats=2)
    resolutions = pyramid_resolutions(size, 8)
    samples = draw_samples(8, 8, resolutions, seed=11, **settings)

    got = swd(real, fake, seed=11, min_resolution=8, **settings)

    real_pyr = ref_pyramid(real.numpy(), len(resolutions))
    fake_pyr = ref_pyramid(fake.numpy(), len(resolutions))
    expected = {}
    for res, real_level, fake_level, sample in zip(resolutions, real_pyr, fake_pyr, samples):
        a = ref_descriptors(real_level, sample.real_centres.numpy(), 5)
        b = ref_descriptors(fake_level, sample.fake_centres.numpy(), 5)
        expected[f"swd_{res}"] = ref_sliced_wasserstein(a, b, sample.directions.double().numpy()) * 1e3
    expected["swd_avg"] = float(np.mean(list(expected.values())))

    assert list(got) == list(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-4), key
    assert expected["swd_avg"] > 1.0  # the two sets differ, so the comparison is not 0 == 0


def test_pyramid_matches_progan_scipy_pyramid():
    ndimage = pytest.importorskip("scipy.ndimage")
    images = colour_fields(4, 32, seed=3, detail=0.2).numpy().astype(np.float64)
    kernel = KERNEL_2D[None, None]
    expected = [images]
    for _ in range(2):  # ProGAN's pyr_down / pyr_up, scipy mode="mirror"
        low = ndimage.convolve(expected[-1], kernel, mode="mirror")[:, :, ::2, ::2]
        spread = np.zeros_like(expected[-1])
        spread[:, :, ::2, ::2] = low
        expected[-1] = expected[-1] - ndimage.convolve(spread, kernel * 4, mode="mirror")
        expected.append(low)
    got = laplacian_pyramid(torch.from_numpy(images).to(torch.uint8), 3)
    assert [tuple(level.shape[-2:]) for level in got] == [(32, 32), (16, 16), (8, 8)]
    for level, ref in zip(got, expected):
        np.testing.assert_allclose(level.double().numpy(), ref, atol=1e-3)


def test_two_draws_of_one_distribution_are_much_closer_than_different_distributions():
    settings = dict(seed=0, patches_per_image=64, dirs_per_repeat=64, repeats=2)
    real = colour_fields(128, 32, seed=1)
    same = swd(real, colour_fields(128, 32, seed=2), **settings)
    # Four flat quadrants: sharp edges where smooth fields have none.
    other = swd(real, colour_fields(128, 32, seed=2, grid=2, mode="nearest"), **settings)
    assert list(same) == ["swd_32", "swd_16", "swd_avg"]
    # The low-pass level holds few independent patches per image, so its sampling floor is higher.
    assert all(same[key] < 0.5 * other[key] for key in same), (same, other)
    assert same["swd_avg"] < 0.25 * other["swd_avg"], (same, other)


def test_grows_monotonically_with_added_noise():
    real = colour_fields(64, 32, seed=1)
    clean = colour_fields(64, 32, seed=2).float()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    values = []
    for sigma in [0.0, 10.0, 30.0, 90.0]:
        fake = (clean + sigma * noise).round().clamp(0, 255).to(torch.uint8)
        result = swd(real, fake, seed=0, patches_per_image=32, dirs_per_repeat=64, repeats=2)
        values.append(result["swd_avg"])
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_deterministic_given_seed_and_names_levels_by_resolution():
    real = colour_fields(8, 64, seed=1)
    fake = colour_fields(8, 64, seed=2, detail=0.1)
    settings = dict(patches_per_image=8, dirs_per_repeat=16, repeats=2)
    first = swd(real, fake, seed=7, **settings)
    assert list(first) == ["swd_64", "swd_32", "swd_16", "swd_avg"]
    assert swd(real, fake, seed=7, **settings) == first
    assert swd(real, fake, seed=8, **settings) != first
    levels = [first["swd_64"], first["swd_32"], first["swd_16"]]
    assert first["swd_avg"] == pytest.approx(np.mean(levels))


def test_blank_images_give_finite_numbers():
    blank = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8)
    result = swd(blank, blank, seed=0, patches_per_image=4, dirs_per_repeat=4, repeats=1)
    assert result == {"swd_16": 0.0, "swd_avg": 0.0}


def zeros(n: int = 4, channels: int = 3, size: int = 32, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.zeros(n, channels, size, size, dtype=dtype)


@pytest.mark.parametrize(
    ("real", "fake", "kwargs", "message"),
    [
        (zeros(dtype=torch.float32), zeros(dtype=torch.float32), {}, "uint8"),
        (zeros(channels=1), zeros(channels=1), {}, "3 x H x W"),
        (zeros(), zeros(n=5), {}, "same number"),
        (zeros(size=48), zeros(size=48), {}, "power-of-two"),
        (zeros(size=8), zeros(size=8), {}, "min_resolution"),
        (zeros(), zeros(), {"patch_size": 4}, "odd"),
        (zeros(), zeros(), {"repeats": 0}, "repeats"),
    ],
)
def test_bad_input_is_a_clear_user_error(real, fake, kwargs, message):
    with pytest.raises(UserError, match=message):
        swd(real, fake, seed=0, **kwargs)


def test_the_device_sort_gives_the_numpy_sorts_distance():
    """GPUs sort with torch on the device; only the CPU path is testable here, so compare the two
    implementations on CPU tensors."""
    from catgan.metrics.swd import _sorted_gap_numpy, _sorted_gap_torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 500, generator=gen), torch.randn(16, 500, generator=gen) * 1.5 + 0.2
    assert _sorted_gap_torch(a, b) == pytest.approx(_sorted_gap_numpy(a.clone(), b.clone()), rel=1e-6)
    assert _sorted_gap_torch(a, b) > 0.1
