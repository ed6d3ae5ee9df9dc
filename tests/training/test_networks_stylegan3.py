"""Numerics of training/networks_stylegan3.py against independent float64 oracles.

Every expected value here is recomputed from the published rules (the official StyleGAN3
repository's training/networks_stylegan3.py and torch_utils/ops/filtered_lrelu.py) with float64
numpy / scipy: scipy.signal.upfirdn and explicit loops for resampling, closed-form Kaiser windows for the filters,
explicit einsum convolutions. Nothing in an oracle calls torch_utils.ops or reuses an output of the
code under test; from the modules we only read their *learned* tensors (weights, biases, magnitude
EMAs, Fourier frequencies/phases, w_avg), while the layer geometry (sampling rates, up/down factors,
tap counts, padding, filters) is recomputed by the oracle itself. The oracle schedule is checked
against the probed layer tables below (`Probed layer tables`).

Tolerance for oracle comparisons (see `assert_close`): the network runs in float32 (unit roundoff
6e-8); one layer accumulates a few hundred products per output (convolution over in_channels*k^2,
then up to 24 + 12 filter taps per axis), and the whole generator chains 16 such stages. Measured
errors are at most 2.3e-6 of max|ref| (layers ~1e-7 .. 7e-7, generators ~1.5e-6), so
`atol = 1e-4 * max|ref|` leaves a >40x margin. Each of these deliberate oracle mutations makes at least
one test fail: padding low/high swapped or low = total//2, styles normalised per sample, magnitude EMA
lerp reversed or applied after use, transform order / phase sign / align_corners pixel grid / amplitude
clamp / t normalisation changed, truncation applied to all ws, old w_avg used, up-filter gain up^2 per
axis, convolution instead of correlation, clamp removed or moved after the down filter, decimation
offset, ToRGB weight gain dropped, separable instead of radial filter, slope 0.25, demodulation epsilon
1e-2, mapping lr multiplier 1, cutoff / sampling-rate schedule, Kaiser beta, jinc scale, output scale,
ws index of one layer.
"""

import copy
import math

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

from training import networks_stylegan3 as sg3

# ==============================================================================================
# Oracles.
# ==============================================================================================

# Defaults of SynthesisNetwork / SynthesisLayer (official release).
SCHEDULE_DEFAULTS = dict(num_layers=14, num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1,
                         last_stopband_rel=2 ** 0.3, margin_size=10)


