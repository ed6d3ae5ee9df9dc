"""training.loss.GramLoss (GRAM's losses) against closed forms on toy networks.

The rules come from microsoft/GRAM processes/processes.py (Gan3DProcess): the D loss is
softplus(D(fake)) + softplus(-D(real)) + r1_lambda / 2 |grad D(real)|^2 + pos_lambda MSE(pose(fake),
sampled pose) + real_pos_lambda MSE(pose(real), real pose), the G loss softplus(-D(fake)) +
pos_lambda MSE(pose(fake), sampled pose), with nn.MSELoss() (the mean over images and both angles);
fakes are rendered from cameras of G's own pose prior. The toy G is linear in z, the toy D is
quadratic in its input with a linear pose head, so every value and gradient below is computed on
paper and evaluated in numpy float64.
"""

import contextlib
import math

import numpy as np
import pytest
import torch

from training import cameras
from training.loss import GramLoss
from training.mixed_precision import MixedPrecision

DT = torch.float64
SHAPE = (3, 4, 4)
NUMEL = int(np.prod(SHAPE))
H_MEAN = math.pi / 2


class ToyGramG(torch.nn.Module):
    """ws = z M (one row), image = ws A; cameras from GRAM's face prior. Records its cameras and labels."""

    def __init__(self, z_dim=3, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.z_dim = self.w_dim = z_dim
        self.c_dim, self.num_ws, self.h_mean = 25, 1, H_MEAN
        self.M = torch.nn.Parameter(torch.randn([z_dim, z_dim], generator=gen, dtype=DT))
        self.A = torch.nn.Parameter(torch.randn([z_dim, NUMEL], generator=gen, dtype=DT) * 0.3)
        self.drawn, self.labels_seen = [], []

    def sample_labels(self, batch_size, device='cpu', generator=None):
        phi, theta = cameras.sample_gram_poses('gaussian', H_MEAN, math.pi / 2, 0.3, 0.155, batch_size, device=device,
                                               generator=generator)
        labels, pose = cameras.gram_pose_to_label(phi, theta, 12), torch.stack([phi, theta], dim=-1)
        self.drawn.append(dict(labels=labels, pose=pose, generator=generator))
        return labels, pose

    def mapping(self, z, c, update_emas=False):
        self.labels_seen.append(c.detach().clone())
        return (z @ self.M).unsqueeze(1)

    def synthesis(self, ws, c, update_emas=False):
        self.labels_seen.append(c.detach().clone())
        return (ws[:, 0] @ self.A).reshape(-1, *SHAPE)


class ToyPoseD(torch.nn.Module):
    """logit = sum(a x + q x^2 / 2) + b; pose = flatten(x) P + p0 (with return_pose)."""

    def __init__(self, seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(SHAPE, generator=gen, dtype=DT) * 0.2)
        self.q = torch.nn.Parameter(torch.randn(SHAPE, generator=gen, dtype=DT) * 0.1)
        self.b = torch.nn.Parameter(torch.tensor(0.3, dtype=DT))
        self.P = torch.nn.Parameter(torch.randn([NUMEL, 2], generator=gen, dtype=DT) * 0.2)
        self.p0 = torch.nn.Parameter(torch.tensor([1.4, 1.7], dtype=DT))

    def forward(self, img, c=None, update_emas=False, return_pose=False):
        logits = ((self.a * img + self.q * img.square() / 2).sum([1, 2, 3]) + self.b)[:, None]
        pose = img.flatten(1) @ self.P + self.p0
        return (logits, pose) if return_pose else logits


def make(N=4, pos_lambda=15.0, real_pos_lambda=30.0, r1_gamma=2.0):
    G, D = ToyGramG(), ToyPoseD()
    loss = GramLoss('cpu', G, D, r1_gamma=r1_gamma, pos_lambda=pos_lambda, real_pos_lambda=real_pos_lambda)
    gen = torch.Generator().manual_seed(7)
    real = torch.rand([N, *SHAPE], generator=gen, dtype=DT) * 2 - 1
    z = torch.randn([N, G.z_dim], generator=gen, dtype=DT)
    phi = math.pi / 2 + 0.2 * torch.randn([N], generator=gen)
    theta = math.pi / 2 + 0.5 * torch.randn([N], generator=gen)
    real_c = cameras.gram_pose_to_label(phi, theta, 12)
    gen_c = torch.full([N, 25], float('nan'), dtype=torch.float32)  # the loop's dataset labels: never used
    return G, D, loss, real, real_c, torch.stack([phi, theta], dim=-1).double().numpy(), z, gen_c


def softplus(x):
    return np.logaddexp(0, x)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_of(module):
    return {name: p.detach().numpy().copy() for name, p in module.named_parameters()}


def d_forward(Dp, x):
    """(logits [N], pose [N, 2]) of the toy D for images x [N, C, H, W]."""
    logits = (Dp['a'] * x + Dp['q'] * x ** 2 / 2).sum((1, 2, 3)) + Dp['b']
    return logits, x.reshape(len(x), -1) @ Dp['P'] + Dp['p0']


def run(loss, G, D, phase, real, real_c, z, gen_c, gain=1.0, seed=3):
    """Run one phase from a fixed global RNG state; -> (last losses as numpy, grads as numpy, sampled poses)."""
    G.drawn.clear()
    module = G if phase.startswith('G') else D
    module.requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    torch.manual_seed(seed)
    loss.accumulate_gradients(phase, real, real_c, z, gen_c, gain=gain, cur_nimg=0)
    module.requires_grad_(False)
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters() if p.grad is not None}
    losses = {name: value.numpy().reshape(-1) for name, value in loss.last_losses.items()}
    return losses, grads, [d['pose'].double().numpy() for d in G.drawn]

