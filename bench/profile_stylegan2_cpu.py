"""Where StyleGAN2's CPU time goes: ours and the official algorithm side by side, per op (torch.profiler).

For G forward (inference: fused modulated convolutions), for a G+D training step (G in training
mode, D on fakes and reals, backward) and for R1 (D on reals, gradient with create_graph, backward of
the penalty: the double backward), at 64x64 and 256x256 (batch 4, channel_base 16384, fp32), it
profiles our networks and the same networks with the official algorithm patched in
(`generator_cpu.official_ops`: StyleGAN2's modulated convolution with materialised per-sample weights
and grouped convolutions, upfirdn2d as pad + zero-stuffing + depthwise conv). Prints one JSON object
per (resolution, mode, implementation) with the total and the self CPU milliseconds of the busiest
aten ops per run, so the two columns can be read side by side.

    OMP_WAIT_POLICY=PASSIVE python bench/profile_stylegan2_cpu.py [--resolutions 64 256] [--top 10]
"""

import argparse
import contextlib
import copy
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (BENCH_DIR, os.path.dirname(BENCH_DIR)) if p not in sys.path]

import generator_cpu  # noqa: E402
from training import networks_stylegan2 as sg2  # noqa: E402


def networks(resolution, quick):
    G = generator_cpu.build_generator(generator_cpu.generator_kwargs('stylegan2', resolution, quick))
    base = G.init_kwargs.channel_base
    torch.manual_seed(2)
    D = sg2.Discriminator(c_dim=0, img_resolution=resolution, img_channels=3, channel_base=base, channel_max=512,
                          conv_clamp=256, num_fp16_res=4)
    return G, D


def modes(G, D, batch, resolution):
    z = torch.randn([batch, G.z_dim], generator=torch.Generator().manual_seed(1))
    reals = torch.rand([batch, 3, resolution, resolution], generator=torch.Generator().manual_seed(4)) * 2 - 1
    G_train = copy.deepcopy(G).train().requires_grad_(True)
    D_train = copy.deepcopy(D).train().requires_grad_(True)

    def forward():
        with torch.no_grad():
            G(z, None, noise_mode='const')

    def train_step():
        loss = torch.nn.functional.softplus(-D_train(G_train(z, None), None)).sum() + \
            torch.nn.functional.softplus(D_train(reals, None)).sum()
        loss.backward()

    def r1():
        x = reals.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D_train(x, None).sum(), [x], create_graph=True)
        grad.square().sum().backward()

    return dict(G_forward=forward, GD_train_step=train_step, R1=r1)


def profile_run(fn, repeats):
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    events = [e for e in prof.key_averages() if e.key.startswith('aten::')]
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / repeats
    return total, sorted(events, key=lambda e: -e.self_cpu_time_total)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolutions', type=int, nargs='+', default=[64, 256])
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--top', type=int, default=10)
    parser.add_argument('--quick', action='store_true', help='channel_base 1024, for a smoke test')
    args = parser.parse_args()
    for resolution in args.resolutions:
        G, D = networks(resolution, args.quick)
        for mode, fn in modes(G, D, 4, resolution).items():
            for impl in ('ours', 'official'):
                with generator_cpu.official_ops() if impl == 'official' else contextlib.nullcontext():
                    total, events = profile_run(fn, args.repeats)
                top = [dict(op=e.key, self_ms=round(e.self_cpu_time_total / 1e3 / args.repeats, 1),
                            calls=e.count // args.repeats) for e in events[:args.top]]
                print(json.dumps(dict(resolution=resolution, mode=mode, impl=impl, threads=torch.get_num_threads(),
                                      aten_self_ms=round(total, 1), top_ops=top)), flush=True)


if __name__ == '__main__':
    main()