def ref_schedule(img_resolution, channel_base, channel_max, img_channels=3, conv_kernel=3, use_radial_filters=False,
                 filter_size=6, lrelu_upsampling=2, num_layers=14, num_critical=2, first_cutoff=2,
                 first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10):
    """Per-layer geometry of the alias-free synthesis network (paper Sec. 3.2 / Appendix F; the official StyleGAN3 networks_stylegan3.py).

    Rules encoded, for i = 0..N (N = num_layers):
      e_i = min(i / (N - num_critical), 1)
      f_c,i = first_cutoff * (res/2 / first_cutoff)^e_i
      f_t,i = first_stopband * (res/2 * last_stopband_rel / first_stopband)^e_i
      s_i = 2^ceil(log2(min(2 f_t,i, res)));  f_h,i = max(f_t,i, s_i/2) - f_c,i
      size_i = s_i + 2 margin (last two: res);  channels_i = rint(min(channel_base/2 / f_c,i, channel_max)),
      last = img_channels.  Layer i reads its input parameters from layer max(i-1, 0).
      tmp_sr = max(in_sr, out_sr) * (1 if ToRGB else lrelu_upsampling); up = tmp/in_sr; down = tmp/out_sr;
      taps = filter_size * factor if factor > 1 and not ToRGB else 1.
      Padding: total = (out-1)*down + 1 - (in + k - 1)*up + up_taps + down_taps - 2, low = (total + up)//2.
    Pure python floats (math module); independent of layer_schedule().
    """
    N, res = num_layers, img_resolution
    fc, ft, sr, hw, size, ch = [], [], [], [], [], []
    for i in range(N + 1):
        e = min(i / (N - num_critical), 1.0)
        fc.append(first_cutoff * (res / 2 / first_cutoff) ** e)
        ft.append(first_stopband * (res / 2 * last_stopband_rel / first_stopband) ** e)
        sr.append(2 ** math.ceil(math.log2(min(2 * ft[i], res))))
        hw.append(max(ft[i], sr[i] / 2) - fc[i])
        size.append(res if i >= N - 1 else sr[i] + 2 * margin_size)
        ch.append(img_channels if i == N else int(round(min(channel_base / 2 / fc[i], channel_max))))
    layers = []
    for i in range(N + 1):
        p = max(i - 1, 0)
        torgb = (i == N)
        k = 1 if torgb else conv_kernel
        tmp = max(sr[p], sr[i]) * (1 if torgb else lrelu_upsampling)
        up, down = tmp // sr[p], tmp // sr[i]
        assert up * sr[p] == tmp and down * sr[i] == tmp
        up_taps = filter_size * up if up > 1 and not torgb else 1
        down_taps = filter_size * down if down > 1 and not torgb else 1
        total = (size[i] - 1) * down + 1 - (size[p] + k - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        critical = i >= N - num_critical
        radial = use_radial_filters and not critical
        layers.append(dict(
            idx=i, name=f'L{i}_{size[i]}_{ch[i]}', torgb=torgb, critical=critical, radial=radial, k=k,
            in_channels=ch[p], out_channels=ch[i], in_size=size[p], out_size=size[i],
            in_sr=sr[p], out_sr=sr[i], tmp_sr=tmp, in_cutoff=fc[p], out_cutoff=fc[i],
            in_half_width=hw[p], out_half_width=hw[i], up=up, down=down, up_taps=up_taps, down_taps=down_taps,
            padding=[lo, total - lo, lo, total - lo], fp16=sr[i] * 2 ** 4 > res,  # num_fp16_res = 4
            gain=1.0 if torgb else math.sqrt(2), slope=1.0 if torgb else 0.2))
    net = dict(cutoffs=fc, stopbands=ft, sampling_rates=sr, half_widths=hw, sizes=size, channels=ch)
    return net, layers


def kaiser_beta_closed_form(atten):
    """Kaiser's empirical beta for a stopband attenuation `atten` in dB (Kaiser 1974; Oppenheim & Schafer 7.76)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def kaiser_window_closed_form(numtaps, beta):
    """Symmetric Kaiser window w[n] = I0(beta sqrt(1 - (2n/(M-1) - 1)^2)) / I0(beta)."""
    n = np.arange(numtaps)
    return np.i0(beta * np.sqrt(1 - (2 * n / (numtaps - 1) - 1) ** 2)) / np.i0(beta)


def kaiser_beta_for(numtaps, width, fs):
    """Kaiser design formula: A = 2.285 (numtaps-1) pi (width / nyq) + 7.95 dB, then the beta above."""
    atten = 2.285 * (numtaps - 1) * np.pi * (width / (fs / 2)) + 7.95
    return kaiser_beta_closed_form(atten)


def ref_lowpass_1d(numtaps, cutoff, width, fs):
    """Kaiser-windowed sinc low-pass with unit DC gain (what scipy.signal.firwin(..., width=) designs)."""
    if numtaps == 1:
        return np.ones([1])
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = (2 * cutoff / fs) * np.sinc(2 * cutoff / fs * m)
    h = h * kaiser_window_closed_form(numtaps, kaiser_beta_for(numtaps, width, fs))
    return h / h.sum()


def ref_lowpass_radial(numtaps, cutoff, width, fs):
    """Radial jinc low-pass J1(2 pi fc r) / (pi r) on the tap grid x = (n - (M-1)/2) / fs, times the separable
    Kaiser window outer(w, w) of the 1-D design, normalised to unit sum (config R, as the official StyleGAN3 code designs it)."""
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.sqrt(x[None, :] ** 2 + x[:, None] ** 2)
    f = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    win = kaiser_window_closed_form(numtaps, kaiser_beta_for(numtaps, width, fs))
    f = f * np.outer(win, win)
    return f / f.sum()


def ref_layer_filters(geo):
    """Up filter from the input band, down filter from the output band (radial on non-critical config-R layers)."""
    fu = ref_lowpass_1d(geo['up_taps'], geo['in_cutoff'], 2 * geo['in_half_width'], geo['tmp_sr'])
    if geo['radial'] and geo['down_taps'] > 1:
        fd = ref_lowpass_radial(geo['down_taps'], geo['out_cutoff'], 2 * geo['out_half_width'], geo['tmp_sr'])
    else:
        fd = ref_lowpass_1d(geo['down_taps'], geo['out_cutoff'], 2 * geo['out_half_width'], geo['tmp_sr'])
    return fu, fd


def _slice_zero_extended(a, start, length, axis):
    """a[start:start+length] along `axis`, reading zeros outside the array (start may be negative)."""
    lo = max(0, -start)
    hi = max(0, start + length - a.shape[axis])
    pad = [(0, 0)] * a.ndim
    pad[axis] = (lo, hi)
    a = np.pad(a, pad)
    return np.take(a, np.arange(start + lo, start + lo + length), axis=axis)


def ref_upfir_axis(x, h, up, pad0, pad1, axis):
    """One axis of upfirdn2d: insert up-1 zeros after each sample, zero-pad by (pad0, pad1) (negative = crop),
    TRUE convolution with h keeping only outputs whose taps all lie inside the padded signal.

    scipy.signal.upfirdn gives the full convolution y of the zero-inserted signal; the padded signal is
    p[m] = xu[m - pad0], so the valid output is v[j] = y[j + len(h) - 1 - pad0], j < L*up + pad0 + pad1 - len(h) + 1.
    """
    full = scipy.signal.upfirdn(h, x, up=up, down=1, axis=axis)
    n_out = x.shape[axis] * up + pad0 + pad1 - len(h) + 1
    return _slice_zero_extended(full, len(h) - 1 - pad0, n_out, axis)


def ref_filtered_lrelu(x, b, fu, fd, up, down, padding, gain, slope, clamp):
    """filtered_lrelu (the official StyleGAN3 op): + bias; upsample by `up` with separable fu at gain `up` per axis
    (padding [x0, x1, y0, y1] w.r.t. the upsampled image); * gain; leaky ReLU(slope); clamp +-clamp;
    FIR fd (separable 1-D along x and y, or full 2-D), true convolution, no padding; keep every down-th sample."""
    x = x + b[None, :, None, None]
    px0, px1, py0, py1 = padding
    x = ref_upfir_axis(x, fu * up, up, px0, px1, axis=3)
    x = ref_upfir_axis(x, fu * up, up, py0, py1, axis=2)
    x = x * gain
    x = np.where(x >= 0, x, x * slope)
    if clamp is not None:
        x = np.clip(x, -clamp, clamp)
    if fd.ndim == 2:  # Explicit true 2-D convolution: out[y, x] = sum_ab fd[a, b] v[y + K-1-a, x + K-1-b].
        K = fd.shape[0]
        H, W = x.shape[2] - K + 1, x.shape[3] - K + 1
        v = x
        x = np.zeros(v.shape[:2] + (H, W))
        for a in range(K):
            for b_ in range(K):
                x += fd[a, b_] * v[:, :, K - 1 - a:K - 1 - a + H, K - 1 - b_:K - 1 - b_ + W]
    else:
        x = ref_upfir_axis(x, fd, 1, 0, 0, axis=3)
        x = ref_upfir_axis(x, fd, 1, 0, 0, axis=2)
    return x[:, :, ::down, ::down]


def ref_fc(x, weight, bias, lr_multiplier=1.0, activation='linear'):
    """Equalised-lr dense layer: x @ (W * lr/sqrt(in)).T + b * lr; lrelu = leaky ReLU(0.2) * sqrt(2)."""
    y = x @ (weight * (lr_multiplier / np.sqrt(weight.shape[1]))).T
    if bias is not None:
        y = y + bias * lr_multiplier
    if activation == 'lrelu':
        y = np.where(y >= 0, y, 0.2 * y) * np.sqrt(2)
    return y


def ref_conv2d_full_correlation(x, w):
    """Per-sample conv with padding k-1 on every side, correlation (no kernel flip) like F.conv2d.
    x [N, I, H, W], w [N, O, I, k, k] -> [N, O, H+k-1, W+k-1]."""
    k = w.shape[-1]
    xp = np.pad(x, [(0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)])
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # [N, I, H', W', k, k]
    return np.einsum('nihwab,noiab->nohw', win, w, optimize=True)


def ref_modulated_conv(x, weight, styles, demodulate, input_gain):
    """Fused modulated conv of SG3: if demodulate, weight /= rms over (in, kh, kw) per out channel and
    styles /= rms over the WHOLE [N, in] tensor; w' = weight * styles; demod w' /= sqrt(sum w'^2 + 1e-8);
    w' *= input_gain (per input channel); conv with padding k-1."""
    if demodulate:
        weight = weight / np.sqrt(np.mean(weight ** 2, axis=(1, 2, 3), keepdims=True))
        styles = styles / np.sqrt(np.mean(styles ** 2))
    wm = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        wm = wm / np.sqrt(np.sum(wm ** 2, axis=(2, 3, 4), keepdims=True) + 1e-8)
    wm = wm * input_gain
    return ref_conv2d_full_correlation(x, wm)


def ref_synthesis_layer(geo, p, x, w, update_emas=False, magnitude_ema_beta=0.999, conv_clamp=256):
    """SynthesisLayer.forward. `geo` from ref_schedule, `p` = float64 copies of the learned tensors.
    Returns (output, new magnitude_ema). EMA: ema <- mean(x^2) + beta * (ema - mean(x^2)), applied before use."""
    ema = float(p['magnitude_ema'])
    if update_emas:
        cur = float(np.mean(x ** 2))
        ema = cur + magnitude_ema_beta * (ema - cur)
    styles = ref_fc(w, p['affine.weight'], p['affine.bias'])
    if geo['torgb']:
        styles = styles / np.sqrt(geo['in_channels'] * geo['k'] ** 2)
    y = ref_modulated_conv(x, p['weight'], styles, demodulate=not geo['torgb'], input_gain=1 / np.sqrt(ema))
    fu, fd = ref_layer_filters(geo)
    y = ref_filtered_lrelu(y, p['bias'], fu, fd, geo['up'], geo['down'], geo['padding'],
                           geo['gain'], geo['slope'], conv_clamp)
    assert y.shape[2:] == (geo['out_size'], geo['out_size']), (y.shape, geo['out_size'])
    return y, ema


def ref_synthesis_input(p, channels, size, sampling_rate, bandwidth, w):
    """Fourier-feature input. t = affine(w) / |t[:2]|; M = R(c=t0, s=t1) @ T(-t2, -t3) @ transform;
    f' = f @ M[:2,:2], phase' = phase + f @ M[:2,2]; amplitude = clip(1 - (|f'| - bw)/(sr/2 - bw), 0, 1);
    pixel centres x_j = ((2j+1)/size - 1) * size/(2 sr); feature = sin(2 pi (x f'_x + y f'_y + phase')) * amp;
    output = features mixed by weight / sqrt(C)."""
    t = ref_fc(w, p['affine.weight'], p['affine.bias'])
    t = t / np.linalg.norm(t[:, :2], axis=1, keepdims=True)
    pos = ((2 * np.arange(size) + 1) / size - 1) * 0.5 * size / sampling_rate
    out = []
    for n in range(w.shape[0]):
        c, s, tx, ty = t[n]
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        tra = np.array([[1, 0, -tx], [0, 1, -ty], [0, 0, 1]])
        m = rot @ tra @ p['transform']
        freqs = p['freqs'] @ m[:2, :2]
        phases = p['phases'] + p['freqs'] @ m[:2, 2]
        amp = np.clip(1 - (np.linalg.norm(freqs, axis=1) - bandwidth) / (sampling_rate / 2 - bandwidth), 0, 1)
        arg = (pos[None, None, :] * freqs[:, 0, None, None] + pos[None, :, None] * freqs[:, 1, None, None]
               + phases[:, None, None])                                                    # [C, H(y), W(x)]
        feat = np.sin(2 * np.pi * arg) * amp[:, None, None]
        out.append(np.einsum('chw,dc->dhw', feat, p['weight'] / np.sqrt(channels)))
    return np.stack(out)


def ref_mapping(p, z, c, num_layers, num_ws, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                w_avg_beta=0.998, lr_multiplier=0.01):
    """MappingNetwork: 2nd-moment normalise z (and embed(c)), concat, lrelu FCs at lr 0.01; w_avg <- mean +
    beta * (w_avg - mean) if update_emas; broadcast to num_ws; ws[:, :cutoff] = w_avg + psi * (w - w_avg).
    Returns (ws, w_avg)."""
    x = z / np.sqrt(np.mean(z ** 2, axis=1, keepdims=True) + 1e-8)
    if c is not None and 'embed.weight' in p:
        y = ref_fc(c, p['embed.weight'], p['embed.bias'])
        y = y / np.sqrt(np.mean(y ** 2, axis=1, keepdims=True) + 1e-8)
        x = np.concatenate([x, y], axis=1)
    for i in range(num_layers):
        x = ref_fc(x, p[f'fc{i}.weight'], p[f'fc{i}.bias'], lr_multiplier, 'lrelu')
    w_avg = p['w_avg'].copy()
    if update_emas:
        mean = x.mean(axis=0)
        w_avg = mean + w_avg_beta * (w_avg - mean)
    ws = np.repeat(x[:, None, :], num_ws, axis=1)
    cutoff = num_ws if truncation_cutoff is None else truncation_cutoff
    if truncation_psi != 1:
        ws[:, :cutoff] = w_avg + truncation_psi * (ws[:, :cutoff] - w_avg)
    return ws, w_avg


def ref_synthesis(synthesis, layers, ws, update_emas=False, magnitude_ema_beta=0.999, conv_clamp=256):
    """SynthesisNetwork: input(ws[:, 0]) -> layer i with ws[:, 1 + i] -> * output_scale 0.25.
    Returns (image, [magnitude_ema per layer])."""
    first = layers[0]
    x = ref_synthesis_input(params64(synthesis.input), first['in_channels'], first['in_size'], first['in_sr'],
                            first['in_cutoff'], ws[:, 0])
    emas = []
    for geo in layers:
        x, ema = ref_synthesis_layer(geo, params64(getattr(synthesis, geo['name'])), x, ws[:, 1 + geo['idx']],
                                     update_emas, magnitude_ema_beta, conv_clamp)
        emas.append(ema)
    return x * 0.25, emas


def ref_generator(G, layers, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
    """Generator = synthesis(mapping(z, c)). Returns (image, w_avg, [magnitude_ema per layer])."""
    ws, w_avg = ref_mapping(params64(G.mapping), z, c, G.mapping.num_layers, G.num_ws, truncation_psi,
                            truncation_cutoff, update_emas)
    img, emas = ref_synthesis(G.synthesis, layers, ws, update_emas)
    return img, w_avg, emas


# ==============================================================================================
# Test helpers.
# ==============================================================================================


def params64(module):
    """Float64 numpy copies of a module's own parameters and buffers (learned state only)."""
    out = {name: t.detach().double().numpy().copy() for name, t in module.named_parameters()}
    out.update({name: t.detach().double().numpy().copy() for name, t in module.named_buffers() if t is not None})
    return out


def assert_close(got, ref, rel=1e-4):
    """float32 result vs float64 oracle: |got - ref| <= rel * max|ref| (see the module docstring)."""
    got = got.detach().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = float(np.max(np.abs(ref)))
    assert scale > 0
    err = float(np.max(np.abs(got - ref)))
    assert err <= rel * scale, f'max abs error {err:.3g} > {rel:g} * max|ref| = {rel * scale:.3g}'


def randomize_(module, seed):
    """Give every learned tensor a generic value: nonzero biases, magnitude EMAs != 1, non-trivial affines."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, sg3.SynthesisLayer):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
                m.affine.bias.copy_(1 + torch.randn(m.affine.bias.shape, generator=g) * 0.3)
                m.magnitude_ema.fill_(float(torch.empty([]).uniform_(0.3, 3, generator=g)))
            elif isinstance(m, sg3.SynthesisInput):
                m.affine.weight.copy_(torch.randn(m.affine.weight.shape, generator=g) * 0.5)
                m.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]) + torch.randn([4], generator=g) * 0.2)
                m.transform.copy_(torch.from_numpy(inverse_rigid(0.3, 0.07, -0.04)))
            elif isinstance(m, sg3.MappingNetwork):
                m.w_avg.copy_(torch.randn(m.w_avg.shape, generator=g))
                for name, p in m.named_parameters():
                    if name.endswith('bias'):
                        p.copy_(torch.randn(p.shape, generator=g) * 20)  # *0.01 lr multiplier -> ~0.2
    return module


def inverse_rigid(angle, tx, ty):
    """Inverse of (rotate by `angle`, then translate by (tx, ty)), as float32 3x3; what users write into
    G.synthesis.input.transform (the official StyleGAN3 convention)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])
    return np.linalg.inv(m).astype(np.float32)


def build_G(img_resolution=16, channel_base=256, channel_max=16, w_dim=8, z_dim=8, c_dim=0, seed=0, **kwargs):
    torch.manual_seed(seed)
    G = sg3.Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
                      channel_base=channel_base, channel_max=channel_max, **kwargs)
    return G.eval().requires_grad_(False)


