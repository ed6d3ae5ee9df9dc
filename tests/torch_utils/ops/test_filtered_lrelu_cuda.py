"""filtered_lrelu's fused CUDA path without a GPU (compilation: test_cuda_sources.py): its tile
algorithm (filtered_lrelu_math.h, compiled for the host) gives the reference output and the
reference's sign masks (as packed bits) over random settings and tile sizes, and the CUDA path's
autograd, run on the CPU over the host builds of this kernel and of upfirdn2d's, matches the
reference to second order. On a CUDA machine the parity tests at the end use the real kernels."""

import numpy as np
import pytest
import torch

import host_kernels
from torch_utils import custom_ops
from torch_utils.ops import filtered_lrelu as fl_module
from torch_utils.ops import upfirdn2d as upfirdn2d_module


@pytest.fixture(scope='module')
def host_fused(tmp_path_factory):
    return host_kernels.load_filtered_lrelu(tmp_path_factory.mktemp('filtered_lrelu_math'))


def _random_case(rng):
    return dict(fu=torch.tensor(rng.normal(size=int(rng.integers(1, 13)))),
                fd=torch.tensor(rng.normal(size=int(rng.integers(1, 13)))),
                up=int(rng.choice([1, 2, 4])), down=int(rng.choice([1, 2, 4])),
                padding=[int(p) for p in rng.integers(0, 12, 4)], gain=float(rng.uniform(0.5, 2)),
                slope=float(rng.choice([0.2, 0.0, 1.0])), clamp=[None, 0.5][int(rng.integers(0, 2))],
                flip_filter=bool(rng.random() < 0.5))


def _used(n_out, n_hi, down, taps):
    """Upsampled samples some output reads (the kernel computes no others; their gradient is 0)."""
    return np.array([any(o * down <= h < o * down + taps for o in range(n_out)) for h in range(n_hi)])


@pytest.mark.parametrize('tile', [(32, 32), (3, 5), (1, 1)])
def test_host_tile_algorithm_gives_the_reference_output_and_sign_bits(host_fused, tile):
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 60:
        case = _random_case(rng)
        x = torch.tensor(rng.normal(size=(1, 2, int(rng.integers(3, 12)), int(rng.integers(3, 12)))))
        b = torch.tensor(rng.normal(size=2))
        try:
            want = fl_module.filtered_lrelu(x, b=b, impl='ref', **case)  # float64 reference
        except ValueError:  # the filters do not fit
            continue
        cfg = fl_module._config(x, b=b, **case)
        hi = upfirdn2d_module._upfirdn2d_ref(x + b.reshape(1, -1, 1, 1), **cfg.up_pass())
        act = torch.nn.functional.leaky_relu(hi, cfg.slope)
        positive = (act > 0).numpy()
        clamped = (act.abs() > cfg.clamp).numpy() if cfg.clamp is not None else np.zeros_like(positive)
        hi_h, hi_w = hi.shape[2:]
        f2d = lambda f: (f[:, None] * f[None, :]).numpy()  # noqa: E731
        out, bits = host_fused(x.numpy(), b.numpy(), f2d(case['fu']), f2d(case['fd']), cfg.up, cfg.down,
                               cfg.padding[0], cfg.padding[2], hi_w, hi_h, cfg.flip_filter, cfg.up_pass()['gain'],
                               cfg.slope, -1.0 if cfg.clamp is None else cfg.clamp, tile)
        np.testing.assert_allclose(out, want.numpy(), rtol=1e-5, atol=1e-5 * max(1.0, float(want.abs().max())),
                                   err_msg=str(case))
        pos_bits, clamp_bits = fl_module._unpack_sign_bits(torch.from_numpy(bits.view(np.int32)), hi_w)
        used = (_used(want.shape[2], hi_h, cfg.down, case['fd'].numel())[:, None]
                & _used(want.shape[3], hi_w, cfg.down, case['fd'].numel())[None, :])
        assert (pos_bits.numpy() == positive)[..., used].all(), case
        assert (clamp_bits.numpy() == clamped)[..., used].all(), case
        checked += 1


