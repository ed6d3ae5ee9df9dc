"""Numerics of training/networks_stylegan2.py against independent float64 oracles.

Every expected value is computed here in numpy float64 from the official StyleGAN2-ADA / StyleGAN3
rules (as the official StyleGAN3 repository's training/networks_stylegan2.py and torch_utils/ops
compute them): convolutions with scipy.signal.correlate2d /
convolve2d and explicit loops, never with torch_utils.ops or with outputs captured from our own code.
The modules are built in float32; their parameters and buffers are copied to float64 for the oracle
(except `resample_filter`, which the oracle rebuilds from [1,3,3,1] itself).

Tolerance: float32 has unit roundoff 6e-8. The layers here sum at most a few hundred products per
output and the deepest network stacks about a dozen layers, so the accumulated float32 error stays
below ~1e-5 of the output magnitude (observed: ~1e-6). RTOL = 1e-4 of the largest |expected| value
leaves a 10x margin, while any rule violation (flipped kernel, one-pixel shift, wrong gain, wrong
w index) changes the output by O(1) of its magnitude.
"""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d

from training import networks_stylegan2 as ns

RTOL = 1e-4
SQRT2 = np.sqrt(2)
SQRT_HALF = np.sqrt(0.5)

# ----------------------------------------------------------------------------------------------
# Oracle helpers (numpy float64).


def oracle_filter(taps=(1, 3, 3, 1)):
    """setup_filter: a 1-D filter with < 8 taps becomes its outer product, normalised to sum 1."""
    f = np.asarray(taps, dtype=np.float64)
    f = np.outer(f, f)
    return f / f.sum()


FILTER = oracle_filter()


def lrelu(x):
    """'lrelu' activation: leaky ReLU with negative slope 0.2 (its default gain sqrt(2) is applied separately)."""
    return np.where(x >= 0, x, 0.2 * x)


