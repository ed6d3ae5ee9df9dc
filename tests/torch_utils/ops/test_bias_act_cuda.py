"""bias_act's CUDA path without a GPU (compilation: test_cuda_sources.py): the kernel's per-element
arithmetic (bias_act_math.h, compiled for the host) matches float64 autograd for every
activation and derivative order, and the autograd wiring of the CUDA path, run on the CPU over that
same arithmetic, matches the reference path to second order. On a CUDA machine the parity tests at
the end compare the real kernel with the reference path."""

import ctypes

import numpy as np
import pytest
import torch

import cuda_sources
from torch_utils import custom_ops
from torch_utils.ops import bias_act as bias_act_module
from torch_utils.ops.bias_act import activation_funcs, bias_act

ACTS = sorted(activation_funcs)


# ----------------------------------------------------------------------------------------------
# The per-element arithmetic, compiled for the host.

_SHIM = r'''
#include "bias_act_math.h"
extern "C" void eval_elements(int mode, int act, const float* s, const float* y, const float* dy, float* out,
                              long n, float alpha, float gain, float clamp) {
    for (long i = 0; i < n; ++i)
        out[i] = bias_act::element(mode, act, s[i], y[i], dy[i], alpha, gain, clamp);
}
'''


@pytest.fixture(scope='module')
def host_math(tmp_path_factory):
    """`eval(mode, act, s, y, dy, alpha, gain, clamp)` over float32 numpy arrays, from bias_act_math.h."""
    lib = cuda_sources.host_library(_SHIM, str(tmp_path_factory.mktemp('bias_act_math')))
    pointer = ctypes.POINTER(ctypes.c_float)
    lib.eval_elements.argtypes = [ctypes.c_int, ctypes.c_int, pointer, pointer, pointer, pointer, ctypes.c_long,
                                  ctypes.c_float, ctypes.c_float, ctypes.c_float]

    def evaluate(mode, act, s, y, dy, alpha, gain, clamp):
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (s, y, dy)]
        out = np.empty_like(arrays[0])
        lib.eval_elements(mode, activation_funcs[act].cuda_idx, *[a.ctypes.data_as(pointer) for a in arrays],
                          out.ctypes.data_as(pointer), out.size, alpha, gain, -1.0 if clamp is None else clamp)
        return out
    return evaluate


def _oracle(act, s, alpha, gain, clamp):
    """float64 autograd: (y, act'(s), act''(s), unclamped mask, act(s) * gain before the clamp)."""
    s = torch.as_tensor(s, dtype=torch.float64).requires_grad_(True)
    u = activation_funcs[act].func(s, alpha=alpha)
    d1, = torch.autograd.grad(u.sum(), s, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), s, allow_unused=True) if d1.requires_grad else (None,)
    d2 = torch.zeros_like(s) if d2 is None else d2
    scaled = u * gain
    inside = torch.ones_like(scaled, dtype=torch.bool) if clamp is None else scaled.abs() < clamp
    y = scaled if clamp is None else scaled.clamp(-clamp, clamp)
    return y.detach().numpy(), d1.detach().numpy(), d2.detach().numpy(), inside.numpy(), scaled.detach().numpy()


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('gain,clamp', [(None, None), (0.7, None), (1.9, 0.8)])
def test_host_arithmetic_matches_float64_autograd(host_math, act, gain, clamp):
    spec = activation_funcs[act]
    alpha = 0.3 if act == 'lrelu' else spec.def_alpha
    gain = float(spec.def_gain if gain is None else gain)
    rng = np.random.default_rng(activation_funcs[act].cuda_idx)
    s = np.concatenate([rng.normal(0, 2, 4000), [0.0, 25.0, -25.0]]).astype(np.float32)
    s = s[np.abs(s - 0) > 1e-3] if act in ('relu', 'lrelu', 'elu', 'selu') else s  # kinks: no derivative at 0
    dy = rng.normal(0, 1, s.size).astype(np.float32)
    y, d1, d2, inside, scaled = _oracle(act, s, alpha, gain, clamp)
    if clamp is not None:  # away from the clamp bound, where "clamped" is a matter of rounding
        keep = np.abs(np.abs(scaled) - clamp) > 1e-4
        s, dy, y, d1, d2, inside = s[keep], dy[keep], y[keep], d1[keep], d2[keep], inside[keep]
    y32 = host_math(0, act, s, s, s, alpha, gain, clamp)
    np.testing.assert_allclose(y32, y, rtol=2e-6, atol=2e-6)
    if clamp is not None:
        assert (~inside).sum() > 100  # the clamp is exercised
    # The derivatives read the float32 output y (or s), as the backward kernels do.
    for mode, derivative in ((1, d1), (2, d2)):
        got = host_math(mode, act, s, y32, dy, alpha, gain, clamp)
        want = dy * gain * derivative * inside
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))

# ----------------------------------------------------------------------------------------------
# The CUDA path's autograd wiring, on the CPU over the host arithmetic.


