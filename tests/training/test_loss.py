"""training/loss.py against hand computations on toy networks whose gradients are known in closed form.

The toy generator maps z linearly to w (broadcast to every ws row) and synthesises the image as a
linear function of ws; the toy discriminator is D(x) = sum(a*x) + sum(q*x^2)/2 + b. Every expected
value below is derived on paper from the official StyleGAN2 loss rules (the official StyleGAN3
repository's training/loss.py) and evaluated in numpy float64 (scipy for the blur), never with
the autograd graph under test. The toys run in float64, so agreement is to ~1e-12; tolerances are 1e-9.
A final smoke test runs every phase with the real (tiny) StyleGAN2 networks.
"""

import numpy as np
import pytest
import scipy.ndimage
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from training import loss as loss_mod
from training.loss import StyleGAN2Loss

RTOL = 1e-9
DT = torch.float64

# ----------------------------------------------------------------------------------------------
# Toy networks.


class ToyG(torch.nn.Module):
    """ws = broadcast(M z); img = sum_k ws[:, k] @ A[k], reshaped to [C, H, W]. Records its calls."""

    def __init__(self, z_dim=3, num_ws=4, shape=(2, 6, 7), seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.z_dim = self.w_dim = z_dim
        self.c_dim = 0
        self.num_ws = num_ws
        self.shape = shape
        numel = int(np.prod(shape))
        self.M = torch.nn.Parameter(torch.randn([z_dim, z_dim], generator=gen, dtype=DT))
        self.A = torch.nn.Parameter(torch.randn([num_ws, z_dim, numel], generator=gen, dtype=DT) * 0.3)
        self.mapping_calls = []    # (z, update_emas, ws)
        self.synthesis_calls = []  # (ws, update_emas)

    def mapping(self, z, c, update_emas=False):
        ws = (z @ self.M.T).unsqueeze(1).repeat([1, self.num_ws, 1])
        self.mapping_calls.append((z.detach().clone(), update_emas, ws.detach().clone()))
        return ws

    def synthesis(self, ws, update_emas=False):
        self.synthesis_calls.append((ws.detach().clone(), update_emas))
        return torch.einsum('nkw,kwp->np', ws, self.A).reshape(ws.shape[0], *self.shape)


class ToyD(torch.nn.Module):
    """D(x) = sum(a*x) + sum(q*x^2)/2 + b, one logit per image. Records its inputs."""

    def __init__(self, shape=(2, 6, 7), seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=DT) * 0.2)
        self.q = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=DT) * 0.1)
        self.b = torch.nn.Parameter(torch.tensor(0.3, dtype=DT))
        self.calls = []  # (img, update_emas)

    def forward(self, img, c, update_emas=False):
        self.calls.append((img.detach().clone(), update_emas))
        return ((self.a * img).sum([1, 2, 3]) + (self.q * img.square()).sum([1, 2, 3]) / 2 + self.b)[:, None]


class ScaleAugment:
    """A deterministic stand-in for the ADA pipeline: multiplies by `scale`, records its inputs."""

    def __init__(self, scale):
        self.scale = scale
        self.inputs = []

    def __call__(self, img):
        self.inputs.append(img.detach().clone())
        return img * self.scale

# ----------------------------------------------------------------------------------------------
# Helpers.


def np_(t):
    return t.detach().cpu().numpy().astype(np.float64)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def make(N=5, seed=0, **loss_kwargs):
    G, D = ToyG(), ToyD()
    loss = StyleGAN2Loss('cpu', G, D, **loss_kwargs)
    loss.pl_mean = loss.pl_mean.to(DT)  # float64 toys: keep the running mean exact too
    gen = torch.Generator().manual_seed(100 + seed)
    real = torch.randn([N, *G.shape], generator=gen, dtype=DT)
    z = torch.randn([N, G.z_dim], generator=gen, dtype=DT)
    c = torch.zeros([N, 0], dtype=DT)
    return G, D, loss, real, z, c


def run(loss, phase, real, z, c, gain=1.0, cur_nimg=0):
    loss.accumulate_gradients(phase=phase, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=gain, cur_nimg=cur_nimg)


def grads(module):
    return {name: (None if p.grad is None else np_(p.grad)) for name, p in module.named_parameters()}


