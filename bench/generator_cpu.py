"""CPU benchmark of whole generators (StyleGAN2, StyleGAN3-T, StyleGAN3-R) against the official algorithm, same run.

Forward throughput (images/s, fp32, `G(z, None, noise_mode='const')` under `torch.no_grad()`) and
peak memory of our generators, next to the same generators with the parts they lean on swapped
for the official *algorithm*: `official_upfirdn2d` and `official_filtered_lrelu` from
`bench/ops_cpu.py` (materialised zero-stuffed images, pad + crop, depthwise conv2d, plain autograd),
and `official_modulated_conv2d` below (StyleGAN2's modulated convolution: per-sample weights
materialised and squared for the demodulation, one grouped convolution when fused).
The swap patches the module attributes `torch_utils.ops.upfirdn2d.upfirdn2d` (reached by
conv2d_resample and by upsample2d/downsample2d/filter2d through their module globals),
`torch_utils.ops.filtered_lrelu.filtered_lrelu` (reached by networks_stylegan3 as
`filtered_lrelu.filtered_lrelu`) and `training.networks_stylegan2.modulated_conv2d` (reached by its
layers as a module global); the patched functions count their calls and each record asserts
that the reference forward went through them. Everything else (weights, convolutions, bias_act,
mapping) is shared, so the ratio isolates those parts in their network context. For StyleGAN2 the
record also times one G+D training step (G in training mode, D on fakes and reals, backward),
ours against the same swap (`train_step_speedup`).

Each configuration runs in a fresh subprocess, so that peaks of earlier configurations cannot
mask later ones. There, after building G, one warm-up forward each of ours and of the reference
(their images are compared: max abs diff), then timed forwards, interleaved so that background load
hits both alike; the median gives images/s. The first timed forward of each also gives its peak
memory: free heap goes back to the OS (gc + malloc_trim), the process high-water mark is reset by
writing 5 to /proc/self/clear_refs (which ru_maxrss follows), and the peak is ru_maxrss after the
forward minus VmRSS before it. Torch's CPU allocations bypass tracemalloc, so RSS is what counts;
where the reset is refused the memory fields are null.

Timings are only as good as the machine is quiet. `cpu_s_per_wall_s` (process CPU seconds per
wall second over the timed forwards) well below `torch_threads` means other processes held the
cores. With OpenMP's default busy-waiting such contention slowed forwards down up to ~10x on the
2-core development machine; `OMP_WAIT_POLICY=PASSIVE` (recorded as `omp_wait_policy`) avoids that.

`official_img_s_published` are the official code's figures on a 2-core CPU quoted in the issue
(StyleGAN2 64x64 about 5.6 img/s, StyleGAN3-T 64x64 about 0.12 img/s, channel_base 8192); they
were measured on another machine, so `ours_vs_official_cross_machine` is only indicative (the issue
asks StyleGAN3 to be at least `required_vs_official` = 3x faster). Linux only (reads /proc).
Prints one JSON object per configuration.

    python bench/generator_cpu.py           # 64x64 and 256x256 (about eight minutes on 2 cores)
    python bench/generator_cpu.py --quick   # 16x16, channel_base 1024, seconds
"""

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (BENCH_DIR, os.path.dirname(BENCH_DIR)) if p not in sys.path]

from ops_cpu import official_filtered_lrelu, official_upfirdn2d  # noqa: E402  (the baseline lives there)
from torch_utils.ops import conv2d_resample  # noqa: E402
from torch_utils.ops import filtered_lrelu as fl_ops  # noqa: E402
from torch_utils.ops import upfirdn2d as up_ops  # noqa: E402
from training import networks_stylegan2 as sg2  # noqa: E402

ORIGINAL_OPS = (up_ops.upfirdn2d, fl_ops.filtered_lrelu, sg2.modulated_conv2d)

# ----------------------------------------------------------------------------------------------
# Configurations.

# (arch, resolution, channel_base) -> (published official img/s on a 2-core CPU, required speedup).
OFFICIAL = {
    ('stylegan2', 64, 8192): (5.6, None),
    ('stylegan3-t', 64, 8192): (0.12, 3.0),
}


def generator_kwargs(arch, resolution, quick):
    """Constructor arguments as the official train.py builds them (conv_clamp 256, 4 fp16
    resolutions, which stay fp32 on CPU), with a small channel base."""
    base, cmax = (1024, 512) if quick else (16384 if arch == 'stylegan2' else 8192, 512)
    if arch == 'stylegan3-r':
        base, cmax = base * 2, cmax * 2
    module = 'networks_stylegan2' if arch == 'stylegan2' else 'networks_stylegan3'
    kwargs = dict(class_name=f'training.{module}.Generator', z_dim=512, c_dim=0, w_dim=512,
                  img_resolution=resolution, img_channels=3, channel_base=base, channel_max=cmax,
                  mapping_kwargs=dict(num_layers=8 if arch == 'stylegan2' else 2), conv_clamp=256, num_fp16_res=4)
    if arch == 'stylegan2':
        kwargs.update(fused_modconv_default='inference_only')
    if arch == 'stylegan3-r':
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    return kwargs