@pytest.mark.parametrize('seed', range(6))
def test_cuda_path_autograd_matches_the_reference_to_second_order(host_fused, monkeypatch, tmp_path_factory, seed):
    fused_plugin = host_kernels.FilteredLReLUHostPlugin(host_fused)
    upfirdn_plugin = host_kernels.UpfirdnHostPlugin(host_kernels.load_upfirdn2d(tmp_path_factory.mktemp('upf')))
    monkeypatch.setattr(fl_module, '_plugin', lambda: fused_plugin)
    monkeypatch.setattr(upfirdn2d_module, '_plugin', lambda: upfirdn_plugin)
    rng = np.random.default_rng(200 + seed)
    gen = torch.Generator().manual_seed(seed)
    while True:
        case = _random_case(rng)
        case.update(fu=case['fu'].float(), fd=case['fd'].float(), clamp=[None, 0.8][seed % 2])
        x = torch.randn([2, 3, int(rng.integers(4, 10)), int(rng.integers(4, 10))], generator=gen)
        try:
            fl_module.filtered_lrelu(x, impl='ref', **case)
            break
        except ValueError:
            continue
    if seed % 3 == 0:
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn([3], generator=gen)
    results = []
    for run in ('cuda', 'ref'):
        xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        if run == 'cuda':
            cfg = fl_module._config(xr, b=br, **case)
            y = fl_module._FilteredLReLUCuda.apply(xr, br, cfg, True)
        else:
            y = fl_module.filtered_lrelu(xr, b=br, impl='ref', **case)
        weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        gx, gb = torch.autograd.grad((y.square() * weight).sum(), [xr, br], create_graph=True)
        ggx, ggb = torch.autograd.grad(gx.square().sum() + gb.square().sum(), [xr, br])
        results.append((y, gx, gb, ggx, ggb))
    assert fused_plugin.calls == 1 and upfirdn_plugin.calls >= 4  # the backward passes ran the upfirdn2d kernel
    assert results[0][0].is_contiguous(memory_format=upfirdn2d_module._memory_format(x))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(want.detach().abs().max())))


# ----------------------------------------------------------------------------------------------
# The real kernel (CUDA machines).

_TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.float16: dict(rtol=2e-3, atol=5e-3)}


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('up,down', [(1, 1), (2, 2), (1, 2), (2, 1), (4, 2), (2, 4)])
@pytest.mark.parametrize('clamp', [None, 0.5])
def test_cuda_kernel_matches_reference(monkeypatch, dtype, layout, up, down, clamp):
    monkeypatch.setenv(custom_ops.CUDA_KERNELS_ENV, '1')
    gen = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn([2, 16, 24, 20], device='cuda', generator=gen).to(dtype)
    b = torch.randn([16], device='cuda', generator=gen).to(dtype)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    fu = upfirdn2d_module.setup_filter(torch.rand([12], generator=torch.Generator().manual_seed(1)), device='cuda',
                                       separable=True)
    fd = upfirdn2d_module.setup_filter(torch.rand([12], generator=torch.Generator().manual_seed(2)), device='cuda',
                                       separable=True)
    kwargs = dict(fu=fu, fd=fd, up=up, down=down, padding=[10, 9, 8, 11], gain=np.sqrt(2), slope=0.2, clamp=clamp)
    assert fl_module.selected_impl(x) == 'cuda'
    outs = []
    for impl in ('cuda', 'ref'):
        xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = fl_module.filtered_lrelu(xr, b=br, impl=impl, **kwargs)
        gx, gb = torch.autograd.grad(y.float().square().sum(), [xr, br], create_graph=True)
        ggx, = torch.autograd.grad(gx.float().square().sum(), [xr])
        outs.append([t.float() for t in (y, gx, gb, ggx)])
    for got, want in zip(*outs):
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got, want, rtol=_TOLERANCE[dtype]['rtol'], atol=_TOLERANCE[dtype]['atol'] * scale)
