"""upfirdn2d's CUDA path without a GPU: the kernel compiles with nvcc for sm_80 and sm_90, its
per-sample arithmetic (upfirdn2d_math.h, compiled for the host) matches the reference path over
random up/down/padding/filter/flip settings, and the CUDA path's autograd, run on the CPU over that
arithmetic, matches the reference to second order. On a CUDA machine the parity tests at the end
compare the real kernel with the reference path."""

import ctypes

import numpy as np
import pytest
import torch

import cuda_sources
from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d as upfirdn2d_module


def test_kernel_file_includes_nothing_from_pytorch_but_half_and_bfloat16():
    allowed = {'<c10/util/BFloat16.h>', '<c10/util/Half.h>', '"upfirdn2d.h"', '"upfirdn2d_math.h"', '<cstdint>',
               '<cuda_runtime.h>'}
    for name in ('upfirdn2d_kernel.cu', 'upfirdn2d.h', 'upfirdn2d_math.h'):
        assert cuda_sources.includes_of(name) <= allowed, (name, cuda_sources.includes_of(name) - allowed)


@cuda_sources.needs_nvcc
def test_kernel_compiles_with_nvcc_for_sm80_and_sm90(tmp_path):
    result = cuda_sources.nvcc_compile('upfirdn2d_kernel.cu', str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / 'upfirdn2d_kernel.cu.o').stat().st_size > 0

# ----------------------------------------------------------------------------------------------
# The per-sample arithmetic, compiled for the host: one channel plane at a time.

_SHIM = r'''
#include "upfirdn2d_math.h"
extern "C" void plane(const float* x, int in_w, int in_h, const float* f, int fw, int fh, int up_x, int up_y,
                      int down_x, int down_y, int pad_x0, int pad_y0, int flip, float gain, float* out, int out_w,
                      int out_h) {
    const upfirdn2d::Geometry g{in_w, in_h, up_x, up_y, down_x, down_y, pad_x0, pad_y0, fw, fh, flip != 0, gain};
    for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox)
            out[oy * out_w + ox] = upfirdn2d::output_sample(g, f, ox, oy, [&](int ix, int iy) { return x[iy * in_w + ix]; });
}

// The tiled kernel's algorithm on one plane, one tile at a time (3 threads run in turn, so that the
// strided thread loops are exercised); returns -1 if a staged region exceeded max_region.
extern "C" int tiled_plane(const float* x, int in_w, int in_h, const float* f, int fw, int fh, int up_x, int up_y,
                           int down_x, int down_y, int pad_x0, int pad_y0, int flip, float gain, float* out, int out_w,
                           int out_h, int tile_w, int tile_h) {
    const upfirdn2d::Geometry g{in_w, in_h, up_x, up_y, down_x, down_y, pad_x0, pad_y0, fw, fh, flip != 0, gain};
    const int capacity = upfirdn2d::max_region(g, tile_w, tile_h);
    float* region = new float[capacity];
    int status = 0;
    for (int ty = 0; ty * tile_h < out_h; ++ty)
        for (int tx = 0; tx * tile_w < out_w; ++tx) {
            const upfirdn2d::Tile t = upfirdn2d::make_tile(g, out_w, out_h, tile_w, tile_h, tx, ty);
            if (t.in_w * t.in_h > capacity) { status = -1; continue; }
            for (int thread = 0; thread < 3; ++thread)
                upfirdn2d::stage_input(g, t, region, thread, 3, [&](int ix, int iy) { return x[iy * in_w + ix]; });
            for (int thread = 0; thread < 3; ++thread)
                upfirdn2d::tile_output(g, t, f, region, thread, 3, [&](int ox, int oy, float v) { out[oy * out_w + ox] = v; });
        }
    delete[] region;
    return status;
}
'''


@pytest.fixture(scope='module')
def host_upfirdn2d(tmp_path_factory):
    """(x [N, C, H, W], f2d, up, down, padding, flip, gain) -> float32 output, plane by plane."""
    lib = cuda_sources.host_library(_SHIM, str(tmp_path_factory.mktemp('upfirdn2d_math')))
    ptr = ctypes.POINTER(ctypes.c_float)
    lib.plane.argtypes = [ptr, ctypes.c_int, ctypes.c_int, ptr] + [ctypes.c_int] * 9 + [ctypes.c_float, ptr,
                                                                                        ctypes.c_int, ctypes.c_int]
    lib.tiled_plane.argtypes = lib.plane.argtypes + [ctypes.c_int, ctypes.c_int]

    def run(x, f2d, up, down, padding, flip, gain, tile=None):
        """`tile` = (w, h): the tiled kernel's algorithm with that tile size; None: the general kernel's."""
        n, c, h, w = x.shape
        out_w = (w * up[0] + padding[0] + padding[1] - f2d.shape[1] + down[0]) // down[0]
        out_h = (h * up[1] + padding[2] + padding[3] - f2d.shape[0] + down[1]) // down[1]
        f = np.ascontiguousarray(f2d, dtype=np.float32)
        out = np.empty([n, c, out_h, out_w], np.float32)
        for i in range(n):
            for j in range(c):
                xp = np.ascontiguousarray(x[i, j], dtype=np.float32)
                result = np.empty([out_h, out_w], np.float32)
                args = (xp.ctypes.data_as(ptr), w, h, f.ctypes.data_as(ptr), f.shape[1], f.shape[0], up[0], up[1],
                        down[0], down[1], padding[0], padding[2], int(flip), gain, result.ctypes.data_as(ptr), out_w, out_h)
                if tile is None:
                    lib.plane(*args)
                else:
                    assert lib.tiled_plane(*args, *tile) == 0, "a staged region exceeded max_region()"
                out[i, j] = result
        return out
    return run


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


class HostPlugin:
    """Stands in for the built module: the binding's output size and layout over the host arithmetic."""

    def __init__(self, run):
        self.run = run
        self.calls = 0

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
        assert f.dtype == torch.float32 and f.ndim == 2  # 1-D filters arrive as their outer product
        self.calls += 1
        out = self.run(x.detach().float().numpy(), f.numpy(), (up_x, up_y), (down_x, down_y),
                       (pad_x0, pad_x1, pad_y0, pad_y1), flip_filter, gain)
        return torch.from_numpy(out).to(x.dtype).contiguous(memory_format=upfirdn2d_module._memory_format(x))


@pytest.mark.parametrize('seed', range(6))
def test_cuda_path_autograd_matches_the_reference_to_second_order(host_upfirdn2d, monkeypatch, seed):
    plugin = HostPlugin(host_upfirdn2d)
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


def test_selected_impl_is_ref_off_cuda_and_when_kernels_are_disabled(monkeypatch):
    x = torch.randn([1, 1, 4, 4])
    assert upfirdn2d_module.selected_impl(x) == 'ref' and upfirdn2d_module.selected_impl(x, 'ref') == 'ref'
    monkeypatch.delenv(custom_ops.CUDA_KERNELS_ENV, raising=False)
    monkeypatch.setattr(custom_ops, 'try_get_plugin', lambda *a, **k: pytest.fail('no build while disabled'))
    assert upfirdn2d_module._plugin() is None

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
