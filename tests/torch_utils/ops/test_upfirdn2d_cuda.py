"""upfirdn2d's CUDA path without a GPU (compilation: test_cuda_sources.py): its per-sample and tiled
arithmetic (upfirdn2d_math.h, compiled for the host) matches the reference path over
random up/down/padding/filter/flip settings, and the CUDA path's autograd, run on the CPU over that
arithmetic, matches the reference to second order. On a CUDA machine the parity tests at the end
compare the real kernel with the reference path."""


import numpy as np
import pytest
import torch

import host_kernels
from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d as upfirdn2d_module


# ----------------------------------------------------------------------------------------------
# The per-sample arithmetic, compiled for the host: one channel plane at a time.

@pytest.fixture(scope='module')
def host_upfirdn2d(tmp_path_factory):
    return host_kernels.load_upfirdn2d(tmp_path_factory.mktemp('upfirdn2d_math'))


def _random_case(rng):
    up = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    down = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    separable = bool(rng.random() < 0.4)
    fw, fh = int(rng.integers(1, 13)), int(rng.integers(1, 13))
    f = torch.tensor(rng.normal(size=(fw,) if separable else (fh, fw)), dtype=torch.float64)
    padding = [int(p) for p in rng.integers(-3, 9, 4)]
    return dict(f=f, up=up, down=down, padding=padding, flip_filter=bool(rng.random() < 0.5),
                gain=float(rng.uniform(0.5, 3)))


TILES = [None, (32, 32), (5, 3), (1, 1), (2, 7)]


@pytest.mark.parametrize('tile', TILES, ids=['general'] + [f'tile{w}x{h}' for w, h in TILES[1:]])
def test_host_arithmetic_matches_the_reference_over_random_settings(host_upfirdn2d, tile):
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 150:
        case = _random_case(rng)
        x = torch.tensor(rng.normal(size=(1, 2, int(rng.integers(2, 14)), int(rng.integers(2, 14)))))
        try:
            want = upfirdn2d_module.upfirdn2d(x, impl='ref', **case)  # float64 reference
        except ValueError:  # the filter does not fit: no output to compare
            continue
        f = case['f']
        f2d = (f[:, None] * f[None, :]) if f.ndim == 1 else f
        got = host_upfirdn2d(x.float().numpy(), f2d.float().numpy(), case['up'], case['down'], case['padding'],
                             case['flip_filter'], case['gain'], tile)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5 * max(1.0, float(want.detach().abs().max())),
                                   err_msg=str(case))
        checked += 1

# ----------------------------------------------------------------------------------------------
# The CUDA path's autograd, on the CPU over the host arithmetic.


@pytest.mark.parametrize('seed', range(6))
def test_cuda_path_autograd_matches_the_reference_to_second_order(host_upfirdn2d, monkeypatch, seed):
    plugin = host_kernels.UpfirdnHostPlugin(host_upfirdn2d)
    monkeypatch.setattr(upfirdn2d_module, '_plugin', lambda: plugin)
    rng = np.random.default_rng(100 + seed)
    while True:
        case = _random_case(rng)
        case['f'] = case['f'].float()
        x = torch.randn([2, 3, int(rng.integers(3, 10)), int(rng.integers(3, 10))], generator=torch.Generator().manual_seed(seed))
        try:
            upfirdn2d_module.upfirdn2d(x, impl='ref', **case)
            break
        except ValueError:
            continue
    if seed % 2:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for use_kernel in (True, False):
        xr = x.clone().requires_grad_(True)
        y = upfirdn2d_module._upfirdn2d_ref(xr, use_kernel=use_kernel, **case)
        weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        g, = torch.autograd.grad((y.square() * weight).sum(), xr, create_graph=True)
        gg, = torch.autograd.grad(g.square().sum(), xr)
        results.append((y, g, gg))
    assert plugin.calls >= 3  # forward, backward and the backward's backward all ran the kernel
    assert results[0][0].is_contiguous(memory_format=upfirdn2d_module._memory_format(x))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(want.detach().abs().max())))


# ----------------------------------------------------------------------------------------------
# The real kernel (CUDA machines).

_TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float16: dict(rtol=2e-3, atol=5e-3)}


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (2, 2)])
@pytest.mark.parametrize('taps,separable', [(4, False), (12, True), (24, True), (26, True)])  # 26: the general kernel
def test_cuda_kernel_matches_reference(monkeypatch, dtype, layout, up, down, taps, separable):
    monkeypatch.setenv(custom_ops.CUDA_KERNELS_ENV, '1')
    gen = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn([2, 8, 20, 18], device='cuda', generator=gen).to(dtype)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    f = upfirdn2d_module.setup_filter(torch.rand([taps], generator=torch.Generator().manual_seed(taps)),
                                      device='cuda', separable=separable)
    padding = [taps // 2, (taps - 1) // 2, taps // 2 - 1, (taps - 1) // 2 + 1]
    assert upfirdn2d_module.selected_impl(x) == 'cuda'
    outs = []
    for impl in ('cuda', 'ref'):
        xr = x.clone().requires_grad_(True)
        y = upfirdn2d_module.upfirdn2d(xr, f, up=up, down=down, padding=padding, gain=up * up, impl=impl)
        g, = torch.autograd.grad(y.float().square().sum(), xr, create_graph=True)
        gg, = torch.autograd.grad(g.float().square().sum(), xr)
        outs.append([t.float() for t in (y, g, gg)])
    for got, want in zip(*outs):
        scale = max(1.0, float(want.detach().abs().max()))
        torch.testing.assert_close(got, want, rtol=_TOLERANCE[dtype]['rtol'], atol=_TOLERANCE[dtype]['atol'] * scale)
