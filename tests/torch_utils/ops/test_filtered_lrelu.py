"""filtered_lrelu against independent oracles: a plain float64 numpy implementation of its
definition (values) and the same definition written with plain torch ops and autograd (gradients,
including the double backward used by R1), plus numerical gradcheck/gradgradcheck."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d as up_ops
from torch_utils.ops.filtered_lrelu import _filtered_lrelu_ref, filtered_lrelu

RNG = np.random.default_rng(4321)


def parse_padding(padding):
    if np.ndim(padding) == 0:
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return [int(p) for p in padding]


# ----------------------------------------------------------------------------------------------
# Oracle 1: numpy float64, straight from the definition.


def np_upfirdn(x, f, up, down, pad, flip_filter, gain):
    f = np.ones((1, 1)) if f is None else np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    k = (f if flip_filter else f[::-1, ::-1]) * gain
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    z = np.zeros((n, c, h * up, w * up))
    z[:, :, ::up, ::up] = x
    z = np.pad(z, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]
    oh, ow = z.shape[2] - k.shape[0] + 1, z.shape[3] - k.shape[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            out += k[i, j] * z[:, :, i:i + oh, j:j + ow]
    return out[:, :, ::down, ::down]


def np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter=False):
    """Returns (output, pre-activation upsampled signal times gain)."""
    x = np.asarray(x, dtype=np.float64)
    if b is not None:
        x = x + np.asarray(b, dtype=np.float64)[None, :, None, None]
    pre = np_upfirdn(x, fu, up, 1, parse_padding(padding), flip_filter, up ** 2) * gain
    y = np.where(pre > 0, pre, pre * slope)
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return np_upfirdn(y, fd, 1, down, [0, 0, 0, 0], flip_filter, 1), pre


# ----------------------------------------------------------------------------------------------
# Oracle 2: plain torch ops with ordinary autograd (for gradients).


def torch_upfirdn(x, f, up, down, pad, gain):
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]
    if f is not None:
        k = f.to(x.dtype)
        k = torch.outer(k, k) if k.ndim == 1 else k
        k = (k * gain).flip([0, 1])
        z = F.conv2d(z, k[None, None].repeat(c, 1, 1, 1), groups=c)
    elif gain != 1:
        z = z * gain
    return z[:, :, ::down, ::down]


def torch_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    if b is not None:
        x = x + b[None, :, None, None]
    y = torch_upfirdn(x, fu, up, 1, parse_padding(padding), up ** 2)
    y = F.leaky_relu(y, slope) * gain
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return torch_upfirdn(y, fd, 1, down, [0, 0, 0, 0], 1)


def tensor(a, dtype=torch.float64, requires_grad=False):
    return torch.tensor(a, dtype=dtype, requires_grad=requires_grad)


def lowpass(taps):
    return RNG.uniform(0.2, 1.0, taps).astype(np.float32)  # float32, like filters in networks


def assert_close(actual, expected, tol=1e-5):
    actual = actual.detach().double().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * max(1.0, np.abs(expected).max()))


# ----------------------------------------------------------------------------------------------
# Values.

CASES = [
    # up, down, padding, fu shape, fd shape
    (2, 2, [9, 8, 9, 8], (12,), (12,)),  # StyleGAN3 layer
    (4, 2, np.array([-1, -2, -2, -1]), (16,), (8,)),  # resolution-doubling layer, negative padding
    (2, 2, [3, 2], (4, 4), (3, 5)),  # full filters, non-square fd
    (2, 1, np.int64(3), (8,), None),
    (1, 2, [2, 3, 1, 2], None, (4, 4)),
    (1, 1, 1, (3, 3), (2, 2)),
    (4, 4, [5, 6, 7, 4], (16,), (16,)),
    (1, 1, 0, None, None),  # ToRGB: bias, gain, clamp only
]


@pytest.mark.parametrize('up,down,padding,fu_shape,fd_shape', CASES)
@pytest.mark.parametrize('slope,clamp', [(0.2, None), (0.2, 'some'), (0.0, None), (1.0, 'some')])
def test_matches_numpy_definition(up, down, padding, fu_shape, fd_shape, slope, clamp):
    x = RNG.standard_normal((2, 3, 10, 9))
    b = RNG.standard_normal(3)
    fu = None if fu_shape is None else lowpass(fu_shape)
    fd = None if fd_shape is None else lowpass(fd_shape)
    gain = 1.3
    if clamp == 'some':  # clamp about a third of the activations
        _, pre = np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, None)
        clamp = float(np.quantile(np.abs(np.where(pre > 0, pre, pre * slope)), 0.7))
    expected, _ = np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp)
    fu_t = None if fu is None else torch.tensor(fu)
    fd_t = None if fd is None else torch.tensor(fd)
    y = filtered_lrelu(tensor(x, torch.float32), fu_t, fd_t, tensor(b, torch.float32), up=up, down=down,
                       padding=padding, gain=gain, slope=slope, clamp=clamp)
    assert_close(y, expected)
    y64 = _filtered_lrelu_ref(tensor(x), fu_t, fd_t, tensor(b), up=up, down=down, padding=padding, gain=gain,
                              slope=slope, clamp=clamp)
    assert y64.dtype == torch.float64
    assert_close(y64, expected, tol=1e-12)


@pytest.mark.parametrize('flip_filter', [False, True])
def test_flip_filter(flip_filter):
    x = RNG.standard_normal((1, 2, 6, 7))
    fu, fd = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((4, 2)).astype(np.float32)
    expected, _ = np_filtered_lrelu(x, fu, fd, None, 2, 2, [3, 2, 2, 3], 1.0, 0.2, None, flip_filter)
    y = filtered_lrelu(tensor(x), torch.tensor(fu), torch.tensor(fd), up=2, down=2, padding=[3, 2, 2, 3],
                       gain=1.0, flip_filter=flip_filter)
    assert_close(y, expected, tol=1e-12)


def test_output_size_formula():
    for size, up, down, fu_taps, fd_taps, (p0, p1) in [
        (10, 2, 2, 12, 12, (9, 8)), (16, 4, 2, 24, 12, (-6, -9)), (7, 1, 2, 1, 4, (2, 1)),
        (9, 2, 1, 8, 1, (0, 0)), (8, 4, 4, 16, 16, (5, 6)),
    ]:
        x = torch.zeros(1, 1, size, size + 3)
        fu = torch.ones(fu_taps) if fu_taps >= 8 else torch.ones(fu_taps, fu_taps)
        fd = torch.ones(fd_taps) if fd_taps >= 8 else torch.ones(fd_taps, fd_taps)
        y = filtered_lrelu(x, fu, fd, up=up, down=down, padding=[p0, p1, p1, p0])
        out_w = ((size + 3) * up + p0 + p1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down
        out_h = (size * up + p1 + p0 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down
        assert tuple(y.shape) == (1, 1, out_h, out_w)


def test_torgb_configuration_is_bias_and_clamp():
    x = torch.randn(2, 3, 5, 6) * 4
    b = torch.randn(3)
    y = filtered_lrelu(x, b=b, gain=1, slope=1, clamp=2.5)
    assert torch.allclose(y, (x + b[None, :, None, None]).clamp(-2.5, 2.5))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = RNG.standard_normal((1, 4, 8, 8))
    b = RNG.standard_normal(4)
    fu, fd = lowpass(12), lowpass(12)
    xq = tensor(x, dtype)
    bq = tensor(b, dtype)
    expected, _ = np_filtered_lrelu(xq.double().numpy(), fu, fd, bq.double().numpy(), 2, 2, [9, 8, 9, 8], 2 ** 0.5,
                                    0.2, None)
    y = filtered_lrelu(xq, torch.tensor(fu), torch.tensor(fd), bq, up=2, down=2, padding=[9, 8, 9, 8])
    assert y.dtype == dtype
    assert_close(y, expected, tol=2e-2)


def test_channels_last_in_channels_last_out():
    x = torch.randn(2, 5, 9, 9)
    fu, fd = torch.tensor(lowpass(12)), torch.tensor(lowpass(12))
    y = filtered_lrelu(x, fu, fd, up=2, down=2, padding=[9, 8, 9, 8])
    y_cl = filtered_lrelu(x.contiguous(memory_format=torch.channels_last), fu, fd, up=2, down=2, padding=[9, 8, 9, 8])
    assert y.is_contiguous() and y_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, y_cl, atol=1e-6)


def test_impl_argument():
    x = torch.randn(1, 2, 6, 6)
    f = torch.tensor(lowpass(8))
    assert torch.equal(filtered_lrelu(x, f, f, up=2, down=2, padding=7, impl='cuda'),
                       filtered_lrelu(x, f, f, up=2, down=2, padding=7, impl='ref'))
    with pytest.raises(AssertionError):
        filtered_lrelu(x, impl='numpy')


# ----------------------------------------------------------------------------------------------
# Gradients.


def kink_distance(x, fu, fd, b, up, down, padding, gain, clamp):
    """Smallest distance of a pre-activation to the lrelu kink or the clamp boundary. Exact zeros
    come from padding or zero insertion; they do not depend on the input and are skipped."""
    _, pre = np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, 0.2, None)
    pre = pre[pre != 0]
    act = np.where(pre > 0, pre, pre * 0.2)
    d = np.abs(pre).min()
    if clamp is not None:
        d = min(d, np.abs(np.abs(act) - clamp).min())
    return d


@pytest.mark.parametrize('clamp', [None, 0.8])
def test_gradients_match_plain_autograd(clamp):
    x = RNG.standard_normal((2, 3, 7, 6))
    b = RNG.standard_normal(3)
    fu, fd = lowpass(8), lowpass(4)
    args = dict(up=2, down=2, padding=[4, 3, 3, 4], gain=1.4, slope=0.2, clamp=clamp)
    xs, bs = tensor(x, requires_grad=True), tensor(b, requires_grad=True)
    y = filtered_lrelu(xs, torch.tensor(fu), torch.tensor(fd), bs, **args)
    probe = torch.randn_like(y)
    grads = torch.autograd.grad(y, [xs, bs], probe)
    xr, br = tensor(x, requires_grad=True), tensor(b, requires_grad=True)
    yr = torch_filtered_lrelu(xr, torch.tensor(fu), torch.tensor(fd), br, **args)
    expected = torch.autograd.grad(yr, [xr, br], probe)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, atol=1e-10)


@pytest.mark.parametrize('up,down,padding,slope,clamp', [
    (2, 2, [3, 2, 2, 3], 1.0, None),
    (2, 2, [3, 2, 2, 3], 0.2, None),
    (4, 2, [-1, 2, 3, 2], 0.2, 'some'),
    (1, 2, [2, 1, 1, 2], 0.0, None),
])
def test_gradcheck_and_gradgradcheck(up, down, padding, slope, clamp):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 4, 5)) + 0.5
    b = rng.standard_normal(2)
    fu = lowpass(4 * up) if up > 1 else None
    fd = lowpass((4, 3))
    gain = 1.2
    if clamp == 'some':
        _, pre = np_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, None)
        clamp = float(np.quantile(np.abs(np.where(pre > 0, pre, pre * slope)), 0.8)) + 1e-3
    # Finite differences need every pre-activation well away from the kink and the clamp boundary.
    assert kink_distance(x, fu, fd, b, up, down, padding, gain, clamp) > 1e-4
    fu_t = None if fu is None else torch.tensor(fu)
    fd_t = torch.tensor(fd)

    def fn(xv, bv):
        return filtered_lrelu(xv, fu_t, fd_t, bv, up=up, down=down, padding=padding, gain=gain, slope=slope,
                              clamp=clamp)

    inputs = (tensor(x, requires_grad=True), tensor(b, requires_grad=True))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_r1_style_double_backward_matches_plain_autograd():
    # Gradient penalty on the input of a conv followed by filtered_lrelu, differentiated w.r.t.
    # the conv weight: needs the backward of filtered_lrelu to be differentiable in dy.
    rng = np.random.default_rng(11)
    img = tensor(rng.standard_normal((2, 2, 6, 6)))
    weight0 = rng.standard_normal((3, 2, 3, 3))
    b = tensor(rng.standard_normal(3))
    fu, fd = torch.tensor(lowpass(8)), torch.tensor(lowpass(8))
    args = dict(up=2, down=2, padding=[6, 5, 6, 5], gain=2 ** 0.5, slope=0.2, clamp=None)

    def penalty_grad(op):
        w = tensor(weight0, requires_grad=True)
        x = img.clone().requires_grad_()
        y = op(F.conv2d(x, w, padding=1), fu, fd, b, **args)
        (gx,) = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        return gw

    assert torch.allclose(penalty_grad(filtered_lrelu), penalty_grad(torch_filtered_lrelu), atol=1e-9)


def test_backward_saves_only_boolean_masks():
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    fu = torch.tensor(lowpass(12))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = filtered_lrelu(x, fu, fu, b, up=2, down=2, padding=[9, 8, 9, 8], clamp=0.5)
    assert saved and all(t.dtype == torch.bool for t in saved)
    y.sum().backward()
    assert x.grad is not None and b.grad is not None


@pytest.mark.parametrize('channels_last', [False, True])
def test_many_small_chunks(monkeypatch, channels_last):
    # Force many (sample, channel group) chunks, including a ragged last group, and check values
    # and gradients against the plain implementation.
    monkeypatch.setattr(up_ops, '_CHUNK_BYTES_CHANNELS_LAST', 1 << 10)
    monkeypatch.setattr(up_ops, '_CHUNK_BYTES_NCHW', 1 << 10)
    x = torch.randn(2, 40, 7, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    b = torch.randn(40, requires_grad=True)
    fu, fd = torch.tensor(lowpass(12)), torch.tensor(lowpass(12))
    args = dict(up=2, down=2, padding=[9, 8, 9, 8], gain=2 ** 0.5, slope=0.2, clamp=1.0)
    y = filtered_lrelu(x, fu, fd, b, **args)
    probe = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, [x, b], probe)
    xr, br = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    yr = torch_filtered_lrelu(xr, fu, fd, br, **args)
    ex, eb = torch.autograd.grad(yr, [xr, br], probe.double())
    assert torch.allclose(y.double(), yr, atol=1e-5)
    assert torch.allclose(gx.double(), ex, atol=1e-4)
    assert torch.allclose(gb.double(), eb, atol=1e-3)


def test_gradient_wrt_bias_only():
    x = torch.randn(1, 3, 6, 6)
    b = torch.randn(3, requires_grad=True)
    f = torch.tensor(lowpass(8))
    filtered_lrelu(x, f, f, b, up=2, down=2, padding=7).sum().backward()
    assert b.grad is not None and b.grad.shape == (3,)