CONFIG_R = dict(conv_kernel=1, use_radial_filters=True)


@pytest.fixture(scope='module')
def G_T32():
    """Config T at 32x32: the smallest resolution whose schedule contains an up-4 layer (L5)."""
    return randomize_(build_G(img_resolution=32, channel_base=256, channel_max=16, seed=1), seed=11)


@pytest.fixture(scope='module')
def G_R16():
    return randomize_(build_G(img_resolution=16, channel_base=512, channel_max=16, seed=2, **CONFIG_R), seed=12)


# ==============================================================================================
# 1. Layer schedule, names, factors, taps, padding.
# ==============================================================================================

# Layer tables probed from the official StyleGAN3 code.
PROBED_T1024 = ['L0_36_512', 'L1_36_512', 'L2_52_512', 'L3_52_512', 'L4_84_512', 'L5_148_512', 'L6_148_512',
                'L7_276_323', 'L8_276_203', 'L9_532_128', 'L10_1044_81', 'L11_1044_51', 'L12_1044_32',
                'L13_1024_32', 'L14_1024_3']
PROBED_T256 = {0: 'L0_36_512', 9: 'L9_148_362', 10: 'L10_276_256', 11: 'L11_276_181', 12: 'L12_276_128',
               13: 'L13_256_128', 14: 'L14_256_3'}

