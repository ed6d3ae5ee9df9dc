"""training.loss.TriPlaneLoss (EG3D's loss) against closed forms on toy networks.

The rules come from NVlabs/eg3d training/loss.py: the neural rendering resolution and pose-swap
schedules, the raw real image (antialiased bilinear resize, then the D-input blur), joint
augmentation of [image, raw image], the dual R1 penalty and the L1 density regularisation. Expected
values are computed here in numpy float64: resizes with PIL (whose antialiased bilinear filter
EG3D's torch call reproduces), blurs with scipy, gradients on paper.
"""

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from test_loss import blur_oracle
from training.augment import AugmentPipe
from training.loss import TriPlaneLoss

DT = torch.float64
RES, NRR = 8, 4


class ToyTriPlaneG(torch.nn.Module):
    """ws = broadcast(M z); image and raw image linear in w; sigma(x) = k . x. Records its calls."""

    def __init__(self, z_dim=3, num_ws=2, density_reg=0.25, p_dist=0.004, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.z_dim = self.w_dim = z_dim
        self.c_dim = 25
        self.num_ws = num_ws
        self.rendering_kwargs = dict(density_reg=density_reg, density_reg_p_dist=p_dist)
        self.M = torch.nn.Parameter(torch.randn([z_dim, z_dim], generator=gen, dtype=DT))
        self.A = torch.nn.Parameter(torch.randn([z_dim, 3 * RES * RES], generator=gen, dtype=DT))
        self.k = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=DT))
        self.mapping_c, self.synthesis_nrr, self.points = [], [], []

    def mapping(self, z, c, update_emas=False):
        self.mapping_c.append(c.detach().clone())
        return (z @ self.M.T).unsqueeze(1).repeat([1, self.num_ws, 1])

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False):
        self.synthesis_nrr.append(neural_rendering_resolution)
        image = (ws[:, 0] @ self.A).reshape(-1, 3, RES, RES)
        raw = F.avg_pool2d(image, RES // neural_rendering_resolution)
        return {'image': image, 'image_raw': raw}

    def sample_mixed(self, points, directions, ws, update_emas=False):
        self.points.append(points.detach().clone())
        return {'sigma': (points.to(DT) @ self.k).unsqueeze(-1)}  # the points are float32, as in EG3D


class ToyDualD(torch.nn.Module):
    """D = sum(a image + q image^2 / 2) + sum(b raw + r raw^2 / 2); records its inputs."""

    def __init__(self, seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn([3, RES, RES], generator=gen, dtype=DT) * 0.2)
        self.q = torch.nn.Parameter(torch.randn([3, RES, RES], generator=gen, dtype=DT) * 0.1)
        self.b = torch.nn.Parameter(torch.randn([3, NRR, NRR], generator=gen, dtype=DT) * 0.2)
        self.r = torch.nn.Parameter(torch.randn([3, NRR, NRR], generator=gen, dtype=DT) * 0.1)
        self.calls = []

    def forward(self, img, c, update_emas=False):
        self.calls.append({key: value.detach().clone() for key, value in img.items()})
        x, y = img['image'], img['image_raw']
        if y.shape[-1] != NRR:  # other rendering resolutions (only their call is checked)
            y = F.interpolate(y, size=(NRR, NRR), mode='nearest')
        return ((self.a * x + self.q * x.square() / 2).sum([1, 2, 3])
                + (self.b * y + self.r * y.square() / 2).sum([1, 2, 3]))[:, None]


def make(N=4, **kwargs):
    G, D = ToyTriPlaneG(**{k: kwargs.pop(k) for k in ('density_reg', 'p_dist') if k in kwargs}), ToyDualD()
    options = dict(r1_gamma=2.0, neural_rendering_resolution_initial=NRR, dual_discrimination=True)
    options.update(kwargs)
    loss = TriPlaneLoss('cpu', G, D, **options)
    gen = torch.Generator().manual_seed(7)
    real = torch.rand([N, 3, RES, RES], generator=gen, dtype=DT) * 2 - 1
    z = torch.randn([N, G.z_dim], generator=gen, dtype=DT)
    c = torch.randn([N, 25], generator=gen, dtype=DT)
    return G, D, loss, real, z, c


def pil_resize(images, size):
    """[N, C, H, W] float64 -> [N, C, size, size], PIL's antialiased bilinear filter per channel."""
    out = np.empty(images.shape[:2] + (size, size))
    for n in range(images.shape[0]):
        for ch in range(images.shape[1]):
            plane = PIL.Image.fromarray(images[n, ch].astype(np.float32), mode='F')
            out[n, ch] = np.asarray(plane.resize((size, size), PIL.Image.BILINEAR))
    return out


# ----------------------------------------------------------------------------------------------
# Schedules.

@pytest.mark.parametrize('cur_nimg, expected', [(0, 64), (250, 80), (500, 96), (1000, 128), (5000, 128)])
def test_neural_rendering_resolution_fades_from_initial_to_final(cur_nimg, expected):
    loss = make(neural_rendering_resolution_initial=64, neural_rendering_resolution_final=128,
                neural_rendering_resolution_fade_kimg=1)[2]
    assert loss.neural_rendering_resolution(cur_nimg) == expected


def test_neural_rendering_resolution_stays_initial_without_a_final_value_and_G_renders_at_it():
    G, D, loss, real, z, c = make(neural_rendering_resolution_initial=2, neural_rendering_resolution_fade_kimg=1)
    assert [loss.neural_rendering_resolution(n) for n in (0, 10 ** 6)] == [2, 2]
    G.synthesis_nrr.clear()
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=10 ** 6)
    assert G.synthesis_nrr == [2]