# ----------------------------------------------------------------------------------------------
# The G step.


@pytest.mark.parametrize('gain', [1.0, 0.25])
def test_G_loss_is_nonsaturating_plus_pose_regression_of_the_sampled_cameras_with_its_gradient(gain):
    G, D, loss, real, real_c, _, z, gen_c = make()
    Gp, Dp = numpy_of(G), numpy_of(D)
    losses, grads, [s] = run(loss, G, D, 'Gmain', real, real_c, z, gen_c, gain=gain)
    assert set(losses) == {'Gmain', 'Gpos'}
    w = z.numpy() @ Gp['M']
    x = (w @ Gp['A']).reshape(-1, *SHAPE)
    logits, pose = d_forward(Dp, x)
    np.testing.assert_allclose(losses['Gmain'], softplus(-logits), rtol=1e-12)
    np.testing.assert_allclose(losses['Gpos'], 15.0 * ((pose - s) ** 2).mean(1), rtol=1e-12)
    # L = mean softplus(-l) + 15 mean_{n,k} (p_nk - s_nk)^2, so dL/dx_n = (-sigmoid(-l_n) (a + q x_n)
    # + 15 sum_k (p_nk - s_nk) P[:, k]) / N, and dL/dA = sum_n w_n (x) dL/dx_n.
    N = len(x)
    dx = (-sigmoid(-logits)[:, None, None, None] * (Dp['a'] + Dp['q'] * x)
          + (15.0 * (pose - s) @ Dp['P'].T).reshape(x.shape)) / N
    np.testing.assert_allclose(grads['A'], gain * w.T @ dx.reshape(N, -1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads['M'], gain * z.numpy().T @ (dx.reshape(N, -1) @ Gp['A'].T), rtol=1e-9, atol=1e-12)


def test_Gboth_is_Gmain_and_Greg_does_nothing():
    G, D, loss, real, real_c, _, z, gen_c = make()
    main, main_grads, _ = run(loss, G, D, 'Gmain', real, real_c, z, gen_c)
    both, both_grads, _ = run(loss, G, D, 'Gboth', real, real_c, z, gen_c)
    assert set(both) == {'Gmain', 'Gpos'}
    for name in main_grads:
        np.testing.assert_array_equal(both_grads[name], main_grads[name])
    reg, reg_grads, drawn = run(loss, G, D, 'Greg', real, real_c, z, gen_c)
    assert reg == {} and reg_grads == {} and drawn == []

# ----------------------------------------------------------------------------------------------
# The D step.


def test_D_loss_has_every_GRAM_term_with_its_closed_form_and_gradient():
    G, D, loss, real, real_c, t, z, gen_c = make()
    Gp, Dp = numpy_of(G), numpy_of(D)
    losses, grads, [s] = run(loss, G, D, 'Dboth', real, real_c, z, gen_c)
    assert set(losses) == {'Dgen', 'Dpos_fake', 'Dreal', 'Dpos_real', 'Dr1'}
    xf = (z.numpy() @ Gp['M'] @ Gp['A']).reshape(-1, *SHAPE)
    xr = real.numpy()
    lf, pf = d_forward(Dp, xf)
    lr, pr = d_forward(Dp, xr)
    r1_grad = Dp['a'] + Dp['q'] * xr  # d logit / d x of the reals
    np.testing.assert_allclose(losses['Dgen'], softplus(lf), rtol=1e-12)
    np.testing.assert_allclose(losses['Dreal'], softplus(-lr), rtol=1e-12)
    np.testing.assert_allclose(losses['Dpos_fake'], 15.0 * ((pf - s) ** 2).mean(1), rtol=1e-12)
    np.testing.assert_allclose(losses['Dpos_real'], 30.0 * ((pr - t) ** 2).mean(1), rtol=1e-6)  # float32 labels
    np.testing.assert_allclose(losses['Dr1'], 2.0 / 2 * (r1_grad ** 2).sum((1, 2, 3)), rtol=1e-12)
    # Gradients of the whole D loss (each term a batch mean) with respect to the pose head and a.
    N = len(xr)
    flat_f, flat_r = xf.reshape(N, -1), xr.reshape(N, -1)
    dP = 15.0 * flat_f.T @ (pf - s) / N + 30.0 * flat_r.T @ (pr - t) / N
    dp0 = 15.0 * (pf - s).sum(0) / N + 30.0 * (pr - t).sum(0) / N
    np.testing.assert_allclose(grads['P'], dP, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(grads['p0'], dp0, rtol=1e-5, atol=1e-9)
    da = (sigmoid(lf)[:, None, None, None] * xf - sigmoid(-lr)[:, None, None, None] * xr + 2.0 * r1_grad).sum(0) / N
    np.testing.assert_allclose(grads['a'], da, rtol=1e-9, atol=1e-12)


def test_which_D_phase_has_which_term():
    G, D, loss, real, real_c, _, z, gen_c = make()
    assert set(run(loss, G, D, 'Dmain', real, real_c, z, gen_c)[0]) == {'Dgen', 'Dpos_fake', 'Dreal', 'Dpos_real'}
    assert set(run(loss, G, D, 'Dreg', real, real_c, z, gen_c)[0]) == {'Dr1'}
    G, D, loss, real, real_c, _, z, gen_c = make(real_pos_lambda=0)  # GRAM: "if self.real_pos_lambda > 0"
    assert set(run(loss, G, D, 'Dboth', real, real_c, z, gen_c)[0]) == {'Dgen', 'Dpos_fake', 'Dreal', 'Dr1'}
    G, D, loss, real, real_c, _, z, gen_c = make(r1_gamma=0)
    assert set(run(loss, G, D, 'Dboth', real, real_c, z, gen_c)[0]) == {'Dgen', 'Dpos_fake', 'Dreal', 'Dpos_real'}


def test_pose_terms_reduce_like_nn_MSELoss():
    G, D, loss, real, real_c, t, z, gen_c = make(N=3)
    losses, _, [s] = run(loss, G, D, 'Dmain', real, real_c, z, gen_c)
    Gp, Dp = numpy_of(G), numpy_of(D)
    _, pf = d_forward(Dp, (z.numpy() @ Gp['M'] @ Gp['A']).reshape(-1, *SHAPE))
    expected = torch.nn.MSELoss()(torch.from_numpy(pf), torch.from_numpy(s)).item() * 15.0
    assert losses['Dpos_fake'].mean() == pytest.approx(expected, rel=1e-12)

# ----------------------------------------------------------------------------------------------
# Cameras.


def test_fakes_use_cameras_of_the_prior_drawn_with_the_global_generator_never_gen_c():
    G, D, loss, real, real_c, _, z, gen_c = make()
    first, _, [s1] = run(loss, G, D, 'Gmain', real, real_c, z, gen_c, seed=5)
    assert G.drawn[0]['generator'] is None
    drawn_labels = G.drawn[0]['labels']
    assert all(torch.equal(seen, drawn_labels) for seen in G.labels_seen[-2:])  # mapping and synthesis
    assert all(torch.isfinite(value).all() for value in loss.last_losses.values())
    again, _, [s2] = run(loss, G, D, 'Gmain', real, real_c, z, gen_c, seed=5)  # the loop reseeds per step/phase/chunk
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(first['Gpos'], again['Gpos'])
    _, _, [s3] = run(loss, G, D, 'Gmain', real, real_c, z, gen_c, seed=6)
    assert not np.array_equal(s1, s3)


@pytest.mark.parametrize('theta', [math.pi / 2, 4.0, -1.2, 1.5 * math.pi - 1e-3])
def test_real_pose_is_the_labels_phi_theta_on_the_branch_of_the_prior(theta):
    # GRAM's own labels put the azimuth in (-pi/2, 3pi/2] (CARLA's atan2(-x, z) + pi/2), about h_mean = pi/2.
    G, D, loss, *_ = make()
    label = cameras.gram_pose_to_label(torch.tensor([1.1]), torch.tensor([theta]), 30)
    pose = loss.real_pose(label)
    np.testing.assert_allclose(pose.numpy(), [[1.1, theta]], atol=1e-5)


def _tiny_gram_pair():
    from training import networks_gram
    torch.manual_seed(0)
    G = networks_gram.GramGenerator(
        8, 8, representation_kwargs=dict(hidden_dim=16, hidden_dim_sample=16, center=(0, 0, -1.5)),
        renderer_kwargs=dict(num_samples=16, num_manifolds=8, levels_start=23, levels_end=8), ray_chunk=20)
    D = networks_gram.GramDiscriminator(img_size=8, max_channels=16)
    return G.train(), D.train()


@pytest.mark.parametrize('split', [2, 4, 3])
def test_patch_split_gives_the_gradients_of_the_whole_image(split):
    # GRAM's --patch_split: D sees the whole image; G back-propagates it in pixel ranges.
    grads = {}
    for patch_split in (None, split):
        G, D = _tiny_gram_pair()
        G.requires_grad_(True)
        D.requires_grad_(False)
        loss = GramLoss('cpu', G, D, r1_gamma=1, pos_lambda=15, real_pos_lambda=15, patch_split=patch_split)
        z = torch.randn([3, G.z_dim], generator=torch.Generator().manual_seed(1))
        c = torch.zeros([3, 25])
        torch.manual_seed(7)  # the fakes' cameras come from the global generator
        loss.accumulate_gradients('Gmain', real_img=None, real_c=c, gen_z=z, gen_c=c, gain=0.7, cur_nimg=0)
        grads[patch_split] = {name: p.grad.clone() for name, p in G.named_parameters() if p.grad is not None}
        assert set(loss.last_losses) == {'Gmain', 'Gpos'}
    assert grads[None].keys() == grads[split].keys() and len(grads[None]) > 40
    for name, whole in grads[None].items():
        scale = float(whole.abs().max())
        assert float((grads[split][name] - whole).abs().max()) <= 1e-5 * scale + 1e-10, name


def test_patch_split_must_be_a_positive_integer():
    G, D = _tiny_gram_pair()
    with pytest.raises(ValueError, match='patch_split'):
        GramLoss('cpu', G, D, patch_split=0)

# ----------------------------------------------------------------------------------------------
# AMP (GRAM's torch.cuda.amp GradScaler): scaled losses, unscaled gradients.


def _scaling_only(init_scale):
    """The loop's MixedPrecision with its loss scale on and autocast off: float64 stays float64, so the
    scaled and unscaled runs can be compared to rounding."""
    amp = MixedPrecision('cpu', enabled=True, init_scale=init_scale)
    amp.autocast = contextlib.nullcontext
    return amp


@pytest.mark.parametrize('phase', ['Gboth', 'Dboth'])
def test_scaled_losses_unscale_to_the_unscaled_gradients_R1_included(phase):
    # GRAM: "scaler.scale(d_loss).backward()"; the R1 input gradient of "scaler.scale(r_preds.sum())" times
    # "1./scaler.get_scale()"; "scaler.unscale_(optimizer_D)" before the clip. With s = 2**12 the gradients
    # before unscale_ are s times the plain ones and after it equal them. Were R1's input gradient left
    # scaled, the Dboth gradient would carry s^2 in its R1 part.
    G, D, loss, real, real_c, _, z, gen_c = make(r1_gamma=3.0)
    _, reference, _ = run(loss, G, D, phase, real, real_c, z, gen_c, gain=0.5)
    assert (phase == 'Gboth') or 'Dr1' in loss.last_losses
    loss.mixed_precision = amp = _scaling_only(2.0 ** 12)
    _, scaled, _ = run(loss, G, D, phase, real, real_c, z, gen_c, gain=0.5 * amp.loss_scale())
    module = G if phase == 'Gboth' else D
    for name, value in reference.items():
        np.testing.assert_allclose(scaled[name], value * 2.0 ** 12, rtol=1e-12, atol=1e-300, err_msg=name)
    for name, p in module.named_parameters():
        p.grad = torch.from_numpy(scaled[name].copy()) if name in scaled else None
    amp.unscale_(torch.optim.SGD(module.parameters(), lr=1.0))
    for name, p in module.named_parameters():
        if name in reference:
            np.testing.assert_allclose(p.grad.numpy(), reference[name], rtol=1e-12, atol=1e-300, err_msg=name)


def test_scaled_patch_split_gives_the_unscaled_gradients():
    # The chunked G step back-propagates the scaled image gradient part by part, each under autocast.
    grads = {}
    for amp in (None, _scaling_only(2.0 ** 10)):
        G, D = _tiny_gram_pair()
        G.requires_grad_(True)
        D.requires_grad_(False)
        loss = GramLoss('cpu', G, D, r1_gamma=1, pos_lambda=15, real_pos_lambda=15, patch_split=2)
        if amp is not None:
            loss.mixed_precision = amp
        z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1))
        c = torch.zeros([2, 25])
        torch.manual_seed(7)
        gain = 0.7 * (amp.loss_scale() if amp is not None else 1.0)
        loss.accumulate_gradients('Gmain', real_img=None, real_c=c, gen_z=z, gen_c=c, gain=gain, cur_nimg=0)
        if amp is not None:
            amp.unscale_(torch.optim.SGD([p for p in G.parameters() if p.grad is not None], lr=1.0))
        grads[amp is None] = {name: p.grad.clone() for name, p in G.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 40
    for name, plain in grads[True].items():
        assert float((grads[False][name] - plain).abs().max()) <= 1e-6 * float(plain.abs().max()) + 1e-12, name