class HostPlugin:
    """Stands in for the built module: the kernel's indexing (memory order, bias index
    (i / stride) % size) over bias_act_math.h compiled for the host."""

    def __init__(self, evaluate):
        self.evaluate = evaluate
        self.calls = []

    def bias_act(self, like, x, b, y, dy, dim, act_idx, mode, alpha, gain, clamp):
        self.calls.append(mode)
        act = next(name for name, spec in activation_funcs.items() if spec.cuda_idx == act_idx)
        n = like.numel()

        def memory_order(t):
            if t.numel() == 0:
                return np.zeros(n, np.float32)
            assert t.stride() == like.stride() and t.shape == like.shape  # the binding's check
            return t.detach().as_strided([n], [1]).numpy()
        s = memory_order(x)
        if b.numel():
            index = (np.arange(n) // like.stride(dim)) % like.shape[dim]
            s = s + b.detach().numpy()[index]
        out = self.evaluate(mode, act, s, memory_order(y), memory_order(dy), alpha, gain, None if clamp < 0 else clamp)
        result = torch.empty_like(like)
        result.as_strided([n], [1]).copy_(torch.from_numpy(out))
        return result


@pytest.fixture
def host_plugin(host_math, monkeypatch):
    plugin = HostPlugin(host_math)
    monkeypatch.setattr(bias_act_module, '_plugin', lambda: plugin)
    return plugin


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_cuda_path_autograd_matches_the_reference_to_second_order(host_plugin, act, layout):
    gen = torch.Generator().manual_seed(activation_funcs[act].cuda_idx)
    x = torch.randn([3, 5, 4, 6], generator=gen)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    b = torch.randn([5], generator=gen)
    clamp = 1.5 if act in ('lrelu', 'linear', 'swish') else None
    kwargs = dict(act=act, clamp=clamp, gain=1.3)
    cuda_fn = bias_act_module._bias_act_cuda(dim=1, act=act, alpha=float(activation_funcs[act].def_alpha),
                                             gain=1.3, clamp=clamp)
    results = []
    for run in ('cuda', 'ref'):
        xr, br = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = cuda_fn.apply(xr, br) if run == 'cuda' else bias_act(xr, br, impl='ref', **kwargs)
        weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        gx, gb = torch.autograd.grad((y * weight).sum(), [xr, br], create_graph=True)
        # A second-order quantity like R1: the gradient of the squared first derivative.
        second = gx.square().sum() + gb.square().sum()
        ggx, ggb = torch.autograd.grad(second, [xr, br], allow_unused=True) if second.requires_grad else (None, None)
        results.append([y, gx, gb, ggx, ggb])
    if layout == 'channels_last':
        assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(*results):
        if want is None or got is None:
            assert (got is None or float(got.abs().max()) == 0) and (want is None or float(want.abs().max()) < 1e-6)
            continue
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert set(host_plugin.calls) == ({0, 1, 2} if activation_funcs[act].has_2nd_grad else {0, 1})


def test_selected_impl_rejects_an_unknown_impl():
    with pytest.raises(ValueError, match='impl'):
        bias_act_module.selected_impl(torch.randn([2, 3]), impl='fast')

# ----------------------------------------------------------------------------------------------
# The real kernel (CUDA machines; RAYCOND_CUDA_KERNELS=1 is set for these tests).


@pytest.fixture
def cuda_kernels(monkeypatch):
    monkeypatch.setenv(custom_ops.CUDA_KERNELS_ENV, '1')
    if bias_act_module._plugin() is None:
        pytest.fail('the bias_act plugin did not build on this CUDA machine')


# Tolerances per dtype: float32 matches to rounding; float16 / bfloat16 compare against the
# reference path computed in float32 from the same rounded inputs, within a few units of their last place.
_TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3),
              torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('clamp', [None, 0.9])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_cuda_kernel_matches_reference(cuda_kernels, dtype, act, clamp, layout):
    gen = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn([4, 16, 9, 7], device='cuda', generator=gen).to(dtype)
    b = torch.randn([16], device='cuda', generator=gen).to(dtype)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    assert bias_act_module.selected_impl(x, b, act=act, clamp=clamp) == 'cuda'
    outs = []
    for impl in ('cuda', 'ref'):
        xr = (x if impl == 'cuda' else x.float()).clone().requires_grad_(True)
        br = (b if impl == 'cuda' else b.float()).clone().requires_grad_(True)
        y = bias_act(xr, br, act=act, clamp=clamp, impl=impl)
        gx, gb = torch.autograd.grad(y.float().square().sum(), [xr, br], create_graph=True)
        ggx, = torch.autograd.grad(gx.float().square().sum() + gb.float().square().sum(), [xr], allow_unused=True)
        outs.append([t if t is None else t.float() for t in (y, gx, gb, ggx)])
    for got, want in zip(*outs):
        if want is None or got is None:
            continue
        torch.testing.assert_close(got, want, **_TOLERANCE[dtype])