@pytest.mark.parametrize('cur_nimg, expected', [(0, 1.0), (500, 0.75), (1000, 0.5), (4000, 0.5)])
def test_swapping_probability_fades_from_one_to_gpc_reg_prob(cur_nimg, expected):
    loss = make(gpc_reg_prob=0.5, gpc_reg_fade_kimg=1)[2]
    assert loss.swapping_prob(cur_nimg) == pytest.approx(expected, abs=1e-12)


def test_mapping_sees_rolled_cameras_while_swapping_is_certain_and_zeros_without_pose_conditioning():
    G, D, loss, real, z, c = make(gpc_reg_prob=0.0, gpc_reg_fade_kimg=1)
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=0)  # probability 1
    assert torch.equal(G.mapping_c[-1], torch.roll(c, 1, 0))
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=10 ** 6)  # probability 0
    assert torch.equal(G.mapping_c[-1], c)
    G, D, loss, real, z, c = make()  # gpc_reg_prob=None: EG3D's c_gen_conditioning_zero
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=0)
    assert torch.equal(G.mapping_c[-1], torch.zeros_like(c))


# ----------------------------------------------------------------------------------------------
# What D sees.

@pytest.mark.parametrize('sigma', [0.0, 1.5])
def test_real_raw_image_is_the_antialiased_resize_then_the_blur(sigma):
    G, D, loss, real, z, c = make(blur_init_sigma=sigma, blur_fade_kimg=10 ** 6)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    seen = D.calls[-1]  # fakes first, then reals
    raw = pil_resize(real.numpy(), NRR)
    image = real.numpy()
    if sigma > 0:
        raw, image = blur_oracle(raw, sigma), blur_oracle(image, sigma)
    np.testing.assert_allclose(seen['image_raw'].numpy(), raw, rtol=0, atol=1e-6)
    np.testing.assert_allclose(seen['image'].numpy(), image, rtol=0, atol=1e-9)