def zero(module):
    for p in module.parameters():
        p.grad = None


def toy_image(G, z):
    """Numpy oracle of ToyG without style mixing: flattened images [N, P] and w [N, w_dim]."""
    w = np_(z) @ np_(G.M).T
    return w @ np_(G.A).sum(0), w


def toy_logits(D, x_flat):
    a, q, b = np_(D.a).ravel(), np_(D.q).ravel(), float(D.b.detach())
    return x_flat @ a + (x_flat ** 2) @ q / 2 + b


def blur_oracle(x, sigma):
    """[N, C, H, W] float64 blurred with the 2-D kernel outer(t, t), zero padding (scipy)."""
    k = int(np.floor(3 * sigma))
    t = 2.0 ** (-(np.arange(-k, k + 1) / sigma) ** 2)
    t /= t.sum()
    kernel = np.outer(t, t)
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        for ch in range(x.shape[1]):
            out[n, ch] = scipy.ndimage.convolve(x[n, ch], kernel, mode='constant', cval=0.0)
    return out


class Reports:
    """Records the names passed to training_stats.report, in order."""

    def __init__(self, monkeypatch):
        self.names = []
        original = training_stats.report

        def report(name, value):
            self.names.append(name)
            return original(name, value)
        monkeypatch.setattr(loss_mod.training_stats, 'report', report)

# ----------------------------------------------------------------------------------------------
# (1) Gmain.


