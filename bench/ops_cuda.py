"""CUDA benchmark of the ops' fused kernels against their reference paths, in the same run.

Implemented so far, at the StyleGAN2 layer shapes of 256x256 and 1024x1024 generators (batch 4;
channels min(32768 / res, 512)), in float32 and float16:
- bias_act: forward + backward, lrelu with clamp, as every StyleGAN2 layer uses it;
- upfirdn2d: upsample2d and downsample2d by 2 with the [1, 3, 3, 1] filter, forward + backward;
and at the StyleGAN3-T layer shapes of 256x256 and 1024x1024 (batch 4; the exact arguments each
layer passes, recorded from one forward pass of the official-default synthesis network):
- filtered_lrelu: forward + backward.
And whole generators: images/s of G forward + backward (StyleGAN2 and StyleGAN3-T at 256x256, batch 8,
the official fp16 setting and conv clamp 256 of training) with the kernels and without them. Needs a CUDA GPU; builds the kernels (RAYCOND_CUDA_KERNELS=1 is set for this process).
Prints one JSON object per measurement.

    python bench/ops_cuda.py            # about a minute on a GPU
    python bench/ops_cuda.py --quick    # small shapes, seconds
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils import custom_ops  # noqa: E402
from torch_utils.ops import filtered_lrelu as fl_module  # noqa: E402
from torch_utils.ops import bias_act as bias_act_module  # noqa: E402
from torch_utils.ops import upfirdn2d as upfirdn2d_module  # noqa: E402


def stylegan2_layer_shapes(resolution, batch=4):
    """[N, C, H, W] of the activations after each StyleGAN2 synthesis conv (two per resolution)."""
    shapes, res = [], 4
    while res <= resolution:
        shapes += [[batch, min(32768 // res, 512), res, res]] * 2
        res *= 2
    return shapes


def time_call(fn, repeats, device):
    """Median seconds of fn() over `repeats` runs after two warm-up runs, synchronised."""
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bias_act_forward_backward(x, b, impl):
    def step():
        xr = x.detach().requires_grad_(True)
        br = b.detach().requires_grad_(True)
        y = bias_act_module.bias_act(xr, br, act='lrelu', clamp=256, impl=impl)
        y.backward(torch.ones_like(y))
    return step


def resample_forward_backward(x, f, op, impl):
    def step():
        xr = x.detach().requires_grad_(True)
        y = op(xr, f, impl=impl)
        y.backward(torch.ones_like(y))
    return step


def stylegan3_filtered_lrelu_calls(resolution, batch=4, device='cuda'):
    """(x shape, keyword arguments) of every filtered_lrelu call in one forward pass of a StyleGAN3-T
    synthesis network with the official defaults at this resolution."""
    from training import networks_stylegan3
    synthesis = networks_stylegan3.SynthesisNetwork(w_dim=512, img_resolution=resolution, img_channels=3).to(device)
    calls, original = [], fl_module.filtered_lrelu

    def record(x, **kwargs):
        calls.append(([batch, *x.shape[1:]], {k: v.detach() if torch.is_tensor(v) else v for k, v in kwargs.items()}))
        return original(x, **kwargs)
    fl_module.filtered_lrelu = record
    try:
        with torch.no_grad():
            synthesis(torch.randn([1, synthesis.num_ws, 512], device=device), force_fp32=True)
    finally:
        fl_module.filtered_lrelu = original
    return calls


def bench_filtered_lrelu(resolution, dtype, repeats, device='cuda'):
    total = {'cuda': 0.0, 'ref': 0.0}
    for shape, kwargs in stylegan3_filtered_lrelu_calls(resolution, device=device):
        x = torch.randn(shape, device=device, dtype=dtype)
        kwargs = dict(kwargs, b=kwargs['b'].to(dtype))
        for impl in total:
            def step(impl=impl):
                xr = x.detach().requires_grad_(True)
                y = fl_module.filtered_lrelu(xr, **dict(kwargs, impl=impl))
                y.backward(torch.ones_like(y))
            total[impl] += time_call(step, repeats, device)
    return dict(op='filtered_lrelu', passes='forward+backward', resolution=resolution, shapes='stylegan3-t',
                dtype=str(dtype).replace('torch.', ''), cuda_ms=round(total['cuda'] * 1e3, 3),
                ref_ms=round(total['ref'] * 1e3, 3), speedup=round(total['ref'] / total['cuda'], 2),
                gpu=torch.cuda.get_device_name() if device == 'cuda' else None)


def build_generator(cfg, resolution, device='cuda', channel_base=32768, channel_max=512):
    """The generator `cfg` ('stylegan2' or 'stylegan3-t') as train.py builds it (fp16 on the 4 highest
    resolutions, conv_clamp 256), without a class label."""
    from training import networks_stylegan2, networks_stylegan3
    module = networks_stylegan2 if cfg == 'stylegan2' else networks_stylegan3
    mapping = dict(num_layers=8 if cfg == 'stylegan2' else 2)
    return module.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                            mapping_kwargs=mapping, channel_base=channel_base, channel_max=channel_max,
                            num_fp16_res=4, conv_clamp=256).to(device)


def bench_generator(cfg, resolution, batch, repeats, device='cuda', **size):
    """G forward + backward images/s with the kernels (RAYCOND_CUDA_KERNELS=1) and without."""
    G = build_generator(cfg, resolution, device, **size)
    z = torch.randn([batch, G.z_dim], device=device)
    c = torch.zeros([batch, 0], device=device)

    def step():
        G.zero_grad(set_to_none=True)
        G(z, c).float().square().mean().backward()
    seconds = {}
    saved = os.environ.get(custom_ops.CUDA_KERNELS_ENV)
    try:
        for kernels in ('1', '0'):
            os.environ[custom_ops.CUDA_KERNELS_ENV] = kernels
            seconds[kernels] = time_call(step, repeats, device)
    finally:
        if saved is None:
            os.environ.pop(custom_ops.CUDA_KERNELS_ENV, None)
        else:
            os.environ[custom_ops.CUDA_KERNELS_ENV] = saved
    return dict(op=f'G_{cfg}', passes='forward+backward', resolution=resolution, batch=batch,
                cuda_images_per_s=round(batch / seconds['1'], 2), ref_images_per_s=round(batch / seconds['0'], 2),
                speedup=round(seconds['0'] / seconds['1'], 2),
                gpu=torch.cuda.get_device_name() if device == 'cuda' else None)


def bench_op(name, make_step, resolution, dtype, repeats, device='cuda'):
    """Sum over the layer shapes of the median forward+backward time, kernel against reference.
    (On a CPU device both run the reference path: that only checks the script.)"""
    total = {'cuda': 0.0, 'ref': 0.0}
    for shape in stylegan2_layer_shapes(resolution):
        x = torch.randn(shape, device=device, dtype=dtype)
        for impl in total:
            total[impl] += time_call(make_step(x, impl), repeats, device)
    return dict(op=name, passes='forward+backward', resolution=resolution, dtype=str(dtype).replace('torch.', ''),
                cuda_ms=round(total['cuda'] * 1e3, 3), ref_ms=round(total['ref'] * 1e3, 3),
                speedup=round(total['ref'] / total['cuda'], 2),
                gpu=torch.cuda.get_device_name() if device == 'cuda' else None)


def measurements(device='cuda'):
    """(name, make_step(x, impl)) for every op measured."""
    f = upfirdn2d_module.setup_filter([1, 3, 3, 1], device=device)
    return [
        ('bias_act', lambda x, impl: bias_act_forward_backward(x, torch.randn(x.shape[1], device=device, dtype=x.dtype),
                                                               impl)),
        ('upsample2d', lambda x, impl: resample_forward_backward(x, f, upfirdn2d_module.upsample2d, impl)),
        ('downsample2d', lambda x, impl: resample_forward_backward(x, f, upfirdn2d_module.downsample2d, impl)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small shapes and few repeats')
    args = parser.parse_args(argv)
    os.environ[custom_ops.CUDA_KERNELS_ENV] = '1'  # this process only
    if not torch.cuda.is_available():
        sys.exit('Error: bench/ops_cuda.py needs a CUDA GPU, and PyTorch sees none on this machine.')
    probe = torch.zeros([1, 1, 1, 1], device='cuda')
    for name, module in (('bias_act', bias_act_module), ('upfirdn2d', upfirdn2d_module),
                         ('filtered_lrelu', fl_module)):
        if module.selected_impl(probe) != 'cuda':
            sys.exit(f'Error: the {name} CUDA kernel did not build (see the warning above); nothing to compare.')
    resolutions, repeats = ([32], 3) if args.quick else ([256, 1024], 20)
    for resolution in resolutions:
        for dtype in (torch.float32, torch.float16):
            for name, make_step in measurements():
                print(json.dumps(bench_op(name, make_step, resolution, dtype, repeats)), flush=True)
            print(json.dumps(bench_filtered_lrelu(resolution, dtype, repeats)), flush=True)
    for cfg in ('stylegan2', 'stylegan3-t'):
        resolution, batch = (32, 2) if args.quick else (256, 8)
        print(json.dumps(bench_generator(cfg, resolution, batch, max(3, repeats // 2))), flush=True)


if __name__ == '__main__':
    main()