def test_fake_raw_image_is_not_blurred():
    # EG3D's run_D blurs 'image' only; the raw fake comes from the renderer as it is.
    G, D, loss, real, z, c = make(blur_init_sigma=1.5, blur_fade_kimg=10 ** 6)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0)
    fake = G.synthesis(G.mapping(z, c), c, neural_rendering_resolution=NRR)
    seen = D.calls[0]
    np.testing.assert_allclose(seen['image_raw'].numpy(), fake['image_raw'].detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(seen['image'].numpy(), blur_oracle(fake['image'].detach().numpy(), 1.5),
                               rtol=0, atol=1e-9)


class RecordingAugment:
    """x -> 2 x + 1, recording its input."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x):
        self.inputs.append(x.detach().clone())
        return 2 * x + 1


def test_augmentation_sees_image_and_upsized_raw_as_one_stack_and_raw_goes_back_to_its_size():
    G, D, loss, real, z, c = make(augment_pipe=RecordingAugment())
    image = real
    raw = torch.from_numpy(pil_resize(real.numpy(), NRR))
    logits = loss.run_D({'image': image, 'image_raw': raw}, c)
    stack = loss.augment_pipe.inputs[-1]
    assert stack.shape == (real.shape[0], 6, RES, RES)
    np.testing.assert_allclose(stack[:, :3].numpy(), image.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(stack[:, 3:].numpy(), pil_resize(raw.numpy(), RES), rtol=0, atol=1e-6)
    seen = D.calls[-1]
    np.testing.assert_allclose(seen['image'].numpy(), 2 * image.numpy() + 1, rtol=0, atol=1e-12)
    expected_raw = pil_resize(2 * pil_resize(raw.numpy(), RES) + 1, NRR)
    np.testing.assert_allclose(seen['image_raw'].numpy(), expected_raw, rtol=0, atol=1e-5)
    assert logits.shape == (real.shape[0], 1)


def test_colour_augmentation_shifts_image_and_raw_image_alike():
    # The real pipe on the 6-channel stack: a brightness shift b moves both images by b.
    pipe = AugmentPipe(brightness=1).to(DT)
    G, D, loss, real, z, c = make(augment_pipe=lambda x: pipe(x, debug_percentile=0.9))
    raw = torch.from_numpy(pil_resize(real.numpy(), NRR))
    loss.run_D({'image': real, 'image_raw': raw}, c)
    seen = D.calls[-1]
    shift = seen['image'] - real
    b = float(shift.flatten()[0])
    assert b == pytest.approx(float(torch.special.ndtri(torch.tensor(0.9, dtype=DT))) * 0.2, rel=1e-6)
    np.testing.assert_allclose(shift.numpy(), b, rtol=0, atol=1e-9)
    round_trip = pil_resize(pil_resize(raw.numpy(), RES), NRR)
    np.testing.assert_allclose(seen['image_raw'].numpy(), round_trip + b, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Dual R1.

def test_dual_r1_penalises_the_gradients_with_respect_to_both_images():
    gamma = 3.0
    G, D, loss, real, z, c = make(r1_gamma=gamma)
    loss.accumulate_gradients('Dreg', real, c, z, c, gain=1, cur_nimg=0)
    x = real.numpy()
    y = pil_resize(x, NRR)
    a, q, b, r = (p.detach().numpy() for p in (D.a, D.q, D.b, D.r))
    grad_x, grad_y = a + q * x, b + r * y  # dD/dimage, dD/draw per sample
    penalty = (grad_x ** 2).sum((1, 2, 3)) + (grad_y ** 2).sum((1, 2, 3))
    np.testing.assert_allclose(loss.last_losses['Dr1'].numpy(), penalty * gamma / 2, rtol=1e-5)
    # d/da mean_n gamma/2 |a + q x_n|^2 = gamma mean_n (a + q x_n); d/dq = gamma mean_n (a + q x_n) x_n.
    np.testing.assert_allclose(D.a.grad.numpy(), gamma * grad_x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.q.grad.numpy(), gamma * (grad_x * x).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.b.grad.numpy(), gamma * grad_y.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.r.grad.numpy(), gamma * (grad_y * y).mean(0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Density regularisation.

def test_density_regularisation_is_the_l1_change_of_sigma_under_small_moves():
    p_dist, weight = 0.004, 0.25
    G, D, loss, real, z, c = make(N=8, density_reg=weight, p_dist=p_dist)
    assert loss.G_reg_enabled
    torch.manual_seed(0)
    loss.accumulate_gradients('Greg', real, c, z, c, gain=1, cur_nimg=0)
    points = G.points[-1]
    assert points.shape == (8, 2000, 3)
    initial, moved = points[:, :1000], points[:, 1000:]
    assert initial.min() >= -1 and initial.max() <= 1 and abs(float(initial.mean())) < 0.02
    assert float(initial.var()) == pytest.approx(1 / 3, rel=0.03)  # U[-1, 1]
    assert float((moved - initial).std()) == pytest.approx(p_dist, rel=0.03)
    # sigma = k . x, so |sigma(x) - sigma(x + e)| = |k . e| with k . e ~ N(0, (p_dist |k|)^2):
    # its mean is sqrt(2 / pi) p_dist |k|.
    k = G.k.detach().numpy()
    expected = weight * np.sqrt(2 / np.pi) * p_dist * np.linalg.norm(k)
    assert float(loss.last_losses['Gdensity']) == pytest.approx(expected, rel=0.04)
    # Exactly: the L1 mean over the drawn points.
    exact = weight * np.abs((moved - initial).numpy().astype(np.float64) @ k).mean()
    assert float(loss.last_losses['Gdensity']) == pytest.approx(exact, rel=1e-9)


def test_density_regularisation_is_off_at_zero_weight():
    G, D, loss, real, z, c = make(density_reg=0)
    assert not loss.G_reg_enabled
    loss.accumulate_gradients('Greg', real, c, z, c, gain=1, cur_nimg=0)
    assert G.points == [] and 'Gdensity' not in loss.last_losses