CONFIGS_FULL_SIZE = {
    'T1024': dict(img_resolution=1024, channel_base=32768, channel_max=512),
    'T256': dict(img_resolution=256, channel_base=32768, channel_max=512),
    'R1024': dict(img_resolution=1024, channel_base=65536, channel_max=1024, **CONFIG_R),
}


def test_reference_schedule_reproduces_probed_tables():
    """The oracle itself against the published probes (so the oracle is not just our own code again)."""
    _, t1024 = ref_schedule(**CONFIGS_FULL_SIZE['T1024'])
    assert [g['name'] for g in t1024] == PROBED_T1024
    # L0/L1: up2/down2 with 12/12 taps; L2: up4/down2 with 24/12; L14 = ToRGB, 1x1, no filters.
    assert [(g['up'], g['down'], g['up_taps'], g['down_taps']) for g in t1024[:3]] == \
        [(2, 2, 12, 12), (2, 2, 12, 12), (4, 2, 24, 12)]
    assert (t1024[14]['k'], t1024[14]['up_taps'], t1024[14]['down_taps']) == (1, 1, 1)
    assert [g['critical'] for g in t1024] == [False] * 12 + [True] * 3
    assert t1024[0]['in_sr'] == 16 and t1024[0]['in_cutoff'] == 2 and t1024[0]['in_size'] == 36
    assert [g['fp16'] for g in t1024] == [False] * 5 + [True] * 10  # fp16 from L5_148_512 on

    _, t256 = ref_schedule(**CONFIGS_FULL_SIZE['T256'])
    for i, name in PROBED_T256.items():
        assert t256[i]['name'] == name

    _, r1024 = ref_schedule(**CONFIGS_FULL_SIZE['R1024'])
    assert [g['out_size'] for g in r1024] == [g['out_size'] for g in t1024]  # same geometry
    assert r1024[0]['name'] == 'L0_36_1024' and r1024[13]['name'] == 'L13_1024_64'
    # Doubled channels (rint of a doubled value differs by at most 1 from twice the rounded value).
    assert all(abs(r['out_channels'] - 2 * t['out_channels']) <= 1 for r, t in zip(r1024[:14], t1024[:14]))
    assert [g['radial'] for g in r1024] == [True] * 12 + [False] * 3  # 12x12 radial down filters on L0-L11
    assert all(g['down_taps'] == 12 for g in r1024[:12])


def ref_parameter_count(w_dim=512, z_dim=512, c_dim=0, mapping_layers=2, **schedule_kwargs):
    """Closed-form parameter count: mapping FCs (+ embed), input (C0 x C0 mixing + affine w->4), and per layer
    affine (w -> in, + bias), weight out x in x k x k, bias out."""
    _, layers = ref_schedule(**schedule_kwargs)
    features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * mapping_layers
    n = sum(a * b + b for a, b in zip(features[:-1], features[1:])) + (c_dim * w_dim + w_dim if c_dim else 0)
    c0 = layers[0]['in_channels']
    n += c0 * c0 + 4 * w_dim + 4
    for g in layers:
        n += (w_dim + 1) * g['in_channels'] + g['out_channels'] * (g['in_channels'] * g['k'] ** 2 + 1)
    return n


