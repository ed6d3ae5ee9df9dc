"""EpiGRAF's patch distribution and real-patch extraction (training/patches.py), and EpiGRAFLoss's use of them.

Oracles: scipy's Beta and uniform distributions (Kolmogorov-Smirnov), EpiGRAF's schedule formulas in
closed form, and bilinear sampling written out in numpy.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from training import cameras, patches

BETA = dict(enabled=True, distribution='beta', min_scale_trg=0.125, max_scale=1.0, anneal_kimg=10000, alpha=1.0,
            beta_val_start=0.001, beta_val_end=0.8, resolution=8, mbstd_group_size=4)


def test_schedules_anneal_linearly_as_epigraf():
    assert patches.scale_schedule(BETA, 0) == (0.125, 0.001)
    assert patches.scale_schedule(BETA, 5000) == (0.125, pytest.approx(0.001 + 0.799 / 2))
    assert patches.scale_schedule(BETA, 20000) == (0.125, 0.8)
    uniform = dict(BETA, distribution='uniform')
    assert patches.scale_schedule(uniform, 0) == (1.0, None)  # min_scale from max_scale down to the target
    assert patches.scale_schedule(uniform, 2500)[0] == pytest.approx(1 - 0.875 / 4)
    with pytest.raises(ValueError, match='distribution'):
        patches.scale_schedule(dict(BETA, distribution='gaussian'), 0)


@pytest.mark.parametrize('cur_kimg', [2500, 10000])
def test_beta_scales_follow_the_annealed_beta_distribution(cur_kimg):
    torch.manual_seed(0)
    scales, offsets = patches.sample_patch_params(4000, BETA, cur_kimg, 'cpu', group_size=1)
    _, beta = patches.scale_schedule(BETA, cur_kimg)
    unit = (scales[:, 0].double().numpy() - 0.125) / 0.875
    # The empirical CDF against scipy's (KS-style bound; float32 rounds draws within 1e-7 of 1 onto 1, so the
    # comparison stops short of it).
    grid = np.linspace(0.05, 0.99, 40)
    empirical = (unit[None, :] <= grid[:, None]).mean(axis=1)
    assert np.abs(empirical - scipy.stats.beta(1.0, beta).cdf(grid)).max() < 1.63 / math.sqrt(len(unit))
    assert torch.equal(scales[:, 0], scales[:, 1])  # square patches
    # Offsets uniform in [0, 1 - s] per axis: (offset / (1 - s)) is U[0, 1].
    for axis in (0, 1):
        u = (offsets[:, axis] / (1 - scales[:, axis])).numpy()
        assert scipy.stats.kstest(u, 'uniform').pvalue > 1e-3


def test_early_training_sees_almost_whole_images():
    torch.manual_seed(0)
    scales, _ = patches.sample_patch_params(4000, BETA, 0, 'cpu')
    # Beta(1, 0.001): P(s < 0.99) = 1 - (1 - (0.99 - 0.125) / 0.875) ** 0.001, about 0.4%.
    assert float((scales[:, 0] < 0.99).float().mean()) < 0.02


def test_uniform_and_discrete_scales():
    torch.manual_seed(0)
    uniform = dict(BETA, distribution='uniform')
    scales, _ = patches.sample_patch_params(4000, uniform, 5000, 'cpu')
    low = 1 - 0.875 / 2
    assert scipy.stats.kstest((scales[:, 0].numpy() - low) / (1 - low), 'uniform').pvalue > 1e-3
    discrete = dict(BETA, distribution='discrete_uniform', discrete_support=[0.25, 1.0])
    early, _ = patches.sample_patch_params(100, discrete, 0, 'cpu')
    late, _ = patches.sample_patch_params(4000, discrete, 10000, 'cpu')
    assert set(early[:, 0].tolist()) == {1.0}  # min_scale starts at max_scale: only 1.0 is in range
    assert set(late[:, 0].tolist()) == {0.25, 1.0} and abs(float((late[:, 0] == 1).float().mean()) - 0.5) < 0.05


def test_one_draw_per_minibatch_std_group():
    torch.manual_seed(0)
    scales, offsets = patches.sample_patch_params(12, dict(BETA, distribution='uniform'), 10000, 'cpu', group_size=4)
    for group in range(3):
        rows = slice(4 * group, 4 * group + 4)
        assert (scales[rows] == scales[4 * group]).all() and (offsets[rows] == offsets[4 * group]).all()
    assert len(set(scales[:, 0].tolist())) == 3
    with pytest.raises(ValueError, match='groups of 4'):
        patches.sample_patch_params(6, BETA, 0, 'cpu', group_size=4)


def _bilinear(image, x, y):
    """numpy bilinear sample of image [C, H, W] at continuous pixel coordinates (x right, y down), zeros outside."""
    c, h, w = image.shape
    x0, y0 = math.floor(x), math.floor(y)
    value = np.zeros(c)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < w and 0 <= yi < h:
                value += weight * image[:, yi, xi]
    return value


@pytest.mark.parametrize('legacy', [False, True])
def test_real_patches_sample_the_window_of_the_image(legacy):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    scales = torch.tensor([[0.5, 0.5], [0.25, 0.25]], dtype=torch.float64)
    offsets = torch.tensor([[0.125, 0.25], [0.6, 0.1]], dtype=torch.float64)
    got = patches.extract_patches(images, scales, offsets, 4, legacy=legacy).numpy()
    for n in range(2):
        s, (ox, oy) = float(scales[n, 0]), offsets[n].tolist()
        for i in range(4):      # patch row (top to bottom)
            for j in range(4):  # patch column
                g_u, g_v = ((j / 3, i / 3) if legacy else ((j + 0.5) / 4, (i + 0.5) / 4))
                u, v = ox + s * g_u, 1 - oy - s + s * g_v  # EpiGRAF's y offset counts from the bottom
                # Image coordinates in pixels: legacy grid_sample(align_corners=True) maps u = 0..1 to pixel
                # centres 0..15; pixel-centre sampling (align_corners=False) maps u to u * 16 - 0.5.
                x, y = ((u * 15, v * 15) if legacy else (u * 16 - 0.5, v * 16 - 0.5))
                np.testing.assert_allclose(got[n, :, i, j], _bilinear(images[n].numpy(), x, y), atol=1e-12)


def test_a_whole_image_patch_at_pixel_centres_is_the_image():
    images = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    whole = patches.extract_patches(images, torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                                    8, legacy=False)
    torch.testing.assert_close(whole, images, rtol=0, atol=1e-12)

# ----------------------------------------------------------------------------------------------
# EpiGRAFLoss with toy networks.


class ToyG(torch.nn.Module):
    """A generator whose fakes are weight * ones: records the patches and the kimg the loss asks for."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.kimg, self.calls = [], []
        outer = self

        class Mapping:
            def __call__(self, z, c, camera_angles=None, update_emas=False):
                outer.calls.append(('mapping', camera_angles.clone()))
                return z.unsqueeze(1)

        class Synthesis:
            legacy_rays = False

            def __call__(self, ws, c=None, patch=None, update_emas=False):
                outer.calls.append(('synthesis', patch))
                return outer.weight * torch.ones(len(ws), 3, 4, 4, dtype=torch.float64)
        self.mapping, self.synthesis = Mapping(), Synthesis()

    def progressive_update(self, cur_kimg):
        self.kimg.append(cur_kimg)


