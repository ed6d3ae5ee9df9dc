"""CPU benchmark of upfirdn2d and filtered_lrelu against the official algorithm, in the same run.

The baseline below re-implements the official reference algorithm directly (materialised
zero-stuffed image, F.pad + crop, depthwise conv2d with the flipped filter, 1-D passes for separable
filters, [::down] slicing; filtered_lrelu = bias add + that upfirdn2d + lrelu*gain + clamp + that
upfirdn2d, all with plain autograd). Prints one JSON object per measurement.

    python bench/ops_cpu.py           # StyleGAN3-T layer shapes (about two minutes on 2 cores)
    python bench/ops_cpu.py --quick   # tiny shapes, seconds
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

from torch_utils.ops import filtered_lrelu as fl_ops
from torch_utils.ops import upfirdn2d as up_ops

# ----------------------------------------------------------------------------------------------
# Baseline: the official algorithm, step by step.


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def official_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    padding = _pair(padding)
    px0, px1, py0, py1 = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    n, c, h, w = x.shape
    # Zero insertion by reshape + pad.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # Pad, then crop for negative padding.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    # Depthwise convolution with the flipped filter (true convolution), 1-D passes if separable.
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def official_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    x = x + b.reshape(1, -1, 1, 1)
    x = official_upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2)
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return official_upfirdn2d(x, fd, down=down)


# ----------------------------------------------------------------------------------------------
# Cases.


def lowpass(taps, up):
    """A Kaiser-windowed low-pass like StyleGAN3's (cutoff at the input Nyquist rate)."""
    return torch.tensor(scipy.signal.firwin(taps, cutoff=1.0 / up, window=('kaiser', 6.0)), dtype=torch.float32)


def sg3_case(batch, channels, out_size, up, down, margin=10, conv_kernel=3, filter_size=6):
    """A StyleGAN3-T SynthesisLayer's filtered_lrelu: sizes include the margin, the input is the
    output of a 3x3 conv with padding 2, paddings follow the network's formula."""
    in_size = (out_size * down) // up + 2 * margin
    out_size = out_size + 2 * margin
    conv_out = in_size + conv_kernel - 1
    up_taps = filter_size * up if up > 1 else 1
    down_taps = filter_size * down if down > 1 else 1
    pad_total = (out_size - 1) * down + 1 - conv_out * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2
    padding = [pad_lo, pad_total - pad_lo, pad_lo, pad_total - pad_lo]
    fu = lowpass(up_taps, up) if up > 1 else None
    fd = lowpass(down_taps, down) if down > 1 else None
    return dict(shape=[batch, channels, conv_out, conv_out], fu=fu, fd=fd, up=up, down=down, padding=padding,
                gain=float(np.sqrt(2)), slope=0.2, clamp=256.0)


def filtered_lrelu_cases(quick):
    if quick:
        return [('filtered_lrelu_up2_down2', sg3_case(2, 8, 16, 2, 2))]
    return [
        ('filtered_lrelu_up2_down2', sg3_case(4, 256, 64, 2, 2)),
        ('filtered_lrelu_up2_down2', sg3_case(4, 64, 256, 2, 2)),
        ('filtered_lrelu_up4_down2', sg3_case(4, 64, 256, 4, 2)),
    ]


def resample_cases(quick):
    f = up_ops.setup_filter([1, 3, 3, 1])  # 4x4 full filter, as in StyleGAN2
    sizes = [16] if quick else [64, 256]
    batch, channels = (2, 8) if quick else (4, 64)
    cases = []
    for size in sizes:
        shape = [batch, channels, size, size]
        # Baseline arguments are what upsample2d/downsample2d pass on for a 4-tap filter.
        cases.append(('upsample2d', shape, up_ops.upsample2d, dict(f=f, up=2, padding=[2, 1, 2, 1], gain=4)))
        cases.append(('downsample2d', shape, up_ops.downsample2d, dict(f=f, down=2, padding=[1, 1, 1, 1])))
    return cases