def bias_act_ref(x, b=None, act='linear', gain=1.0, clamp=None):
    """bias_act: clamp(act(x + b broadcast along dim 1) * gain, -clamp, +clamp)."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == 'lrelu':
        x = lrelu(x)
    else:
        assert act == 'linear'
    x = x * gain
    if clamp is not None:
        x = np.clip(x, -clamp, clamp)
    return x


def fc_ref(x, weight, bias, lr_mul=1.0, act='linear'):
    """FullyConnectedLayer: act(x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul) * def_gain(act)."""
    y = x @ (weight * (lr_mul / np.sqrt(weight.shape[1]))).T
    if bias is not None:
        y = y + bias * lr_mul
    return bias_act_ref(y, act=act, gain=SQRT2 if act == 'lrelu' else 1.0)


def normalize_ref(x):
    """normalize_2nd_moment: x / sqrt(mean(x^2 over dim 1) + 1e-8)."""
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def zero_insert(x, up):
    """upfirdn2d step 1: insert up-1 zeros after every sample along H and W."""
    out = np.zeros(x.shape[:-2] + (x.shape[-2] * up, x.shape[-1] * up))
    out[..., ::up, ::up] = x
    return out


def pad_hw(x, lo, hi):
    """Zero-pad the last two axes by `lo` before and `hi` after."""
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(lo, hi), (lo, hi)])


def fir_valid(x, f):
    """upfirdn2d step 3: TRUE 2-D convolution of every channel of x [C,H,W] with f, 'valid' mode."""
    return np.stack([convolve2d(ch, f, mode='valid') for ch in x])


def conv_valid(x, w, true_conv):
    """Dense conv of one sample x [I,H,W] with w [O,I,kh,kw], 'valid' mode.
    true_conv=False: correlation, like F.conv2d (flip_weight=True); True: flipped kernel (flip_weight=False)."""
    op = convolve2d if true_conv else correlate2d
    out = np.zeros((w.shape[0], x.shape[1] - w.shape[2] + 1, x.shape[2] - w.shape[3] + 1))
    for o in range(w.shape[0]):
        for i in range(w.shape[1]):
            out[o] += op(x[i], w[o, i], mode='valid')
    return out


def conv2d_resample_ref(x, w, up=1, down=1, padding=0, flip_weight=True, f=FILTER):
    """conv2d_resample for one sample x [I,H,W] (padding w.r.t. the upsampled image).
    up>1: zero-insert, pad [p + (fw+up-1)//2, p + (fw-up)//2], FIR with f*up^2, then conv with w.
    down>1: pad [p + (fw-down+1)//2, p + (fw-down)//2], FIR with f, conv with w, keep every down-th sample.
    flip_weight=True = correlation, False = true convolution."""
    fw = f.shape[-1]
    if up > 1:
        x = zero_insert(x, up)
        x = pad_hw(x, padding + (fw + up - 1) // 2, padding + (fw - up) // 2)
        x = fir_valid(x, f * up ** 2)
    elif down > 1:
        x = pad_hw(x, padding + (fw - down + 1) // 2, padding + (fw - down) // 2)
        x = fir_valid(x, f)
    else:
        x = pad_hw(x, padding, padding)
    x = conv_valid(x, w, true_conv=not flip_weight)
    if down > 1:
        x = x[:, ::down, ::down]
    return x


def upsample2d_ref(img, f=FILTER):
    """upfirdn2d.upsample2d(up=2): zero-insert, pad [2,1], true convolution with f*4, 'valid' -> 2H."""
    return np.stack([fir_valid(pad_hw(zero_insert(x, 2), 2, 1), f * 4) for x in img])


def downsample2d_ref(img, f=FILTER):
    """upfirdn2d.downsample2d(down=2): pad [1,1], filter (gain 1, 'valid'), keep every 2nd sample -> H/2."""
    return np.stack([fir_valid(pad_hw(x, 1, 1), f)[:, ::2, ::2] for x in img])


def modulated_conv2d_ref(x, weight, styles, noise=None, up=1, padding=0, demodulate=True, flip_weight=True):
    """modulated_conv2d: w'[n,o,i] = weight[o,i] * styles[n,i]; if demodulate, w' *= 1/sqrt(sum_{i,kh,kw} w'^2 + 1e-8);
    out[n] = conv2d_resample(x[n], w'[n]) + noise."""
    out = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][None, :, None, None]
        if demodulate:
            wn = wn / np.sqrt(np.sum(wn ** 2, axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        out.append(conv2d_resample_ref(x[n], wn, up=up, padding=padding, flip_weight=flip_weight))
    out = np.stack(out)
    return out + noise if noise is not None else out


def mbstd_ref(x, group_size, num_channels):
    """MinibatchStdLayer: G = min(group_size, N), M = N // G; sample n = g*M + m (from the reshape [G, M, ...]).
    For each (m, f): population std over g of channels f*c..(f+1)*c (sqrt(var + 1e-8)), averaged over (c,H,W);
    sample n gets the value of m = n % M, appended as num_channels extra channels."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    M = N // G
    c = C // num_channels
    stat = np.zeros((M, num_channels))
    for m in range(M):
        members = np.stack([x[g * M + m] for g in range(G)])    # [G, C, H, W]
        for f in range(num_channels):
            v = members[:, f * c:(f + 1) * c]
            stat[m, f] = np.mean(np.sqrt(np.mean((v - v.mean(axis=0)) ** 2, axis=0) + 1e-8))
    extra = np.zeros((N, num_channels, H, W))
    for n in range(N):
        extra[n] = stat[n % M][:, None, None]
    return np.concatenate([x, extra], axis=1)


# Layer oracles reading float64 copies of a module's tensors (P = {name: array}).


def params64(module):
    return {k: v.detach().to(torch.float64).numpy().copy() for k, v in module.state_dict().items()}


def conv2d_layer_ref(P, pre, x, up=1, down=1, act='linear', gain=1.0, conv_clamp=None):
    """Conv2dLayer: weight / sqrt(in*k^2), padding k//2, flip_weight = (up == 1), then
    bias_act(act, gain = def_gain*gain, clamp = conv_clamp*gain)."""
    w = P[pre + 'weight']
    k = w.shape[-1]
    w = w / np.sqrt(w.shape[1] * k * k)
    y = np.stack([conv2d_resample_ref(xn, w, up=up, down=down, padding=k // 2, flip_weight=(up == 1)) for xn in x])
    return bias_act_ref(y, P.get(pre + 'bias'), act=act, gain=(SQRT2 if act == 'lrelu' else 1.0) * gain,
                        clamp=conv_clamp * gain if conv_clamp is not None else None)


def synthesis_layer_ref(P, pre, x, w, up=1, noise_mode='const', gain=1.0, conv_clamp=None):
    """SynthesisLayer: styles = affine(w); modulated conv (demodulated, padding k//2, flip_weight = (up == 1));
    + noise_const * noise_strength ('const') or nothing ('none'); + bias; lrelu * sqrt(2)*gain; clamp conv_clamp*gain."""
    styles = fc_ref(w, P[pre + 'affine.weight'], P[pre + 'affine.bias'])
    weight = P[pre + 'weight']
    noise = None
    if noise_mode == 'const' and pre + 'noise_const' in P:
        noise = P[pre + 'noise_const'] * P[pre + 'noise_strength']
    y = modulated_conv2d_ref(x, weight, styles, noise=noise, up=up, padding=weight.shape[-1] // 2,
                             flip_weight=(up == 1))
    return bias_act_ref(y, P[pre + 'bias'], act='lrelu', gain=SQRT2 * gain,
                        clamp=conv_clamp * gain if conv_clamp is not None else None)


def torgb_ref(P, pre, x, w, conv_clamp=None):
    """ToRGBLayer: styles = affine(w) / sqrt(in*k^2); modulated conv without demodulation; + bias; clamp; linear."""
    weight = P[pre + 'weight']
    styles = fc_ref(w, P[pre + 'affine.weight'], P[pre + 'affine.bias']) / np.sqrt(np.prod(weight.shape[1:]))
    y = modulated_conv2d_ref(x, weight, styles, demodulate=False)
    return bias_act_ref(y, P[pre + 'bias'], clamp=conv_clamp)


def mapping_ref(P, pre, z, c, num_layers, num_ws, lr_mul=0.01, beta=0.998, psi=1.0, cutoff=None,
                update_emas=False):
    """MappingNetwork: x = normalize(z) [, cat normalize(embed(c))]; num_layers lrelu FCs (lr_mul);
    update_emas: w_avg <- batch_mean + beta * (w_avg - batch_mean); broadcast to num_ws;
    truncation ws[:, :cutoff] = w_avg + psi * (ws[:, :cutoff] - w_avg). Returns (ws, w_avg)."""
    parts = []
    if z is not None:
        parts.append(normalize_ref(z))
    if c is not None:
        parts.append(normalize_ref(fc_ref(c, P[pre + 'embed.weight'], P[pre + 'embed.bias'])))
    x = np.concatenate(parts, axis=1)
    for idx in range(num_layers):
        x = fc_ref(x, P[f'{pre}fc{idx}.weight'], P[f'{pre}fc{idx}.bias'], lr_mul=lr_mul, act='lrelu')
    w_avg = P.get(pre + 'w_avg')
    if update_emas:
        mean = x.mean(axis=0)
        w_avg = mean + beta * (w_avg - mean)
    if num_ws is not None:
        x = np.repeat(x[:, None, :], num_ws, axis=1)
    if psi != 1:
        x = x.copy()
        sl = slice(None) if cutoff is None else slice(None, cutoff)
        x[:, sl] = w_avg + psi * (x[:, sl] - w_avg)
    return x, w_avg


def synthesis_ref(P, pre, ws, resolutions, architecture, conv_clamp, noise_mode='const'):
    """SynthesisNetwork wiring: first block = const repeated over the batch -> conv1; later blocks conv0 (up=2) -> conv1
    ('resnet': y = skip(x) (1x1, up=2, no bias, gain sqrt(.5)), x = conv1(conv0(x), gain sqrt(.5)), x = y + x);
    ToRGB in every block ('skip', img = upsample2d(img) + torgb(x)) or only in the last ('orig', 'resnet').
    Block ws = ws[idx : idx + num_conv + num_torgb]; idx advances by num_conv only."""
    N = ws.shape[0]
    x = img = None
    w_idx = 0
    for res in resolutions:
        b = f'{pre}b{res}.'
        is_last = res == resolutions[-1]
        first = res == resolutions[0]
        num_conv = 1 if first else 2
        has_torgb = is_last or architecture == 'skip'
        bws = ws[:, w_idx:w_idx + num_conv + int(has_torgb)]
        w_idx += num_conv
        if first:
            x = np.repeat(P[b + 'const'][None], N, axis=0)
            x = synthesis_layer_ref(P, b + 'conv1.', x, bws[:, 0], noise_mode=noise_mode, conv_clamp=conv_clamp)
        elif architecture == 'resnet':
            y = conv2d_layer_ref(P, b + 'skip.', x, up=2, gain=SQRT_HALF)
            x = synthesis_layer_ref(P, b + 'conv0.', x, bws[:, 0], up=2, noise_mode=noise_mode, conv_clamp=conv_clamp)
            x = synthesis_layer_ref(P, b + 'conv1.', x, bws[:, 1], noise_mode=noise_mode, gain=SQRT_HALF,
                                    conv_clamp=conv_clamp)
            x = y + x
        else:
            x = synthesis_layer_ref(P, b + 'conv0.', x, bws[:, 0], up=2, noise_mode=noise_mode, conv_clamp=conv_clamp)
            x = synthesis_layer_ref(P, b + 'conv1.', x, bws[:, 1], noise_mode=noise_mode, conv_clamp=conv_clamp)
        if img is not None:
            img = upsample2d_ref(img)
        if has_torgb:
            y = torgb_ref(P, b + 'torgb.', x, bws[:, num_conv], conv_clamp=conv_clamp)
            img = img + y if img is not None else y
    assert w_idx + 1 == ws.shape[1]
    return img


def discriminator_ref(P, img, c, resolutions, architecture, conv_clamp, mbstd_group_size, mbstd_num_channels=1,
                      mapping_layers=8):
    """Discriminator wiring: per block fromrgb (1x1 lrelu, first block or 'skip'; x = x + fromrgb(img)), 'skip' also
    downsample2d(img); 'resnet': y = skip(x) (1x1, down=2, no bias, gain sqrt(.5)), x = conv1(conv0(x), gain sqrt(.5)),
    x = y + x; else conv0 -> conv1 (down=2). Epilogue: ['skip': x += fromrgb(img) (no clamp)] mbstd -> conv 3x3 ->
    fc (flatten, lrelu) -> out (linear); with labels: sum(x * cmap) / sqrt(cmap_dim), cmap = mapping(None, c)."""
    x = None
    for res in resolutions:
        b = f'b{res}.'
        if x is None or architecture == 'skip':
            y = conv2d_layer_ref(P, b + 'fromrgb.', img, act='lrelu', conv_clamp=conv_clamp)
            x = x + y if x is not None else y
            if architecture == 'skip':
                img = downsample2d_ref(img)
        if architecture == 'resnet':
            y = conv2d_layer_ref(P, b + 'skip.', x, down=2, gain=SQRT_HALF)
            x = conv2d_layer_ref(P, b + 'conv0.', x, act='lrelu', conv_clamp=conv_clamp)
            x = conv2d_layer_ref(P, b + 'conv1.', x, down=2, act='lrelu', gain=SQRT_HALF, conv_clamp=conv_clamp)
            x = y + x
        else:
            x = conv2d_layer_ref(P, b + 'conv0.', x, act='lrelu', conv_clamp=conv_clamp)
            x = conv2d_layer_ref(P, b + 'conv1.', x, down=2, act='lrelu', conv_clamp=conv_clamp)
    if architecture == 'skip':
        x = x + conv2d_layer_ref(P, 'b4.fromrgb.', img, act='lrelu')
    x = mbstd_ref(x, mbstd_group_size, mbstd_num_channels)
    x = conv2d_layer_ref(P, 'b4.conv.', x, act='lrelu', conv_clamp=conv_clamp)
    x = fc_ref(x.reshape(x.shape[0], -1), P['b4.fc.weight'], P['b4.fc.bias'], act='lrelu')
    x = fc_ref(x, P['b4.out.weight'], P['b4.out.bias'])
    if c is not None:
        cmap, _ = mapping_ref(P, 'mapping.', None, c, num_layers=mapping_layers, num_ws=None)
        x = np.sum(x * cmap, axis=1, keepdims=True) / np.sqrt(cmap.shape[1])
    return x


# ----------------------------------------------------------------------------------------------
# Test utilities.


def randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def np64(t):
    return t.detach().to(torch.float64).numpy()


def assert_close(got, want, rtol=RTOL):
    """max |got - want| <= rtol * max |want| (float32 result vs float64 oracle, see module docstring)."""
    got = np64(got) if isinstance(got, torch.Tensor) else np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(np.abs(want).max(), 1e-6)
    err = np.abs(got - want).max()
    assert err <= rtol * scale, f'max abs error {err:.3g} > {rtol:g} * {scale:.3g}'


@torch.no_grad()
def randomize_(module, seed):
    """Give every term a non-default value: random biases (affine biases around their init 1), nonzero
    noise strengths, nonzero w_avg."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, ns.FullyConnectedLayer) and m.bias is not None:
            m.bias.add_(torch.randn(m.bias.shape, generator=g) * (0.3 / m.bias_gain))
        elif isinstance(m, (ns.Conv2dLayer, ns.SynthesisLayer, ns.ToRGBLayer)) and m.bias is not None:
            m.bias.add_(torch.randn(m.bias.shape, generator=g) * 0.3)
        if isinstance(m, ns.SynthesisLayer) and m.use_noise:
            m.noise_strength.fill_(0.2 + 0.6 * torch.rand([], generator=g).item())
        if isinstance(m, ns.MappingNetwork) and hasattr(m, 'w_avg'):
            m.w_avg.copy_(torch.randn(m.w_avg.shape, generator=g))
    return module


def build(cls, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return randomize_(cls(*args, **kwargs), seed + 1000).eval()


# ----------------------------------------------------------------------------------------------
# 1. FullyConnectedLayer, normalize_2nd_moment, filter setup.


@pytest.mark.parametrize('activation', ['linear', 'lrelu'])
@pytest.mark.parametrize('lr_multiplier', [1, 0.1])
@pytest.mark.parametrize('bias', [True, False])
def test_fully_connected(activation, lr_multiplier, bias):
    layer = build(ns.FullyConnectedLayer, 6, 5, bias=bias, activation=activation, lr_multiplier=lr_multiplier,
                  bias_init=0.3)
    x = randn(3, 6, seed=1)
    P = params64(layer)
    want = fc_ref(np64(x), P['weight'], P.get('bias'), lr_mul=lr_multiplier, act=activation)
    assert_close(layer(x), want)


def test_fully_connected_init():
    torch.manual_seed(0)
    layer = ns.FullyConnectedLayer(300, 200, lr_multiplier=0.01, bias_init=0.5)
    assert np.allclose(np64(layer.bias), 0.5)
    # Stored weights are randn / lr_mul, so the used weights (x lr_mul / sqrt(in)) have std 1/sqrt(in).
    assert abs(layer.weight.std().item() * 0.01 - 1) < 0.02


def test_normalize_2nd_moment():
    x = randn(4, 7, seed=2) * 3
    assert_close(ns.normalize_2nd_moment(x), normalize_ref(np64(x)))


def test_resample_filter_buffer():
    layer = ns.SynthesisLayer(2, 2, w_dim=4, resolution=8, up=2)
    np.testing.assert_allclose(np64(layer.resample_filter), FILTER, rtol=1e-7, atol=0)
    assert FILTER[0, 0] == 1 / 64 and FILTER[1, 1] == 9 / 64


# ----------------------------------------------------------------------------------------------
# 2. MappingNetwork.

Z_DIM, C_DIM, W_DIM, NUM_WS = 6, 4, 8, 5


def make_mapping(c_dim, seed=0, **kwargs):
    kw = dict(num_layers=3, lr_multiplier=0.05, w_avg_beta=0.9)
    kw.update(kwargs)
    return build(ns.MappingNetwork, Z_DIM, c_dim, W_DIM, NUM_WS, seed=seed, **kw)


@pytest.mark.parametrize('c_dim', [0, C_DIM])
@pytest.mark.parametrize('psi,cutoff', [(1, None), (0.5, None), (0.5, 2), (-0.7, 3)])
def test_mapping(c_dim, psi, cutoff):
    net = make_mapping(c_dim, embed_features=7, layer_features=9)
    z = randn(3, Z_DIM, seed=3) * 2
    c = randn(3, C_DIM, seed=4) if c_dim else None
    P = params64(net)
    want, _ = mapping_ref(P, '', np64(z), np64(c) if c is not None else None, num_layers=3, num_ws=NUM_WS,
                          lr_mul=0.05, psi=psi, cutoff=cutoff)
    got = net(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
    assert_close(got, want)
    if cutoff is not None:  # Only the first `cutoff` ws are truncated.
        full = net(z, c)
        assert torch.equal(got[:, cutoff:], full[:, cutoff:])
        assert not torch.allclose(got[:, :cutoff], full[:, :cutoff])


def test_mapping_labels_matter():
    net = make_mapping(C_DIM)
    z = randn(2, Z_DIM, seed=5)
    c1, c2 = randn(2, C_DIM, seed=6), randn(2, C_DIM, seed=7)
    assert not torch.allclose(net(z, c1), net(z, c2))


@pytest.mark.parametrize('psi', [1, 0.5])
def test_mapping_update_emas(psi):
    net = make_mapping(C_DIM)
    z, c = randn(4, Z_DIM, seed=8), randn(4, C_DIM, seed=9)
    P = params64(net)
    want_ws, want_avg = mapping_ref(P, '', np64(z), np64(c), num_layers=3, num_ws=NUM_WS, lr_mul=0.05, beta=0.9,
                                    psi=psi, update_emas=True)
    got = net(z, c, truncation_psi=psi, update_emas=True)
    assert_close(net.w_avg, want_avg)
    assert_close(got, want_ws)  # Truncation (psi != 1) uses the updated w_avg.
    # Without update_emas, w_avg stays put.
    before = net.w_avg.clone()
    net(z, c, truncation_psi=psi)
    assert torch.equal(net.w_avg, before)


def test_mapping_psi_zero_gives_w_avg():
    net = make_mapping(0)
    z = randn(3, Z_DIM, seed=10)
    ws = net(z, None, truncation_psi=0)
    assert_close(ws, np.broadcast_to(np64(net.w_avg), (3, NUM_WS, W_DIM)), rtol=1e-6)
    ws = net(z, None, truncation_psi=0, truncation_cutoff=2)
    assert_close(ws[:, :2], np.broadcast_to(np64(net.w_avg), (3, 2, W_DIM)), rtol=1e-6)
    assert not torch.allclose(ws[:, 2:], net.w_avg)


# ----------------------------------------------------------------------------------------------
# 3. modulated_conv2d.


@pytest.fixture(params=['auto', 'grouped', 'batched'])
def cpu_route(request, monkeypatch):
    """On the CPU a fused modulated conv takes the grouped or the batched route, whichever is cheaper for the
    shape: both are checked whatever the shapes below would choose."""
    if request.param != 'auto':
        monkeypatch.setattr(ns, '_batched_is_cheaper', lambda *args: request.param == 'batched')
    return request.param


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('demodulate', [True, False])
@pytest.mark.parametrize('up,flip_weight', [(1, True), (1, False), (2, False), (2, True)])
def test_modulated_conv2d(fused, demodulate, up, flip_weight, cpu_route):
    N, I, O, H = 3, 5, 4, 6
    x = randn(N, I, H, H, seed=11)
    weight = randn(O, I, 3, 3, seed=12)
    styles = randn(N, I, seed=13) + 1
    noise = randn(N, 1, H * up, H * up, seed=14) * 0.5
    got = ns.modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1,
                              resample_filter=torch.tensor(FILTER, dtype=torch.float32), demodulate=demodulate,
                              flip_weight=flip_weight, fused_modconv=fused)
    want = modulated_conv2d_ref(np64(x), np64(weight), np64(styles), noise=np64(noise), up=up, padding=1,
                                demodulate=demodulate, flip_weight=flip_weight)
    assert_close(got, want)


def test_demodulation_coefficients_without_modulated_weights():
    weight, styles = randn(7, 5, 3, 3, seed=40), randn(3, 5, seed=41)
    want = 1 / np.sqrt(((np64(weight)[None] * np64(styles)[:, None, :, None, None]) ** 2).sum(axis=(2, 3, 4)) + 1e-8)
    assert_close(ns._demodulation_coefficients(weight, styles), want, rtol=1e-6)


def test_cpu_route_choice():
    """Batched where the feature maps are small next to the weights, grouped where they are large, never off the CPU."""
    def route(channels_in, channels_out, size, up=1, device='cpu'):
        x = torch.empty([4, channels_in, size, size], device=device)
        return ns._batched_is_cheaper(x, torch.empty([channels_out, channels_in, 3, 3], device=device), up, 1)
    assert route(512, 512, 8) and route(512, 512, 32) and route(512, 256, 32, up=2)
    assert not route(64, 64, 256) and not route(128, 64, 128, up=2) and not route(256, 256, 64)
    assert not route(512, 512, 8, device='meta')


def test_modulated_conv2d_without_noise_1x1():
    x, weight, styles = randn(2, 5, 4, 4, seed=15), randn(3, 5, 1, 1, seed=16), randn(2, 5, seed=17)
    for fused in (True, False):
        got = ns.modulated_conv2d(x, weight, styles, demodulate=False, fused_modconv=fused)
        assert_close(got, modulated_conv2d_ref(np64(x), np64(weight), np64(styles), demodulate=False))


# ----------------------------------------------------------------------------------------------
# 4. SynthesisLayer, 5. ToRGBLayer, Conv2dLayer.


@pytest.mark.parametrize('up', [1, 2])
@pytest.mark.parametrize('noise_mode', ['const', 'none'])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('gain,conv_clamp', [(1, None), (0.7, 0.5)])
def test_synthesis_layer(up, noise_mode, fused, gain, conv_clamp):
    res, I, O, WD, N = 8, 5, 6, 7, 2
    layer = build(ns.SynthesisLayer, I, O, w_dim=WD, resolution=res, up=up, conv_clamp=conv_clamp)
    x = randn(N, I, res // up, res // up, seed=20)
    w = randn(N, WD, seed=21)
    P = params64(layer)
    want = synthesis_layer_ref(P, '', np64(x), np64(w), up=up, noise_mode=noise_mode, gain=gain, conv_clamp=conv_clamp)
    if conv_clamp is not None:  # The clamp actually clips some values, and not all.
        hit = np.isclose(np.abs(want), conv_clamp * gain)
        assert 0 < hit.mean() < 1
    got = layer(x, w, noise_mode=noise_mode, fused_modconv=fused, gain=gain)
    assert_close(got, want)


def test_synthesis_layer_random_noise():
    """'random' adds N(0,1)[N,1,H,W] * noise_strength before the bias: the same map for every channel,
    a different one per sample and per call, with std ~ noise_strength."""
    res, I, O, WD, N = 8, 4, 5, 6, 2
    layer = build(ns.SynthesisLayer, I, O, w_dim=WD, resolution=res, up=1)
    x, w = randn(N, I, res, res, seed=22), randn(N, WD, seed=23)
    P = params64(layer)
    clean = synthesis_layer_ref(P, '', np64(x), np64(w), noise_mode='none')
    pre_clean = modulated_conv2d_ref(np64(x), P['weight'], fc_ref(np64(w), P['affine.weight'], P['affine.bias']),
                                     padding=1) + P['bias'][None, :, None, None]
    torch.manual_seed(24)
    outs = [np64(layer(x, w, noise_mode='random')) for _ in range(2)]
    diffs = []
    for out in outs:
        y = out / SQRT2
        pre = np.where(y >= 0, y, y / 0.2)  # Invert lrelu (no clamp here).
        d = pre - pre_clean
        np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-4 * np.abs(pre_clean).max())
        ratio = d[:, 0].std() / P['noise_strength']
        assert 0.6 < ratio < 1.4, ratio
        assert not np.allclose(d[0, 0], d[1, 0])
        diffs.append(d)
        assert not np.allclose(out, clean)
    assert not np.allclose(diffs[0], diffs[1])


def test_synthesis_layer_without_noise_buffers():
    layer = build(ns.SynthesisLayer, 3, 4, w_dim=5, resolution=8, use_noise=False)
    assert not hasattr(layer, 'noise_const')
    x, w = randn(2, 3, 8, 8, seed=25), randn(2, 5, seed=26)
    want = synthesis_layer_ref(params64(layer), '', np64(x), np64(w), noise_mode='const')
    assert_close(layer(x, w, noise_mode='random'), want)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('conv_clamp', [None, 0.3])
def test_torgb(fused, conv_clamp):
    layer = build(ns.ToRGBLayer, 6, 3, w_dim=5, conv_clamp=conv_clamp)
    x, w = randn(2, 6, 5, 5, seed=27), randn(2, 5, seed=28)
    want = torgb_ref(params64(layer), '', np64(x), np64(w), conv_clamp=conv_clamp)
    if conv_clamp is not None:
        assert 0 < np.isclose(np.abs(want), conv_clamp).mean() < 1
    assert_close(layer(x, w, fused_modconv=fused), want)


@pytest.mark.parametrize('k,up,down,act,bias', [
    (3, 1, 1, 'lrelu', True),
    (3, 1, 2, 'lrelu', True),   # DiscriminatorBlock.conv1
    (1, 1, 2, 'linear', False), # DiscriminatorBlock.skip
    (1, 2, 1, 'linear', False), # SynthesisBlock.skip
    (3, 2, 1, 'lrelu', True),   # flip_weight=False path
])
def test_conv2d_layer(k, up, down, act, bias):
    layer = build(ns.Conv2dLayer, 4, 5, kernel_size=k, bias=bias, activation=act, up=up, down=down, conv_clamp=0.8)
    x = randn(2, 4, 8, 8, seed=29)
    want = conv2d_layer_ref(params64(layer), '', np64(x), up=up, down=down, act=act, gain=0.6, conv_clamp=0.8)
    assert want.shape[-1] == 8 * up // down
    assert_close(layer(x, gain=0.6), want)


@pytest.mark.parametrize('N,group_size,num_channels', [(4, 2, 1), (4, 2, 2), (4, 4, 1), (2, 4, 1), (6, 3, 2)])
def test_minibatch_std(N, group_size, num_channels):
    x = randn(N, 4, 3, 3, seed=30) * torch.arange(1, N + 1).reshape(N, 1, 1, 1)
    want = mbstd_ref(np64(x), group_size, num_channels)
    assert_close(ns.MinibatchStdLayer(group_size, num_channels)(x), want)


# ----------------------------------------------------------------------------------------------
# 6. Generator, 8. truncation.

G_KW = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
            mapping_kwargs=dict(num_layers=2))
G_RES = [4, 8, 16]
G_CLAMP = {'skip': 256, 'resnet': 1.0, 'orig': None}


def make_generator(architecture, seed=0):
    return build(ns.Generator, **G_KW, architecture=architecture, conv_clamp=G_CLAMP[architecture], seed=seed)


@pytest.mark.parametrize('architecture', ['skip', 'resnet', 'orig'])
@pytest.mark.parametrize('fused', [True, False])
def test_generator(architecture, fused):
    G = make_generator(architecture)
    assert G.num_ws == 6
    z = randn(2, 8, seed=31)
    P = params64(G)
    ws, _ = mapping_ref(P, 'mapping.', np64(z), None, num_layers=2, num_ws=6, psi=0.7, cutoff=4)
    want = synthesis_ref(P, 'synthesis.', ws, G_RES, architecture, G_CLAMP[architecture])
    got = G(z, None, truncation_psi=0.7, truncation_cutoff=4, noise_mode='const', fused_modconv=fused)
    assert got.shape == (2, 3, 16, 16)
    assert_close(got, want)


@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_synthesis_uses_every_w(architecture):
    """Every ws slot (including the shared ToRGB ones) influences the image."""
    G = make_generator(architecture)
    ws = randn(1, 6, 8, seed=32)
    base = G.synthesis(ws, noise_mode='const')
    P = params64(G)
    for i in range(6):
        ws2 = ws.clone()
        ws2[:, i] += 1
        out = G.synthesis(ws2, noise_mode='const')
        assert not torch.allclose(out, base)
        assert_close(out, synthesis_ref(P, 'synthesis.', np64(ws2), G_RES, architecture, G_CLAMP[architecture]))


@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_generator_psi_zero_is_image_of_w_avg(architecture):
    G = make_generator(architecture, seed=5)
    z = randn(2, 8, seed=33)
    P = params64(G)
    got = G(z, None, truncation_psi=0, noise_mode='const')
    want = synthesis_ref(P, 'synthesis.', np.broadcast_to(P['mapping.w_avg'], (2, 6, 8)), G_RES, architecture,
                         G_CLAMP[architecture])
    assert_close(got, want)
    assert_close(got[1], np64(got[0]), rtol=1e-6)  # Independent of z.


# ----------------------------------------------------------------------------------------------
# 7. Discriminator.

D_RES = [16, 8]


@pytest.mark.parametrize('architecture', ['resnet', 'skip', 'orig'])
@pytest.mark.parametrize('c_dim', [0, 5])
def test_discriminator(architecture, c_dim):
    conv_clamp = 256 if architecture != 'orig' else 0.5
    D = build(ns.Discriminator, c_dim=c_dim, img_resolution=16, img_channels=3, architecture=architecture,
              channel_base=64, channel_max=8, conv_clamp=conv_clamp, epilogue_kwargs=dict(mbstd_group_size=2))
    img = randn(4, 3, 16, 16, seed=34)
    c = randn(4, c_dim, seed=35) if c_dim else None
    P = params64(D)
    want = discriminator_ref(P, np64(img), np64(c) if c is not None else None, D_RES, architecture, conv_clamp,
                             mbstd_group_size=2)
    got = D(img, c)
    assert got.shape == (4, 1)
    assert_close(got, want)