def toy_loss(**kwargs):
    from training.loss import EpiGRAFLoss
    G = ToyG()
    seen = []
    d_weight = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def D(img, c, patch=None, update_emas=False):
        seen.append((img, patch))
        return img.mean(dim=[1, 2, 3]).unsqueeze(1) * 3 * d_weight
    patch = dict(BETA, distribution='uniform', resolution=4, min_scale_trg=0.25, anneal_kimg=0, mbstd_group_size=2)
    loss = EpiGRAFLoss('cpu', G, D, r1_gamma=2.0, patch_kwargs=patch, **kwargs)
    return loss, G, seen


def test_loss_renders_patches_cuts_real_patches_and_takes_r1_on_them():
    torch.manual_seed(0)
    loss, G, seen = toy_loss()
    c = cameras.epigraf_angles_to_label(torch.tensor([[0.1, 1.5, 0.0], [-0.2, 1.6, 0.0]]), 12.0)
    real = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    loss.accumulate_gradients('Gmain', real, c, torch.randn(2, 8, dtype=torch.float64), c, 1.0, cur_nimg=3000)
    assert G.kimg == [3.0]  # the density noise follows cur_nimg
    (_, patch), = [call for call in G.calls if call[0] == 'synthesis']
    scales, offsets = patch
    assert scales.shape == offsets.shape == (2, 2) and torch.equal(scales[0], scales[1])  # one group of 2
    assert 0.25 <= float(scales[0, 0]) <= 1 and (offsets >= 0).all() and (offsets <= 1 - scales + 1e-7).all()
    img, d_patch = seen[-1]
    assert d_patch[0] is scales  # D sees the fake's own patch
    # D step on reals: R1 = gamma / 2 |d(sum D)/d(patch)|^2, D = 3 mean(patch): grad 3 / 48 per entry.
    seen.clear()
    loss.accumulate_gradients('Dreg', real, c, torch.randn(2, 8, dtype=torch.float64), c, 1.0, cur_nimg=3000)
    real_patch, (real_scales, real_offsets) = seen[-1]
    assert real_patch.shape == (2, 3, 4, 4)
    expected = patches.extract_patches(real, real_scales, real_offsets, 4, legacy=False)
    torch.testing.assert_close(real_patch, expected)
    torch.testing.assert_close(loss.last_losses['Dr1'], torch.full((2,), 2.0 / 2 * 48 * (3 / 48) ** 2,
                                                                    dtype=torch.float64))


def test_gpc_spoofing_rolls_the_selected_conditioning_angles():
    loss, G, _ = toy_loss(camera_cond_spoof_p=0.5)
    assert loss.spoofing_prob(0) == 1.0 and loss.spoofing_prob(500) == 0.75 and loss.spoofing_prob(2000) == 0.5
    angles = torch.tensor([[0.1 * k, 1.5, 0.0] for k in range(4)])
    c = cameras.epigraf_angles_to_label(angles, 12.0)
    loss._cur_kimg = 0.0  # p = 1: every sample takes its predecessor's angles
    rolled = loss._conditioning_angles(c)
    torch.testing.assert_close(rolled, cameras.epigraf_angles_from_label(c).roll(1, 0))
    loss._cur_kimg = 1e6
    loss.camera_cond_spoof_p = 0.0
    torch.testing.assert_close(loss._conditioning_angles(c), cameras.epigraf_angles_from_label(c))
