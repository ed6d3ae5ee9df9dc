"""CUDA benchmark of the ops' fused kernels against their reference paths, in the same run.

Implemented so far: bias_act (forward + backward, lrelu with clamp, as every StyleGAN2 layer uses
it) at the StyleGAN2 layer shapes of 256x256 and 1024x1024 generators (batch 4; channels
min(32768 / res, 512)), in float32 and float16. upfirdn2d and filtered_lrelu follow with their
kernels. Needs a CUDA GPU; builds the kernels (RAYCOND_CUDA_KERNELS=1 is set for this process).
Prints one JSON object per measurement.

    python bench/ops_cuda.py            # about a minute on a GPU
    python bench/ops_cuda.py --quick    # small shapes, seconds
"""

import argparse
import json
import os
import sys
import time

os.environ['RAYCOND_CUDA_KERNELS'] = '1'

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils.ops import bias_act as bias_act_module  # noqa: E402


def stylegan2_layer_shapes(resolution, batch=4):
    """[N, C, H, W] of the activations after each StyleGAN2 synthesis conv (two per resolution)."""
    shapes, res = [], 4
    while res <= resolution:
        shapes += [[batch, min(32768 // res, 512), res, res]] * 2
        res *= 2
    return shapes


def time_call(fn, repeats):
    """Median seconds of fn() over `repeats` runs after two warm-up runs, synchronised."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bias_act_forward_backward(x, b, impl):
    def step():
        xr = x.detach().requires_grad_(True)
        br = b.detach().requires_grad_(True)
        y = bias_act_module.bias_act(xr, br, act='lrelu', clamp=256, impl=impl)
        y.backward(torch.ones_like(y))
    return step


def bench_bias_act(resolution, dtype, repeats):
    total = {'cuda': 0.0, 'ref': 0.0}
    for shape in stylegan2_layer_shapes(resolution):
        x = torch.randn(shape, device='cuda', dtype=dtype)
        b = torch.randn(shape[1], device='cuda', dtype=dtype)
        for impl in total:
            total[impl] += time_call(bias_act_forward_backward(x, b, impl), repeats)
    return dict(op='bias_act', passes='forward+backward', resolution=resolution, dtype=str(dtype).replace('torch.', ''),
                cuda_ms=round(total['cuda'] * 1e3, 3), ref_ms=round(total['ref'] * 1e3, 3),
                speedup=round(total['ref'] / total['cuda'], 2), gpu=torch.cuda.get_device_name())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small shapes and few repeats')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit('Error: bench/ops_cuda.py needs a CUDA GPU, and PyTorch sees none on this machine.')
    if bias_act_module.selected_impl(torch.zeros([1], device='cuda')) != 'cuda':
        sys.exit('Error: the bias_act CUDA kernel did not build (see the warning above); nothing to compare.')
    resolutions, repeats = ([32], 3) if args.quick else ([256, 1024], 20)
    for resolution in resolutions:
        for dtype in (torch.float32, torch.float16):
            print(json.dumps(bench_bias_act(resolution, dtype, repeats)), flush=True)


if __name__ == '__main__':
    main()