def configs(quick):
    resolutions = [16] if quick else [64, 256]
    batch = 2 if quick else 4
    for resolution in resolutions:
        for arch in ('stylegan2', 'stylegan3-t', 'stylegan3-r'):
            # Cheaper forwards get more repetitions; at 256x256 a reference StyleGAN3 forward takes a minute or more.
            repeats, ref_repeats = (1, 1) if quick else (3, 3) if resolution <= 64 else (2, 1)
            yield dict(config=f'{arch}-{resolution}', arch=arch, resolution=resolution, batch=batch,
                       G_kwargs=generator_kwargs(arch, resolution, quick), repeats=repeats, ref_repeats=ref_repeats)


def build_generator(G_kwargs):
    kwargs = dict(G_kwargs)
    module, name = kwargs.pop('class_name').rsplit('.', 1)
    torch.manual_seed(0)
    return getattr(importlib.import_module(module), name)(**kwargs).eval().requires_grad_(False)

# ----------------------------------------------------------------------------------------------
# Reference: the official algorithm patched into the network.


def official_modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                              demodulate=True, flip_weight=True, fused_modconv=True):
    """The official StyleGAN2 modulated convolution, step by step: the per-sample weights are materialised and
    squared for the demodulation coefficients, and `fused_modconv` always means one grouped convolution."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1) + noise.to(x.dtype)
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                                        groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


@contextlib.contextmanager
def official_ops():
    """Within the block, upfirdn2d, filtered_lrelu and StyleGAN2's modulated convolution run the official
    algorithm; yields the number of calls each patched function received."""
    calls = dict(upfirdn2d=0, filtered_lrelu=0, modulated_conv2d=0)

    def modulated_conv2d(*args, **kwargs):
        calls['modulated_conv2d'] += 1
        return official_modulated_conv2d(*args, **kwargs)

    def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
        calls['upfirdn2d'] += 1
        return official_upfirdn2d(x, _identity_if_none(f), up=up, down=down, padding=padding,
                                  flip_filter=flip_filter, gain=gain)

    def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl='cuda'):
        calls['filtered_lrelu'] += 1
        fu, fd = _identity_if_none(fu), _identity_if_none(fd)
        if flip_filter:  # the baseline convolves; correlating is convolving with the flipped filter
            fu, fd = fu.flip(list(range(fu.ndim))), fd.flip(list(range(fd.ndim)))
        b = x.new_zeros([x.shape[1]]) if b is None else b
        return official_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp)

    saved = up_ops.upfirdn2d, fl_ops.filtered_lrelu, sg2.modulated_conv2d
    up_ops.upfirdn2d, fl_ops.filtered_lrelu, sg2.modulated_conv2d = upfirdn2d, filtered_lrelu, modulated_conv2d
    try:
        yield calls
    finally:
        up_ops.upfirdn2d, fl_ops.filtered_lrelu, sg2.modulated_conv2d = saved


def _identity_if_none(f):
    return torch.ones([1, 1], dtype=torch.float32) if f is None else f  # as the official ops do

# ----------------------------------------------------------------------------------------------
# Memory and timing.


def _status_kb(field):
    with open('/proc/self/status') as file:
        return int(re.search(rf'^{field}:\s+(\d+) kB', file.read(), re.M).group(1))


def _release_free_memory():
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)


def _reset_peak_rss():
    try:
        with open('/proc/self/clear_refs', 'w') as file:
            file.write('5')
        return True
    except OSError:
        return False


def peak_rss_increase(fn):
    """fn(), and the process peak RSS increase during it in MB, or None where the high-water mark
    cannot be reset (see the module docstring)."""
    _release_free_memory()
    reset = _reset_peak_rss()
    before_kb = _status_kb('VmRSS')
    out = fn()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return out, (peak_kb - before_kb) / 1024 if reset else None


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_config(spec):
    """The record of one configuration; runs in its own process."""
    load_avg = os.getloadavg()[0]
    G = build_generator(spec['G_kwargs'])
    z = torch.randn([spec['batch'], G.z_dim], generator=torch.Generator().manual_seed(1))
    forward = lambda: G(z, None, noise_mode='const')

    with torch.no_grad():
        # Warm-up calls, whose outputs are compared.
        img_ours = forward()
        with official_ops() as ref_calls:
            img_ref = forward()
        # The reference must really have gone through the official algorithm, and only it.
        assert ref_calls['upfirdn2d' if spec['arch'] == 'stylegan2' else 'filtered_lrelu'] > 0, ref_calls
        assert (up_ops.upfirdn2d, fl_ops.filtered_lrelu, sg2.modulated_conv2d) == ORIGINAL_OPS

        # Interleaved timings; the first of each also gives the peak memory.
        times, peak_mb = dict(ours=[], ref=[]), {}
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(max(spec['repeats'], spec['ref_repeats'])):
            for name in ('ours', 'ref'):
                if i >= spec['repeats' if name == 'ours' else 'ref_repeats']:
                    continue
                with official_ops() if name == 'ref' else contextlib.nullcontext() as calls:
                    if i == 0:
                        t, peak_mb[name] = peak_rss_increase(lambda: timed(forward))
                    else:
                        t = timed(forward)
                times[name].append(t)
                assert calls is None or calls == ref_calls, (calls, ref_calls)
        # CPU seconds per wall second over the timed forwards: well below torch_threads means other
        # processes held the cores and the timings are inflated.
        cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    train = train_step_record(G, spec) if spec['arch'] == 'stylegan2' else {}
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    ours_img_s, ref_img_s = spec['batch'] / t_ours, spec['batch'] / t_ref
    official, required = OFFICIAL.get((spec['arch'], spec['resolution'], spec['G_kwargs']['channel_base']),
                                      (None, None))
    diff = (img_ours - img_ref).abs().max().item()
    return dict(
        config=spec['config'], arch=spec['arch'], resolution=spec['resolution'], batch=spec['batch'], dtype='float32',
        G_kwargs=spec['G_kwargs'], torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), load_avg_1m=round(load_avg, 2),
        cpu_s_per_wall_s=round(cpu_per_wall, 2), repeats=spec['repeats'], ref_repeats=spec['ref_repeats'],
        ours_fwd_s=round(t_ours, 4), ref_fwd_s=round(t_ref, 4),
        ours_img_s=_sig(ours_img_s), ref_img_s=_sig(ref_img_s), speedup=round(t_ref / t_ours, 2),
        official_img_s_published=official,
        ours_vs_official_cross_machine=None if official is None else round(ours_img_s / official, 2),
        required_vs_official=required,
        peak_mem_mb=_round(peak_mb['ours'], 1), ref_peak_mem_mb=_round(peak_mb['ref'], 1),
        max_abs_diff=_sig(diff), max_abs_diff_rel=_sig(diff / img_ref.abs().max().item()),
        ref_calls_per_forward=ref_calls, **train,
    )


def train_step_record(G_eval, spec):
    """StyleGAN2 only: one G+D training step (G in training mode, whose modulated convolutions are then not
    fused, as the official 'inference_only' default; D on fakes and reals; backward of both losses), ours
    against the official algorithm, interleaved; median seconds and the speedup."""
    G = copy.deepcopy(G_eval).train().requires_grad_(True)
    torch.manual_seed(2)
    D = sg2.Discriminator(c_dim=0, img_resolution=spec['resolution'], img_channels=3,
                          channel_base=spec['G_kwargs']['channel_base'], channel_max=spec['G_kwargs']['channel_max'],
                          conv_clamp=256, num_fp16_res=4).train().requires_grad_(True)
    z = torch.randn([spec['batch'], G.z_dim], generator=torch.Generator().manual_seed(3))
    reals = torch.rand([spec['batch'], 3, spec['resolution'], spec['resolution']],
                       generator=torch.Generator().manual_seed(4)) * 2 - 1

    def step():
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        loss = torch.nn.functional.softplus(-D(G(z, None), None)).sum() + torch.nn.functional.softplus(D(reals, None)).sum()
        loss.backward()
        return loss.detach()

    step()
    with official_ops():
        step()
    times = dict(ours=[], ref=[])
    for _ in range(spec['repeats']):
        for name in ('ours', 'ref'):
            with official_ops() if name == 'ref' else contextlib.nullcontext():
                times[name].append(timed(step))
    t_ours, t_ref = statistics.median(times['ours']), statistics.median(times['ref'])
    return dict(ours_train_step_s=round(t_ours, 4), ref_train_step_s=round(t_ref, 4),
                train_step_speedup=round(t_ref / t_ours, 2))


def _round(v, digits):
    return None if v is None else round(v, digits)


def _sig(v):
    return float(f'{v:.4g}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny shapes, for a smoke test')
    parser.add_argument('--repeats', type=int, default=None, help='timed repeats per measurement, ours and reference')
    parser.add_argument('--only', nargs='+', default=None, help='configurations to run, e.g. stylegan3-t-64')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads (default: all cores)')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)  # one configuration, as JSON
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.worker is not None:
        print(json.dumps(run_config(json.loads(args.worker))), flush=True)
        return

    specs = list(configs(args.quick))
    unknown = set(args.only or []) - {spec['config'] for spec in specs}
    if unknown:
        parser.error(f'unknown configurations {sorted(unknown)}; choose from {[spec["config"] for spec in specs]}')
    for spec in specs:
        if args.only and spec['config'] not in args.only:
            continue
        if args.repeats:
            spec.update(repeats=args.repeats, ref_repeats=args.repeats)
        # A fresh process per configuration, so that peak memory is not masked by earlier ones.
        result = subprocess.run([sys.executable, os.path.abspath(__file__), '--threads', str(args.threads),
                                 '--worker', json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            sys.exit(f'{spec["config"]}: worker failed with exit code {result.returncode}')
        print(result.stdout.strip(), flush=True)


if __name__ == '__main__':
    main()