# ----------------------------------------------------------------------------------------------
# Timing.


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(ours, ref, inputs, repeats, min_seconds=2.0, max_rounds=200):
    """Median forward and forward+backward times of both, interleaved so that background load
    hits both alike, plus accuracy: the worst relative difference of the outputs and of the input
    gradients. Round 0 warms up; cheap cases get more rounds (until min_seconds) to tame noise."""
    times = {key: [] for key in ('ours_fwd', 'ref_fwd', 'ours_fwdbwd', 'ref_fwdbwd')}
    results = {}
    with torch.no_grad():
        probe = _grad_probe(ref(*inputs))  # upstream gradient, made once outside the timings
    start = time.perf_counter()
    rounds = 0
    while rounds <= repeats or (time.perf_counter() - start < min_seconds and rounds <= max_rounds):
        for name, fn in (('ours', ours), ('ref', ref)):
            with torch.no_grad():
                t_fwd, _ = timed(lambda: fn(*inputs))
            leaves = [v.detach().requires_grad_() for v in inputs]
            t_all, grads = timed(lambda: _forward_backward(fn, leaves, probe))
            if rounds > 0:
                times[name + '_fwd'].append(t_fwd)
                times[name + '_fwdbwd'].append(t_all)
            results[name] = grads
        rounds += 1
    (y_ours, *g_ours), (y_ref, *g_ref) = results['ours'], results['ref']
    accuracy = dict(
        max_abs_diff_rel=_rel_diff(y_ours, y_ref),
        grad_max_abs_diff_rel=max(_rel_diff(a, b) for a, b in zip(g_ours, g_ref)),
        grad_mismatch_frac=_mismatch_frac(g_ours, g_ref),
    )
    return {k: statistics.median(v) for k, v in times.items()}, accuracy


def _forward_backward(fn, leaves, dy):
    y = fn(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    return [y.detach(), *grads]


def _grad_probe(y):
    g = torch.Generator().manual_seed(123)
    return torch.randn(y.shape, generator=g, dtype=y.dtype)


def _rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _mismatch_frac(ours, ref):
    """Fraction of all gradient entries off by more than 1e-5 of their tensor's largest entry.
    Outputs agree to rounding, but where a pre-activation lies within rounding of the lrelu kink
    the two implementations may pick different slopes; this counts how rare that is."""
    bad = sum(((a - b).abs() > 1e-5 * b.abs().max()).sum().item() for a, b in zip(ours, ref))
    return bad / sum(b.numel() for b in ref)


def record(op, shape, t, accuracy):
    print(json.dumps(dict(
        op=op, shape=shape,
        ours_fwd_s=round(t['ours_fwd'], 5), ref_fwd_s=round(t['ref_fwd'], 5),
        ours_fwdbwd_s=round(t['ours_fwdbwd'], 5), ref_fwdbwd_s=round(t['ref_fwdbwd'], 5),
        speedup_fwd=round(t['ref_fwd'] / t['ours_fwd'], 2), speedup_fwdbwd=round(t['ref_fwdbwd'] / t['ours_fwdbwd'], 2),
        **{k: float(f'{v:.3g}') for k, v in accuracy.items()})), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny shapes, for a smoke test')
    parser.add_argument('--repeats', type=int, default=None, help='minimum timed repeats per measurement')
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    repeats = args.repeats or 3
    min_seconds = 0.2 if args.quick else 2.0
    gen = torch.Generator().manual_seed(0)

    for op, case in filtered_lrelu_cases(args.quick):
        x = torch.randn(case['shape'], generator=gen)
        b = torch.randn(case['shape'][1], generator=gen)
        kw = {k: case[k] for k in ('up', 'down', 'padding', 'gain', 'slope', 'clamp')}
        ours = lambda x, b: fl_ops.filtered_lrelu(x, case['fu'], case['fd'], b, **kw)
        ref = lambda x, b: official_filtered_lrelu(x, case['fu'], case['fd'], b, **kw)
        t, accuracy = compare(ours, ref, [x, b], repeats, min_seconds)
        record(op, case['shape'], t, accuracy)

    for op, shape, our_op, kw in resample_cases(args.quick):
        x = torch.randn(shape, generator=gen)
        ours = lambda x: our_op(x, kw['f'])
        ref = lambda x: official_upfirdn2d(x, **kw)
        t, accuracy = compare(ours, ref, [x], repeats, min_seconds)
        record(op, shape, t, accuracy)


if __name__ == '__main__':
    main()