@pytest.mark.parametrize('gain', [1.0, 3.5])
def test_gmain_gradients_match_closed_form(gain):
    G, D, loss, real, z, c = make()
    run(loss, 'Gmain', real, z, c, gain=gain)

    N = z.shape[0]
    X, w = toy_image(G, z)
    logits = toy_logits(D, X)
    g = -sigmoid(-logits) / N * gain                      # d loss / d logit_i
    dX = np_(D.a).ravel() + np_(D.q).ravel() * X          # d logit_i / d x_i
    dA_k = np.einsum('i,iw,ip->wp', g, w, dX)             # identical for every ws row k
    dw = g[:, None] * (dX @ np_(G.A).sum(0).T)            # d loss / d w_i
    dM = dw.T @ np_(z)

    np.testing.assert_allclose(np_(G.A.grad), np.broadcast_to(dA_k, G.A.shape), rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(np_(G.M.grad), dM, rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(np_(loss.last_losses['Gmain']).ravel(), softplus(-logits), rtol=RTOL)
    # The generator pass of Gmain does not update EMAs.
    assert [call[1] for call in G.mapping_calls] == [False]
    assert [call[1] for call in G.synthesis_calls] == [False]
    assert [call[1] for call in D.calls] == [False]

# ----------------------------------------------------------------------------------------------
# (2) Dmain.


def test_dmain_gradients_match_closed_form():
    gain = 2.0
    G, D, loss, real, z, c = make(r1_gamma=10)
    G.requires_grad_(False)  # as the training loop does in D phases
    run(loss, 'Dmain', real, z, c, gain=gain)

    N = z.shape[0]
    Xf, _ = toy_image(G, z)
    Xr = np_(real).reshape(N, -1)
    lf, lr = toy_logits(D, Xf), toy_logits(D, Xr)
    hf = sigmoid(lf) / N * gain     # d softplus(l) / dl, averaged
    hr = -sigmoid(-lr) / N * gain   # d softplus(-l) / dl, averaged
    da = hf @ Xf + hr @ Xr
    dq = (hf @ Xf ** 2 + hr @ Xr ** 2) / 2
    db = hf.sum() + hr.sum()

    np.testing.assert_allclose(np_(D.a.grad).ravel(), da, rtol=RTOL)
    np.testing.assert_allclose(np_(D.q.grad).ravel(), dq, rtol=RTOL)
    np.testing.assert_allclose(float(D.b.grad), db, rtol=RTOL)
    np.testing.assert_allclose(np_(loss.last_losses['Dgen']).ravel(), softplus(lf), rtol=RTOL)
    np.testing.assert_allclose(np_(loss.last_losses['Dreal']).ravel(), softplus(-lr), rtol=RTOL)
    assert 'Dr1' not in loss.last_losses
    # Fakes are generated and judged with update_emas=True; reals with False.
    assert [call[1] for call in G.mapping_calls] == [True]
    assert [call[1] for call in G.synthesis_calls] == [True]
    assert [call[1] for call in D.calls] == [True, False]
    np.testing.assert_array_equal(np_(D.calls[1][0]), np_(real))

# ----------------------------------------------------------------------------------------------
# (3) R1.


@pytest.mark.parametrize('sigma, scale', [(0.0, 1.0), (0.5, 1.0), (0.9, 1.7)])
def test_r1_penalty_and_gradients_match_closed_form(sigma, scale):
    """The gradient is taken w.r.t. the real images given to run_D, i.e. before blur and augmentation.

    With y = s * B x (B: the symmetric, zero-padded blur, so B^T = B), grad_x D = s B (a + q*y);
    penalty_i = |grad_x D|^2; d penalty_i / da = 2 s B grad_i and d penalty_i / dq = 2 s (B grad_i) * y_i.
    """
    gain, gamma = 1.5, 3.0
    G, D, loss, real, z, c = make(r1_gamma=gamma, augment_pipe=ScaleAugment(scale),
                                  blur_init_sigma=2 * sigma, blur_fade_kimg=1)
    cur_nimg = 500  # halfway through the fade: sigma = blur_init_sigma / 2
    assert loss.blur_sigma(cur_nimg) == pytest.approx(sigma)
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    run(loss, 'Dreg', real, z, c, gain=gain, cur_nimg=cur_nimg)
    collector.update()

    N = real.shape[0]
    B = (lambda v: blur_oracle(v, sigma)) if sigma > 0 else (lambda v: v)
    a, q = np_(D.a), np_(D.q)
    y = scale * B(np_(real))
    grad_x = scale * B(a + q * y)
    penalty = (grad_x ** 2).sum((1, 2, 3))
    Bg = B(grad_x)
    da = gamma / 2 * gain / N * (2 * scale * Bg).sum(0)
    dq = gamma / 2 * gain / N * (2 * scale * Bg * y).sum(0)

    np.testing.assert_allclose(np_(D.calls[0][0]), y, rtol=RTOL)
    np.testing.assert_allclose(np_(loss.last_losses['Dr1']), penalty * gamma / 2, rtol=RTOL)
    np.testing.assert_allclose(collector.mean('Loss/r1_penalty'), penalty.mean(), rtol=RTOL)
    np.testing.assert_allclose(collector.mean('Loss/D/reg'), penalty.mean() * gamma / 2, rtol=RTOL)
    np.testing.assert_allclose(np_(D.a.grad), da, rtol=RTOL)
    np.testing.assert_allclose(np_(D.q.grad), dq, rtol=RTOL)
    assert D.b.grad is None or float(D.b.grad) == 0  # the bias does not affect grad_x D
    assert G.mapping_calls == []                    # Dreg alone needs no fakes
    assert 'Dreal' not in loss.last_losses


def test_r1_uses_no_weight_gradients_context(monkeypatch):
    entered = []
    original = conv2d_gradfix.no_weight_gradients

    def spy(disable=True):
        entered.append(disable)
        return original(disable)
    monkeypatch.setattr(loss_mod.conv2d_gradfix, 'no_weight_gradients', spy)
    G, D, loss, real, z, c = make(pl_weight=1.0, pl_no_weight_grad=True)
    run(loss, 'Dreg', real, z, c)
    run(loss, 'Greg', real, z, c)
    assert entered == [True, True]
    entered.clear()
    loss.pl_no_weight_grad = False
    run(loss, 'Greg', real, z, c)
    assert entered == [False]

# ----------------------------------------------------------------------------------------------
# (4) Path length.


def test_path_length_matches_closed_form(monkeypatch):
    """img_i = sum_k A_k^T ws_ik, so d(sum img*n)/d ws_ik = A_k n_i exactly, independent of ws."""
    noises = []
    original = torch.randn_like

    def capture(t, *args, **kwargs):
        out = original(t, *args, **kwargs)
        noises.append(out.detach().clone())
        return out
    monkeypatch.setattr(torch, 'randn_like', capture)

    gain, pl_weight, decay, m0 = 2.0, 0.7, 0.3, 0.8
    G, D, loss, real, z, c = make(N=6, pl_weight=pl_weight, pl_decay=decay, pl_batch_shrink=2)
    loss.load_state_dict({'pl_mean': torch.tensor(m0, dtype=DT)})
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)

    m = m0
    for step in range(2):
        noises.clear()
        zero(G)
        run(loss, 'Greg', real, z, c, gain=gain)
        collector.update()
        assert len(noises) == 1
        H, W = G.shape[1:]
        B = z.shape[0] // 2
        assert noises[0].shape == (B, *G.shape)
        np.testing.assert_array_equal(np_(G.mapping_calls[-1][0]), np_(z[:B]))

        A = np_(G.A)                                          # [K, w, P]
        K = A.shape[0]
        n = np_(noises[0]).reshape(B, -1) / np.sqrt(H * W)    # [B, P]
        u = np.einsum('kwp,ip->ikw', A, n)                    # d(sum img*n) / d ws
        lengths = np.sqrt((u ** 2).sum(2).mean(1))
        m_new = m + decay * (lengths.mean() - m)
        penalty = (lengths - m_new) ** 2

        np.testing.assert_allclose(float(loss.pl_mean), m_new, rtol=RTOL)
        np.testing.assert_allclose(collector.mean('Loss/pl_penalty'), penalty.mean(), rtol=RTOL)
        np.testing.assert_allclose(collector.mean('Loss/G/reg'), penalty.mean() * pl_weight, rtol=RTOL)
        np.testing.assert_allclose(np_(loss.last_losses['Gpl']), penalty * pl_weight, rtol=RTOL)

        # d len_i / dA[k,w,p] = u_ikw n_ip / (K len_i); the (non-detached) mean moves with decay/B of it.
        dlen = np.einsum('ikw,ip->ikwp', u, n) / (K * lengths[:, None, None, None])
        dm = decay * dlen.mean(0)
        dA = pl_weight * gain * 2 / B * np.einsum('i,ikwp->kwp', lengths - m_new, dlen - dm)
        np.testing.assert_allclose(np_(G.A.grad), dA, rtol=RTOL, atol=1e-14)
        # Lengths do not depend on the mapping for a linear synthesis.
        assert G.M.grad is None or np.abs(np_(G.M.grad)).max() == 0
        m = m_new

# ----------------------------------------------------------------------------------------------
# (5) Style mixing.


def test_style_mixing_prob_one_always_mixes_with_uniform_cutoff():
    G, D, loss, real, z, c = make(N=4, style_mixing_prob=1.0)
    num_ws = G.num_ws
    cutoffs = []
    torch.manual_seed(0)
    for _ in range(300):
        G.mapping_calls.clear()
        with torch.no_grad():
            _img, ws = loss.run_G(z, c, update_emas=True)
        (z1, ema1, ws1), (z2, ema2, ws2) = G.mapping_calls
        assert (ema1, ema2) == (True, False)              # the second z never updates w_avg
        assert not torch.equal(z1, z2)
        assert torch.equal(z1, z)
        from_first = [torch.equal(ws[:, k], ws1[:, k]) for k in range(num_ws)]
        from_second = [torch.equal(ws[:, k], ws2[:, k]) for k in range(num_ws)]
        cutoff = from_first.index(False)
        assert from_first == [k < cutoff for k in range(num_ws)]     # one cutoff for the whole batch
        assert from_second == [k >= cutoff for k in range(num_ws)]
        cutoffs.append(cutoff)
        # The synthesis sees the mixed ws.
        assert torch.equal(G.synthesis_calls[-1][0], ws)
    counts = np.bincount(cutoffs, minlength=num_ws + 1)
    assert counts[0] == 0 and counts[num_ws] == 0
    assert all(counts[k] > 60 for k in range(1, num_ws))  # uniform over [1, num_ws): expected 100 each


def test_style_mixing_prob_zero_never_mixes_and_half_mixes_half():
    G, D, loss, real, z, c = make(N=4, style_mixing_prob=0)
    for _ in range(20):
        G.mapping_calls.clear()
        _img, ws = loss.run_G(z, c)
        assert len(G.mapping_calls) == 1
        assert torch.equal(ws, G.mapping_calls[0][2])

    loss.style_mixing_prob = 0.5
    torch.manual_seed(1)
    mixed = 0
    trials = 1000
    for _ in range(trials):
        with torch.no_grad():
            _img, ws = loss.run_G(z, c)
        mixed += int(not torch.equal(ws[:, -1], ws[:, 0]))
    assert abs(mixed / trials - 0.5) < 0.06  # 4 standard deviations

# ----------------------------------------------------------------------------------------------
# (6) Blur.


def test_blur_sigma_schedule():
    loss = StyleGAN2Loss('cpu', ToyG(), ToyD(), blur_init_sigma=10, blur_fade_kimg=200)
    assert loss.blur_sigma(0) == 10
    assert loss.blur_sigma(50_000) == pytest.approx(7.5)
    assert loss.blur_sigma(100_000) == pytest.approx(5)
    assert loss.blur_sigma(200_000) == 0
    assert loss.blur_sigma(10 ** 9) == 0
    assert StyleGAN2Loss('cpu', None, None, blur_init_sigma=10, blur_fade_kimg=0).blur_sigma(0) == 0
    assert StyleGAN2Loss('cpu', None, None, blur_init_sigma=0, blur_fade_kimg=100).blur_sigma(0) == 0


@pytest.mark.parametrize('sigma', [0.4, 1.0, 2.5, 10.0])
def test_blur_filter_taps(sigma):
    k = int(np.floor(3 * sigma))
    taps = 2.0 ** (-(np.arange(-k, k + 1) / sigma) ** 2)
    f = loss_mod.blur_filter(sigma)
    assert f.shape == (2 * k + 1,)
    np.testing.assert_allclose(np_(f), taps / taps.sum(), rtol=1e-6)


def test_blur_filter_off_below_one_third():
    assert loss_mod.blur_filter(0.33) is None
    assert loss_mod.blur_filter(0) is None
    x = torch.randn([1, 1, 5, 5], dtype=DT)
    assert loss_mod.blur(x, 0.2) is x


@pytest.mark.parametrize('sigma', [0.5, 1.0])
def test_blur_is_applied_to_real_and_fake_D_inputs_before_augment(sigma):
    aug = ScaleAugment(1.0)
    G, D, loss, real, z, c = make(augment_pipe=aug, blur_init_sigma=sigma, blur_fade_kimg=4)
    cur_nimg = 1000  # sigma * 0.75
    s = 0.75 * sigma
    run(loss, 'Dmain', real, z, c, cur_nimg=cur_nimg)
    X, _ = toy_image(G, z)
    fake = X.reshape(z.shape[0], *G.shape)
    # The augment pipe (hence D) receives the blurred images, fakes first, then reals.
    np.testing.assert_allclose(np_(aug.inputs[0]), blur_oracle(fake, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(np_(aug.inputs[1]), blur_oracle(np_(real), s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(np_(D.calls[1][0]), blur_oracle(np_(real), s), rtol=RTOL, atol=1e-14)
    # After the fade, D sees the images untouched.
    D.calls.clear()
    run(loss, 'Gmain', real, z, c, cur_nimg=4000)
    np.testing.assert_allclose(np_(D.calls[0][0]), fake, rtol=RTOL)

# ----------------------------------------------------------------------------------------------
# (7) Phase rules.


def test_dreg_is_noop_when_r1_gamma_is_zero_and_dboth_collapses(monkeypatch):
    reports = Reports(monkeypatch)
    G, D, loss, real, z, c = make(r1_gamma=0)
    run(loss, 'Dreg', real, z, c)
    assert all(v is None for v in grads(D).values()) and all(v is None for v in grads(G).values())
    assert D.calls == [] and G.mapping_calls == [] and reports.names == [] and loss.last_losses == {}

    run(loss, 'Dboth', real, z, c)
    both = grads(D)
    zero(D)
    torch.manual_seed(0)
    run(loss, 'Dmain', real, z, c)
    for name, value in grads(D).items():
        np.testing.assert_allclose(both[name], value, rtol=RTOL)
    assert 'Dr1' not in loss.last_losses


def test_greg_is_noop_when_pl_weight_is_zero_and_gboth_collapses(monkeypatch):
    reports = Reports(monkeypatch)
    G, D, loss, real, z, c = make(pl_weight=0)
    run(loss, 'Greg', real, z, c)
    assert all(v is None for v in grads(G).values())
    assert G.mapping_calls == [] and reports.names == [] and float(loss.pl_mean) == 0

    run(loss, 'Gboth', real, z, c)
    both = grads(G)
    zero(G)
    zero(D)
    run(loss, 'Gmain', real, z, c)
    for name, value in grads(G).items():
        np.testing.assert_allclose(both[name], value, rtol=RTOL)
    assert 'Gpl' not in loss.last_losses


def test_both_phases_equal_main_plus_reg(monkeypatch):
    G, D, loss, real, z, c = make(r1_gamma=4.0, pl_weight=0.5)
    noise = torch.randn([z.shape[0] // 2, *G.shape], dtype=DT)
    monkeypatch.setattr(torch, 'randn_like', lambda t, *a, **k: noise.clone())
    for main, reg, both, net in [('Dmain', 'Dreg', 'Dboth', D), ('Gmain', 'Greg', 'Gboth', G)]:
        zero(G), zero(D)
        loss.load_state_dict({'pl_mean': torch.tensor(0.1)})
        run(loss, main, real, z, c)
        run(loss, reg, real, z, c)
        separate = grads(net)
        zero(G), zero(D)
        loss.load_state_dict({'pl_mean': torch.tensor(0.1)})
        run(loss, both, real, z, c)
        for name, value in grads(net).items():
            np.testing.assert_allclose(value, separate[name], rtol=RTOL, atol=1e-14)


def test_unknown_phase_is_rejected():
    G, D, loss, real, z, c = make()
    with pytest.raises(ValueError, match='Gmainn'):
        run(loss, 'Gmainn', real, z, c)

# ----------------------------------------------------------------------------------------------
# (8) Gain.


@pytest.mark.parametrize('phase', ['Gmain', 'Greg', 'Dmain', 'Dreg'])
def test_gain_scales_gradients_linearly(phase):
    net_grads = []
    for gain in (1.0, 2.5):
        G, D, loss, real, z, c = make(r1_gamma=2.0, pl_weight=1.0, style_mixing_prob=0.5)
        torch.manual_seed(3)
        run(loss, phase, real, z, c, gain=gain)
        net_grads.append({**{'G.' + k: v for k, v in grads(G).items()}, **{'D.' + k: v for k, v in grads(D).items()}})
    for name, g1 in net_grads[0].items():
        if g1 is None:
            assert net_grads[1][name] is None
        else:
            np.testing.assert_allclose(net_grads[1][name], 2.5 * g1, rtol=RTOL, atol=1e-14)

# ----------------------------------------------------------------------------------------------
# (9) Statistics.


def test_reported_statistics_values_and_order(monkeypatch):
    reports = Reports(monkeypatch)
    G, D, loss, real, z, c = make(r1_gamma=2.0, pl_weight=1.0)
    collector = training_stats.Collector(regex='Loss/.*', keep_previous=False)

    run(loss, 'Gboth', real, z, c)
    assert reports.names == ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss', 'Loss/pl_penalty', 'Loss/G/reg']
    collector.update()
    X, _ = toy_image(G, z)
    lf = toy_logits(D, X)
    N = z.shape[0]
    np.testing.assert_allclose(collector.mean('Loss/scores/fake'), lf.mean(), rtol=RTOL)
    np.testing.assert_allclose(collector.mean('Loss/signs/fake'), np.sign(lf).mean(), rtol=RTOL)
    np.testing.assert_allclose(collector.mean('Loss/G/loss'), softplus(-lf).mean(), rtol=RTOL)
    assert collector.num('Loss/G/loss') == N and collector.num('Loss/pl_penalty') == N // 2

    reports.names.clear()
    run(loss, 'Dboth', real, z, c)
    assert reports.names == ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/scores/real', 'Loss/signs/real',
                             'Loss/D/loss', 'Loss/r1_penalty', 'Loss/D/reg']
    collector.update()
    lr = toy_logits(D, np_(real).reshape(N, -1))
    np.testing.assert_allclose(collector.mean('Loss/scores/real'), lr.mean(), rtol=RTOL)
    np.testing.assert_allclose(collector.mean('Loss/D/loss'), (softplus(lf) + softplus(-lr)).mean(), rtol=RTOL)
    assert collector.num('Loss/D/loss') == N

    reports.names.clear()
    run(loss, 'Dmain', real, z, c)
    run(loss, 'Dreg', real, z, c)
    run(loss, 'Gmain', real, z, c)
    run(loss, 'Greg', real, z, c)
    assert reports.names == ['Loss/scores/fake', 'Loss/signs/fake', 'Loss/scores/real', 'Loss/signs/real',
                             'Loss/D/loss',
                             'Loss/scores/real', 'Loss/signs/real', 'Loss/r1_penalty', 'Loss/D/reg',
                             'Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss',
                             'Loss/pl_penalty', 'Loss/G/reg']

# ----------------------------------------------------------------------------------------------
# (11) Extension hooks, resume state, non-finite detection.


class ExtendedLoss(StyleGAN2Loss):
    """Adds lam * mean(img^2) to G (main), a per-image term on real logits to D, and a G 'reg' term."""

    lam = 0.25

    @property
    def G_reg_enabled(self):
        return True  # keeps Greg alive with pl_weight=0 for the extra 'reg' term

    def extra_G_terms(self, stage, ctx):
        if stage == 'main':
            return {'G/img_energy': self.lam * ctx.gen_img.square().mean([1, 2, 3])}
        return {'G/ws_norm': ctx.gen_z.square().sum(1) * 0 + self.G.M.square().sum()}

    def extra_D_terms(self, stage, ctx):
        if stage == 'real':
            return {'D/logit_sq': ctx.real_logits.square()}
        return {}


def test_extension_hooks_add_and_report_terms(monkeypatch):
    reports = Reports(monkeypatch)
    gain = 1.5
    G, D, base, real, z, c = make(r1_gamma=0)
    run(base, 'Gmain', real, z, c, gain=gain)
    base_G = np_(G.A.grad)
    zero(G), zero(D)
    run(base, 'Dmain', real, z, c, gain=gain)
    base_D = np_(D.a.grad)
    zero(G), zero(D)
    reports.names.clear()

    loss = ExtendedLoss('cpu', G, D, r1_gamma=0)
    run(loss, 'Gmain', real, z, c, gain=gain)
    N = z.shape[0]
    X, w = toy_image(G, z)
    P = X.shape[1]
    dA_k = np.einsum('iw,ip->wp', w, 2 * ExtendedLoss.lam * X / P) / N * gain
    np.testing.assert_allclose(np_(G.A.grad) - base_G, np.broadcast_to(dA_k, G.A.shape), rtol=1e-8, atol=1e-13)
    assert reports.names[-1] == 'Loss/G/img_energy'
    np.testing.assert_allclose(np_(loss.last_losses['G/img_energy']), ExtendedLoss.lam * (X ** 2).mean(1), rtol=RTOL)

    zero(G), zero(D)
    run(loss, 'Dmain', real, z, c, gain=gain)
    Xr = np_(real).reshape(N, -1)
    lr = toy_logits(D, Xr)
    np.testing.assert_allclose(np_(D.a.grad).ravel() - base_D.ravel(), (2 * lr) @ Xr / N * gain, rtol=1e-8, atol=1e-13)
    assert reports.names[-1] == 'Loss/D/logit_sq'

    # pl_weight = 0, but the subclass keeps Greg for its own term; the path length stays off.
    zero(G)
    run(loss, 'Greg', real, z, c, gain=gain)
    np.testing.assert_allclose(np_(G.M.grad), 2 * np_(G.M) * gain, rtol=RTOL)
    assert G.A.grad is None and 'Gpl' not in loss.last_losses and float(loss.pl_mean) == 0
    assert reports.names[-1] == 'Loss/G/ws_norm'


def test_run_synthesis_override_receives_the_label():
    seen = []

    class CameraLoss(StyleGAN2Loss):
        def run_synthesis(self, ws, c, update_emas=False):
            seen.append(c)
            return super().run_synthesis(ws, c, update_emas=update_emas)

    G, D, _loss, real, z, c = make()
    c = torch.randn([z.shape[0], 0], dtype=DT)
    loss = CameraLoss('cpu', G, D, pl_weight=1.0)
    run(loss, 'Gboth', real, z, c)
    assert len(seen) == 2 and seen[0] is c


def test_state_dict_round_trip():
    G, D, loss, real, z, c = make(pl_weight=1.0)
    run(loss, 'Greg', real, z, c)
    state = loss.state_dict()
    assert set(state) == {'pl_mean'} and state['pl_mean'].device.type == 'cpu'
    assert float(state['pl_mean']) == float(loss.pl_mean) != 0
    other = StyleGAN2Loss('cpu', G, D, pl_weight=1.0)  # float32 buffer, as in training
    other.load_state_dict(state)
    assert other.pl_mean.dtype == torch.float32
    assert float(other.pl_mean) == pytest.approx(float(loss.pl_mean), rel=1e-7)
    state['pl_mean'].fill_(123)  # a copy, not a view of the live buffer
    assert float(loss.pl_mean) != 123
    with pytest.raises(KeyError, match='pl_mean'):
        other.load_state_dict({'pl_avg': torch.tensor(1.0)})


def test_nonfinite_terms_are_sticky_until_read():
    G, D, loss, real, z, c = make()
    run(loss, 'Gmain', real, z, c)
    assert loss.nonfinite_terms() == []
    with torch.no_grad():
        D.b.fill_(float('nan'))
    run(loss, 'Gmain', real, z, c)
    with torch.no_grad():
        D.b.fill_(0.0)
    run(loss, 'Gmain', real, z, c)  # finite again, but the NaN in between is remembered
    assert bool(torch.isfinite(loss.last_losses['Gmain']).all())
    run(loss, 'Dmain', real, z, c)
    assert set(loss.last_losses) == {'Dgen', 'Dreal'}  # only the latest call's losses
    assert loss.nonfinite_terms() == ['Gmain/Gmain']  # <phase>/<loss>
    assert loss.nonfinite_terms() == []

# ----------------------------------------------------------------------------------------------
# (10) Smoke test with the real networks.


@pytest.mark.parametrize('gradfix', [False, True])
def test_every_phase_runs_with_real_stylegan2_networks(gradfix, monkeypatch):
    from training.networks_stylegan2 import Discriminator, Generator
    monkeypatch.setattr(conv2d_gradfix, 'enabled', gradfix)
    torch.manual_seed(0)
    c_dim = 3
    # pl_no_weight_grad needs the non-fused modulated convolutions during training (as the official
    # stylegan2 config pairs it with fused_modconv_default='inference_only'): with grouped convs the
    # styles enter through the conv weights, whose gradients it switches off.
    G = Generator(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=16, img_channels=3, channel_base=256,
                  channel_max=32, num_fp16_res=0, mapping_kwargs=dict(num_layers=2),
                  fused_modconv_default='inference_only' if gradfix else True)
    D = Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=256, channel_max=32,
                      num_fp16_res=0)
    loss = StyleGAN2Loss('cpu', G, D, r1_gamma=1.0, style_mixing_prob=0.9, pl_weight=2.0,
                         pl_no_weight_grad=gradfix, blur_init_sigma=1.0, blur_fade_kimg=1)
    N = 4
    real = torch.rand([N, 3, 16, 16]) * 2 - 1
    c = torch.eye(c_dim)[torch.arange(N) % c_dim]
    w_avg = G.mapping.w_avg.clone()
    for phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth']:
        net, other = (G, D) if phase.startswith('G') else (D, G)
        net.requires_grad_(True)
        other.requires_grad_(False)
        zero(G), zero(D)
        z = torch.randn([N, G.z_dim])
        run(loss, phase, real, z, c, gain=2.0, cur_nimg=200)
        got = [p.grad for p in net.parameters() if p.grad is not None]
        assert len(got) > 0, phase
        assert all(bool(torch.isfinite(g).all()) for g in got), phase
        assert any(float(g.abs().max()) > 0 for g in got), phase
        assert all(p.grad is None for p in other.parameters()), phase
    assert float(loss.pl_mean) > 0
    assert not torch.equal(G.mapping.w_avg, w_avg)  # Dmain generates with update_emas=True
    assert loss.nonfinite_terms() == []
    assert set(loss.last_losses) == {'Dgen', 'Dreal', 'Dr1'}  # the latest phase, Dboth