def test_parameter_counts():
    """Published probes at 1024 (the official StyleGAN3 code): SG3-T G 22.3 M, SG3-R G 15.1 M parameters; and the exact
    count of small networks we build."""
    assert round(ref_parameter_count(**CONFIGS_FULL_SIZE['T1024']) / 1e5) == 223
    assert round(ref_parameter_count(**CONFIGS_FULL_SIZE['R1024']) / 1e5) == 151
    for extra in ({}, CONFIG_R):
        G = build_G(img_resolution=32, channel_base=512, channel_max=32, w_dim=8, z_dim=12, c_dim=3, **extra)
        expected = ref_parameter_count(w_dim=8, z_dim=12, c_dim=3, img_resolution=32, channel_base=512,
                                       channel_max=32, **extra)
        assert sum(p.numel() for p in G.parameters()) == expected


@pytest.mark.parametrize('config', list(CONFIGS_FULL_SIZE))
def test_layer_schedule_function(config):
    kw = CONFIGS_FULL_SIZE[config]
    net, _ = ref_schedule(**kw)
    s = sg3.layer_schedule(kw['img_resolution'], 3, kw['channel_base'], kw['channel_max'], **SCHEDULE_DEFAULTS)
    for key in ('cutoffs', 'stopbands', 'sampling_rates', 'half_widths', 'sizes', 'channels'):
        np.testing.assert_allclose(np.asarray(s[key], dtype=np.float64), net[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize('config', list(CONFIGS_FULL_SIZE))
def test_layer_geometry_full_size(config):
    """Every layer of the full-size schedules, built with 1 channel (geometry does not depend on channels):
    factors, taps, padding, criticality, filter shapes and values."""
    kw = dict(CONFIGS_FULL_SIZE[config])
    _, layers = ref_schedule(**kw)
    for geo in layers:
        layer = sg3.SynthesisLayer(
            w_dim=4, is_torgb=geo['torgb'], is_critically_sampled=geo['critical'], use_fp16=False,
            in_channels=1, out_channels=1, in_size=geo['in_size'], out_size=geo['out_size'],
            in_sampling_rate=geo['in_sr'], out_sampling_rate=geo['out_sr'],
            in_cutoff=geo['in_cutoff'], out_cutoff=geo['out_cutoff'],
            in_half_width=geo['in_half_width'], out_half_width=geo['out_half_width'],
            conv_kernel=kw.get('conv_kernel', 3), use_radial_filters=kw.get('use_radial_filters', False))
        where = f"{config} {geo['name']}"
        assert layer.tmp_sampling_rate == geo['tmp_sr'], where
        assert (layer.up_factor, layer.down_factor) == (geo['up'], geo['down']), where
        assert (layer.up_taps, layer.down_taps) == (geo['up_taps'], geo['down_taps']), where
        assert layer.conv_kernel == geo['k'], where
        assert list(layer.padding) == geo['padding'], where
        assert bool(layer.down_radial) == geo['radial'], where
        # Output size of filtered_lrelu (the official formula) must land exactly on out_size.
        n = geo['in_size'] + geo['k'] - 1
        p0, p1 = geo['padding'][:2]
        assert (n * geo['up'] + p0 + p1 - (geo['up_taps'] - 1) - (geo['down_taps'] - 1) + geo['down'] - 1) \
            // geo['down'] == geo['out_size'], where
        fu, fd = ref_layer_filters(geo)
        for got, ref in ((layer.up_filter, fu), (layer.down_filter, fd)):
            if ref.size == 1:
                assert got is None, where
            else:
                assert got.dtype == torch.float32 and tuple(got.shape) == ref.shape, where
                np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max(),
                                           err_msg=where)


def test_network_names_and_layers_T256():
    """Names of a real (full-size channel) 256 network: probed T@256 table; plus per-layer geometry."""
    torch.manual_seed(0)
    synth = sg3.SynthesisNetwork(w_dim=16, img_resolution=256, img_channels=3)
    _, layers = ref_schedule(img_resolution=256, channel_base=32768, channel_max=512)
    assert synth.layer_names == [g['name'] for g in layers]
    for i, name in PROBED_T256.items():
        assert synth.layer_names[i] == name
    assert synth.num_ws == 16
    for geo in layers:
        layer = getattr(synth, geo['name'])
        assert (layer.in_channels, layer.out_channels) == (geo['in_channels'], geo['out_channels'])
        assert (layer.up_factor, layer.down_factor, list(layer.padding)) == (geo['up'], geo['down'], geo['padding'])
        assert bool(layer.is_critically_sampled) == geo['critical'] and bool(layer.is_torgb) == geo['torgb']
        assert bool(layer.use_fp16) == geo['fp16']
    inp = synth.input
    assert (inp.channels, int(inp.size[0]), inp.sampling_rate, inp.bandwidth) == (512, 36, 16, 2)


@pytest.mark.parametrize('res', [16, 32, 64])
def test_small_network_names(res):
    G = build_G(img_resolution=res, channel_base=512, channel_max=32)
    _, layers = ref_schedule(img_resolution=res, channel_base=512, channel_max=32)
    assert G.synthesis.layer_names == [g['name'] for g in layers]


# ==============================================================================================
# 2. Filters: scipy.signal.firwin, closed forms, and frequency-domain properties.
# ==============================================================================================

def _separable_cases():
    """Up and down filters of T@1024 layers L0 (up 2), L2 (up 4), L12 (critical), as (taps, cutoff, width, fs)."""
    layers = ref_schedule(**CONFIGS_FULL_SIZE['T1024'])[1]
    cases = []
    for geo in (layers[0], layers[2], layers[12]):
        cases.append((geo['up_taps'], geo['in_cutoff'], 2 * geo['in_half_width'], geo['tmp_sr']))
        cases.append((geo['down_taps'], geo['out_cutoff'], 2 * geo['out_half_width'], geo['tmp_sr']))
    return cases


@pytest.mark.parametrize('numtaps,cutoff,width,fs', _separable_cases())
def test_separable_filter_matches_firwin(numtaps, cutoff, width, fs):
    got = sg3.design_lowpass_filter(numtaps, cutoff, width, fs)
    ref = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs).astype(np.float32)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), ref)
    np.testing.assert_allclose(got.double().numpy(), ref_lowpass_1d(numtaps, cutoff, width, fs), atol=1e-7)
    assert sg3.design_lowpass_filter(1, cutoff, width, fs) is None
    assert sg3.SynthesisLayer.design_lowpass_filter(numtaps, cutoff, width, fs).shape == (numtaps,)


def _radial_cases():
    """Down filters of the radial layers of config R @1024 and of the tiny config-R generator."""
    cases = []
    for kw in (CONFIGS_FULL_SIZE['R1024'], dict(img_resolution=16, channel_base=512, channel_max=16, **CONFIG_R)):
        for geo in ref_schedule(**kw)[1]:
            if geo['radial']:
                cases.append((geo['down_taps'], geo['out_cutoff'], 2 * geo['out_half_width'], geo['tmp_sr']))
    return sorted(set(cases))


@pytest.mark.parametrize('numtaps,cutoff,width,fs', _radial_cases())
def test_radial_filter(numtaps, cutoff, width, fs):
    got = sg3.design_lowpass_filter(numtaps, cutoff, width, fs, radial=True)
    assert got.dtype == torch.float32 and tuple(got.shape) == (numtaps, numtaps)
    f = got.double().numpy()
    np.testing.assert_allclose(f, ref_lowpass_radial(numtaps, cutoff, width, fs), rtol=0, atol=1e-7 * np.abs(f).max())

    # Properties, independent of the formula:
    assert abs(f.sum() - 1) < 1e-6                                                     # unit DC gain
    for g in (f[::-1, :], f[:, ::-1], f.T, f[::-1, ::-1].T):                           # 8-fold symmetry
        np.testing.assert_allclose(g, f, rtol=0, atol=1e-7 * np.abs(f).max())
    # Radial symmetry of the ideal part: taps at equal radius agree up to the separable Kaiser window.
    # For half-integer offsets, (0.5, 3.5) and (2.5, 2.5) have the same radius (r^2 = 12.5).
    c = (numtaps - 1) / 2
    a, b = f[int(c + 0.5), int(c + 3.5)], f[int(c + 2.5), int(c + 2.5)]
    assert abs(a - b) < 0.1 * max(abs(a), abs(b))
    # 2-D frequency response (zero-padded DFT; fs taps per unit, so DFT bins are in cycles per unit).
    # Thresholds from measurements over all radial layers of R@1024 and of the tiny R generator (in brackets):
    nfft = 1024
    resp = np.abs(np.fft.fft2(f, s=(nfft, nfft)))
    freq = np.fft.fftfreq(nfft, d=1 / fs)
    pos = freq[:nfft // 2]
    radius = np.hypot(freq[None, :], freq[:, None])
    stopband = radius >= cutoff + width / 2                     # f_c + f_h = stopband edge of the schedule
    assert stopband.any()
    atten_db = -20 * np.log10(resp[stopband].max())
    assert atten_db > 25, atten_db                              # [28.6 .. 45.3 dB]
    assert np.interp(cutoff / 2, pos, resp[0, :nfft // 2]) > 0.75     # passband [>= 0.83]
    assert 0.3 < np.interp(cutoff, pos, resp[0, :nfft // 2]) < 0.85   # transition at f_c [0.43 .. 0.76]
    # Isotropy: along the x axis and along the diagonal the response agrees at every radius up to the
    # stopband [<= 0.057]; the separable product of the 1-D design reaches 0.53 on the narrow-band layers.
    r = np.linspace(0, min(cutoff + width / 2, fs / 2), 50)
    axis = np.interp(r, pos, resp[0, :nfft // 2])
    diag = np.interp(r, np.sqrt(2) * pos, np.diag(resp)[:nfft // 2])
    assert np.abs(axis - diag).max() < 0.08


@pytest.mark.parametrize('numtaps,cutoff,width,fs', _separable_cases())
def test_separable_filter_properties(numtaps, cutoff, width, fs):
    """Unit DC gain, symmetry, stopband attenuation near Kaiser's design value A = 2.285 (M-1) pi dw + 7.95 dB
    (measured 1.4 .. 5.4 dB below it for the filters used; Kaiser's formula is approximate)."""
    h = sg3.design_lowpass_filter(numtaps, cutoff, width, fs).double().numpy()
    assert abs(h.sum() - 1) < 1e-6
    np.testing.assert_allclose(h[::-1], h, rtol=0, atol=1e-8)
    resp = np.abs(np.fft.rfft(h, 8192))
    freq = np.fft.rfftfreq(8192, d=1 / fs)
    design_db = 2.285 * (numtaps - 1) * np.pi * (width / (fs / 2)) + 7.95
    assert -20 * np.log10(resp[freq >= cutoff + width / 2].max()) > design_db - 8
    assert 0.4 < np.interp(cutoff, freq, resp) < 0.8


# ==============================================================================================
# 3. SynthesisLayer forward.
# ==============================================================================================

LAYER_CASES = [
    # (generator fixture, layer idx, update_emas, conv_clamp override, what it covers)
    ('G_T32', 1, False, None),    # regular up2/down2, 3x3
    ('G_T32', 5, True, None),     # up4/down2 (sampling rate 16 -> 32), with magnitude EMA update
    ('G_T32', 7, False, 0.3),     # clamp actually active
    ('G_T32', 12, True, None),    # critically sampled, out size 52
    ('G_T32', 13, False, None),   # critically sampled, 52 -> 32 (crop to the image)
    ('G_T32', 14, True, None),    # ToRGB: 1x1, no demodulation, linear, no filters
    ('G_R16', 3, True, None),     # config R: 1x1 conv, 12x12 radial down filter
    ('G_R16', 12, False, None),   # config R critical layer: separable down filter
]


@pytest.mark.parametrize('fixture,idx,update_emas,clamp', LAYER_CASES,
                         ids=[f'{c[0]}-L{c[1]}{"-ema" if c[2] else ""}{"-clamp" if c[3] else ""}'
                              for c in LAYER_CASES])
def test_synthesis_layer(request, fixture, idx, update_emas, clamp):
    G = request.getfixturevalue(fixture)
    kw = dict(img_resolution=G.img_resolution, channel_base=256 if fixture == 'G_T32' else 512, channel_max=16)
    if fixture == 'G_R16':
        kw.update(CONFIG_R)
    geo = ref_schedule(**kw)[1][idx]
    layer = copy.deepcopy(getattr(G.synthesis, geo['name']))
    if clamp is not None:
        layer.conv_clamp = clamp
    layer.magnitude_ema_beta = 0.9   # a visible EMA step
    gen = torch.Generator().manual_seed(100 + idx)
    x = torch.randn([3, geo['in_channels'], geo['in_size'], geo['in_size']], generator=gen) * 1.7
    w = torch.randn([3, G.w_dim], generator=gen)
    p = params64(layer)
    ema_before = float(layer.magnitude_ema)
    got = layer(x, w, noise_mode='const', force_fp32=True, update_emas=update_emas)
    ref, ema = ref_synthesis_layer(geo, p, x.double().numpy(), w.double().numpy(), update_emas=update_emas,
                                   magnitude_ema_beta=0.9, conv_clamp=256 if clamp is None else clamp)
    assert got.dtype == torch.float32
    assert_close(got, ref)
    if update_emas:
        assert abs(float(layer.magnitude_ema) - ema) <= 1e-6 * ema and abs(ema - ema_before) > 1e-3
    else:
        assert float(layer.magnitude_ema) == ema_before
    if clamp is not None:  # The clamp must have bitten somewhere, else this case proves nothing.
        unclamped, _ = ref_synthesis_layer(geo, p, x.double().numpy(), w.double().numpy(), conv_clamp=None)
        assert np.abs(unclamped - ref).max() > 0.1 * np.abs(ref).max()


def test_modulated_conv2d_function():
    """modulated_conv2d directly, incl. a per-channel input_gain and no demodulation."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn([2, 4, 7, 9], generator=g)
    w = torch.randn([5, 4, 3, 3], generator=g)
    s = torch.randn([2, 4], generator=g) + 1
    gain = torch.rand([2, 4], generator=g) + 0.5
    for demod in (True, False):
        got = sg3.modulated_conv2d(x, w, s, demodulate=demod, padding=2, input_gain=gain)
        ref = ref_modulated_conv(x.double().numpy(), w.double().numpy(), s.double().numpy(), demod,
                                 gain.double().numpy()[:, None, :, None, None])
        assert_close(got, ref)


def test_style_normalisation_is_global(G_T32):
    """Styles are divided by their rms over the whole [batch, in_channels] tensor, not per sample. After
    demodulation a per-sample factor cancels except through the 1e-8 epsilon, so one sample gets styles
    ~1e-5 (affine bias 0, w scaled down): with the global rule its demodulation is dominated by the epsilon."""
    geo = ref_schedule(img_resolution=32, channel_base=256, channel_max=16)[1][1]
    layer = copy.deepcopy(getattr(G_T32.synthesis, geo['name']))
    with torch.no_grad():
        layer.affine.bias.zero_()
    gen = torch.Generator().manual_seed(9)
    x = torch.randn([2, geo['in_channels'], geo['in_size'], geo['in_size']], generator=gen)
    w = torch.randn([2, G_T32.w_dim], generator=gen) * torch.tensor([[1e-5], [1.0]])
    p = params64(layer)
    ref, _ = ref_synthesis_layer(geo, p, x.double().numpy(), w.double().numpy())
    assert_close(layer(x, w, noise_mode='const', force_fp32=True), ref)
    # The rule is visible here: per-sample normalisation (= the same oracle run on batches of one) would give a
    # clearly different sample 0.
    per_sample = np.concatenate([ref_synthesis_layer(geo, p, x[i:i + 1].double().numpy(),
                                                     w[i:i + 1].double().numpy())[0] for i in range(2)])
    assert np.abs(per_sample[0] - ref[0]).max() > 0.1 * np.abs(ref[0]).max()
    np.testing.assert_allclose(per_sample[1], ref[1], rtol=0, atol=1e-6 * np.abs(ref[1]).max())


# ==============================================================================================
# 4. SynthesisInput.
# ==============================================================================================


@pytest.mark.parametrize('transform', ['rigid', 'scaled'])
def test_synthesis_input(G_T32, transform):
    inp = copy.deepcopy(G_T32.synthesis.input)
    if transform == "scaled":  # Zoom out 5x: frequencies pushed beyond the bandwidth get damped / removed.
        m = np.diag([5.0, 5.0, 1.0]) @ inverse_rigid(-0.7, 0.1, 0.2)
        inp.transform.copy_(torch.from_numpy(m.astype(np.float32)))
    else:
        assert not np.allclose(inp.transform.numpy(), np.eye(3))
    w = torch.randn([3, inp.w_dim], generator=torch.Generator().manual_seed(7))
    p = params64(inp)
    got = inp(w)
    ref = ref_synthesis_input(p, inp.channels, int(inp.size[0]), inp.sampling_rate, inp.bandwidth, w.double().numpy())
    assert_close(got, ref)
    # The per-sample transform must really depend on w here, and the amplitude clamp must have been exercised.
    assert np.abs(ref[0] - ref[1]).max() > 0.1 * np.abs(ref).max()
    norms = np.linalg.norm(p['freqs'] @ p['transform'][:2, :2], axis=1)  # rotations of w keep |f|
    amp = np.clip(1 - (norms - inp.bandwidth) / (inp.sampling_rate / 2 - inp.bandwidth), 0, 1)
    if transform == 'scaled':
        assert np.any((amp > 0) & (amp < 1)) and np.any(amp == 0) and np.any(amp == 1)


# ==============================================================================================
# 5. MappingNetwork.
# ==============================================================================================


@pytest.mark.parametrize('c_dim,psi,cutoff,update_emas', [
    (0, 1, None, False), (0, 0.7, 8, False), (0, 0.5, None, True), (3, 0.6, 5, True)])
def test_mapping(c_dim, psi, cutoff, update_emas):
    torch.manual_seed(3)
    mapping = sg3.MappingNetwork(z_dim=12, c_dim=c_dim, w_dim=10, num_ws=16)
    randomize_(mapping, seed=4)
    g = torch.Generator().manual_seed(8)
    z = torch.randn([5, 12], generator=g) * 3
    c = torch.randn([5, c_dim], generator=g) if c_dim else None
    p = params64(mapping)
    got = mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff, update_emas=update_emas)
    ref, w_avg = ref_mapping(p, z.double().numpy(), None if c is None else c.double().numpy(), 2, 16, psi, cutoff,
                             update_emas)
    assert got.shape == (5, 16, 10)
    assert_close(got, ref)
    assert_close(mapping.w_avg, w_avg)
    if cutoff is not None and psi != 1:  # The untruncated tail must differ from the truncated head.
        assert np.abs(ref[:, cutoff - 1] - ref[:, cutoff]).max() > 0.1


# ==============================================================================================
# 6. Whole generator.
# ==============================================================================================


@pytest.mark.parametrize('config', ['T', 'R'])
def test_generator(config):
    extra = CONFIG_R if config == 'R' else {}
    kw = dict(img_resolution=16, channel_base=512 if config == 'R' else 256, channel_max=16)
    G = randomize_(build_G(**kw, c_dim=2, seed=20, **extra), seed=21)
    _, layers = ref_schedule(**kw, **extra)
    assert G.synthesis.layer_names == [g['name'] for g in layers]
    g = torch.Generator().manual_seed(22)
    # Synthesis alone with a different w per layer (mapping output repeats one w, which would hide a wrong index).
    ws = torch.randn([2, G.num_ws, G.w_dim], generator=g)
    ref, _ = ref_synthesis(G.synthesis, layers, ws.double().numpy())
    assert_close(G.synthesis(ws, noise_mode='const', force_fp32=True), ref)
    # Whole generator, with truncation and EMA updates.
    z = torch.randn([2, G.z_dim], generator=g)
    c = torch.randn([2, G.c_dim], generator=g)
    ref, w_avg, emas = ref_generator(G, layers, z.double().numpy(), c.double().numpy(), truncation_psi=0.8,
                                     truncation_cutoff=7, update_emas=True)
    got = G(z, c, truncation_psi=0.8, truncation_cutoff=7, update_emas=True, noise_mode='const', force_fp32=True)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 16, 16)
    assert_close(got, ref)
    assert_close(G.mapping.w_avg, w_avg)
    assert_close(torch.stack([getattr(G.synthesis, n).magnitude_ema for n in G.synthesis.layer_names]),
                 np.array(emas))


# ==============================================================================================
# 7. Translation equivariance (EQ-T style).
# ==============================================================================================


def psnr(a, b):
    """EQ-T convention: peak-to-peak 2, PSNR = 20 log10(2) - 10 log10(MSE)."""
    return 20 * np.log10(2) - 10 * np.log10(float(np.mean((a - b) ** 2)))


def shift_valid(img, ref, dx, dy):
    """Compare img[..., y, x] with ref[..., y - dy, x - dx] on the pixels where both exist."""
    H, W = img.shape[-2:]
    a = img[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)]
    b = ref[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return a, b


def measure_eqt(G, ws, shifts):
    """For each integer shift (dx, dy) in pixels: write inverse(translate(dx/res, dy/res)) into the input transform
    and return (shift, PSNR vs the base image shifted by (+dx, +dy), PSNR vs the unshifted base, PSNR vs the base
    shifted by (-dx, -dy)). Each sample's pair of images is rescaled by 0.5 / std(base sample) first."""
    res = G.img_resolution
    with torch.no_grad():
        G.synthesis.input.transform.copy_(torch.eye(3))
        base = G.synthesis(ws, noise_mode='const', force_fp32=True).numpy()
        scale = 0.5 / base.std(axis=(1, 2, 3), keepdims=True)
        base = base * scale
        results = []
        for dx, dy in shifts:
            G.synthesis.input.transform.copy_(torch.from_numpy(inverse_rigid(0.0, dx / res, dy / res)))
            img = G.synthesis(ws, noise_mode='const', force_fp32=True).numpy() * scale
            results.append(((dx, dy), psnr(*shift_valid(img, base, dx, dy)), psnr(img, base),
                            psnr(*shift_valid(img, base, -dx, -dy))))
        G.synthesis.input.transform.copy_(torch.eye(3))
    return results


EQ_SHIFTS = [s for k in range(1, 5) for s in ((k, 0), (0, k), (k, k))]


@pytest.fixture(scope='module')
def eqt_setup():
    """Random-init config T at 32x32 (sampling rates 16 and 32, so a 1-pixel shift is half a sample in the first
    layers) and two ws; the EQ-T measurements over EQ_SHIFTS."""
    G = build_G(img_resolution=32, channel_base=512, channel_max=16, w_dim=16, z_dim=16, seed=30)
    ws = G.mapping(torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(31)), None)
    return G, ws, measure_eqt(G, ws, EQ_SHIFTS)


# Measured with this generator (seed 30; in brackets: seeds 40, 50, 60, 70, 80), both samples of the batch
# rescaled to std 0.5:
#   equivariant comparison, k = 1..4 along x, y and the diagonal: 45.0 .. 56.2 dB   [46.6 .. 78.0 dB]
#   the same pairs without shifting the reference:               15.5 .. 29.2 dB   [17.4 .. 36.3 dB]
#   the shift applied in the reversed direction:                 <= 23.6 dB        [<= 30.3 dB]
# The threshold is 5.0 dB below the worst equivariant value of all six seeds and 10.8 dB above the best
# baseline of this seed (3.7 dB above the best baseline of all six seeds).
EQ_T_THRESHOLD_DB = 40.0


def test_translation_equivariance(eqt_setup):
    """Writing the inverse of translate(tx, ty) into G.synthesis.input.transform moves the image content by
    +tx*res pixels along x (towards larger column index) and +ty*res pixels along y (towards larger row index):
    out_shifted[..., y, x] == out[..., y - ty*res, x - tx*res] on the valid region. This is the convention of
    the official EQ-T metric (metrics/equivariance.py, apply_integer_translation).

    noise_mode='const', force_fp32. The output scale of a random-init network varies between seeds and samples
    (std 0.003 .. 0.7), so each sample's pair of images is multiplied by the same factor 0.5 / std(base) before
    the PSNR (peak-to-peak 2), making the numbers comparable to a trained network's [-1, 1] output.
    """
    results = eqt_setup[2]
    msg = '\n'.join(f'shift {s}: equivariant {e:.1f} dB, unshifted {n:.1f} dB, reversed {r:.1f} dB'
                    for s, e, n, r in results)
    print(msg)
    for _, eq, unshifted, reversed_ in results:
        assert eq > EQ_T_THRESHOLD_DB, msg
        assert unshifted < EQ_T_THRESHOLD_DB and reversed_ < EQ_T_THRESHOLD_DB, msg


def test_translation_equivariance_control_without_lowpass(eqt_setup):
    """Control: the same network with every down filter replaced by a delta (no anti-aliasing before the
    decimation) is measurably less equivariant. At random init the effect is modest: for the shifts (k, 0),
    k = 1..4, the mean PSNR drops from 52.4 to 46.9 dB (5.5 dB; over all 12 shifts and six seeds the mean drop
    is 2.2 .. 11.2 dB), so we require a 2 dB drop. The main test above therefore mostly pins down the direction
    and units of the user transform and the network's shift consistency, less the quality of alias suppression."""
    G, ws, results = eqt_setup
    shifts = [(k, 0) for k in range(1, 5)]
    designed = np.mean([eq for s, eq, _, _ in results if s in shifts])
    G = copy.deepcopy(G)
    with torch.no_grad():
        for name in G.synthesis.layer_names:
            fd = getattr(G.synthesis, name).down_filter
            if fd is not None:
                fd.zero_()
                fd[fd.shape[0] // 2] = 1
    delta = np.mean([eq for _, eq, _, _ in measure_eqt(G, ws, shifts)])
    print(f'mean EQ-T PSNR over shifts {shifts}: designed filters {designed:.1f} dB, delta filters {delta:.1f} dB')
    assert delta < designed - 2
