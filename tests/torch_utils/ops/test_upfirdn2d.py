"""upfirdn2d against independent oracles: scipy.signal (upfirdn, convolve2d, correlate2d), a plain
float64 zero-stuff/pad/convolve/subsample implementation written here, and closed forms."""

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import upfirdn2d as ops
from torch_utils.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

RNG = np.random.default_rng(1234)


def naive_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """The op as written in its definition, in float64: zero-stuff, pad (negative crops), full 2-D
    true convolution (correlation if flip_filter), keep every down-th sample."""
    x = np.asarray(x, dtype=np.float64)
    f = np.ones((1, 1)) if f is None else np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    f = f * gain
    (ux, uy), (dx, dy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    z = np.zeros((n, c, h * uy, w * ux))
    z[:, :, ::uy, ::ux] = x
    z = np.pad(z, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    z = z[:, :, max(-py0, 0):z.shape[2] - max(-py1, 0), max(-px0, 0):z.shape[3] - max(-px1, 0)]
    k = f if flip_filter else f[::-1, ::-1]
    kh, kw = k.shape
    oh, ow = z.shape[2] - kh + 1, z.shape[3] - kw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * z[:, :, i:i + oh, j:j + ow]
    return out[:, :, ::dy, ::dx]


def run(x, f, dtype=torch.float32, **kwargs):
    xt = torch.tensor(x, dtype=dtype)
    ft = None if f is None else torch.tensor(f, dtype=torch.float32)
    return upfirdn2d(xt, ft, **kwargs)


def assert_close(actual, expected, rtol=1e-5):
    actual = actual.detach().double().numpy() if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


# ----------------------------------------------------------------------------------------------
# Independent oracle 1: scipy.signal.upfirdn (1-D; per axis for separable filters).


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (2, 2), (4, 2), (3, 2)])
@pytest.mark.parametrize('taps', [1, 4, 5, 12])
def test_rows_match_scipy_upfirdn(up, down, taps):
    # A [1, taps] full filter acts along x only; padding (taps-1, taps-up) reproduces scipy's
    # "full" output (all samples touched by at least one tap).
    x = RNG.standard_normal((2, 3, 2, 9))
    h = RNG.standard_normal(taps)
    y = run(x, h[None, :], up=[up, 1], down=[down, 1], padding=[taps - 1, taps - up, 0, 0])
    expected = scipy.signal.upfirdn(h, x, up=up, down=down, axis=-1)
    assert_close(y, expected)


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4)])
@pytest.mark.parametrize('taps', [8, 9, 12])
def test_separable_matches_scipy_upfirdn_per_axis(up, down, taps):
    x = RNG.standard_normal((1, 2, 7, 10))
    h = RNG.standard_normal(taps)
    y = run(x, h, up=up, down=down, padding=[taps - 1, taps - up, taps - 1, taps - up], gain=1.7)
    expected = scipy.signal.upfirdn(h, x, up=up, down=down, axis=3)
    expected = scipy.signal.upfirdn(h, expected, up=up, down=down, axis=2) * 1.7
    assert_close(y, expected)


# ----------------------------------------------------------------------------------------------
# Independent oracle 2: scipy.signal.convolve2d / correlate2d for full filters without resampling.


@pytest.mark.parametrize('flip_filter', [False, True])
@pytest.mark.parametrize('shape', [(3, 3), (4, 5), (2, 6)])
def test_full_filter_is_true_convolution_unless_flipped(flip_filter, shape):
    x = RNG.standard_normal((1, 1, 9, 11))
    f = RNG.standard_normal(shape)
    y = run(x, f, padding=[shape[1] - 1, shape[1] - 1, shape[0] - 1, shape[0] - 1], flip_filter=flip_filter)
    op = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
    assert_close(y, op(x[0, 0], f, mode='full')[None, None])


# ----------------------------------------------------------------------------------------------
# Independent oracle 3: the plain float64 implementation above, over the parameter space.

CASES = [
    # up, down, padding, filter shape (1-D = separable)
    (1, 1, 0, (3, 3)),
    (2, 1, [2, 1, 2, 1], (4, 4)),
    (1, 2, [1, 1, 1, 1], (4, 4)),
    (4, 1, [3, 2, 1, 0], (5, 3)),
    (1, 4, [0, 3, 2, 1], (2, 5)),
    ([2, 1], [1, 2], [1, 2, 3, 0], (3, 4)),
    ([1, 4], [2, 1], [2, 2, 4, 3], (4, 2)),
    (2, 2, [-1, 2, 3, -2], (3, 3)),
    (4, 4, [-3, -2, 5, 4], (6, 7)),
    (2, 1, [-2, -3, -1, 0], (8,)),
    (1, 2, [5, 5, 6, 4], (9,)),
    (4, 2, [-2, -5, -3, -4], (20,)),
    (2, 2, [9, 8, 9, 8], (12,)),
    (1, 1, [3, 3], (1, 1)),
    (2, 1, 0, None),
    (1, 2, [-1, 1], None),
]


@pytest.mark.parametrize('up,down,padding,fshape', CASES)
@pytest.mark.parametrize('flip_filter', [False, True])
def test_matches_naive(up, down, padding, fshape, flip_filter):
    x = RNG.standard_normal((2, 3, 11, 8))  # non-square
    f = None if fshape is None else RNG.standard_normal(fshape)
    y = run(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=2.5)
    expected = naive_upfirdn2d(x, f, ops._parse_scaling(up), ops._parse_scaling(down),
                               ops._parse_padding(padding), flip_filter, 2.5)
    assert_close(y, expected)


@pytest.mark.parametrize('up,padding', [(1, [-3, 7, 0, 0]), (4, [-10, 6, -3, -1]), (2, [5, -6, 4, -8])])
def test_a_crop_beyond_the_input_cuts_into_the_padding(up, padding):
    # The official op pads, then crops: a crop wider than the (upsampled) input eats into the
    # padding on the other side. Found by the CUDA kernel's random host tests.
    x = RNG.standard_normal((1, 2, 3, 2))
    f = RNG.standard_normal((2, 3))
    y = run(x, f, up=up, padding=padding, gain=1.5)
    expected = naive_upfirdn2d(x, f, (up, up), (1, 1), tuple(padding), False, 1.5)
    assert_close(y, expected)


@pytest.mark.parametrize('up,down', [(2, 1), (1, 2), (3, 3)])
def test_output_size_formula(up, down):
    for size in (5, 6, 7):
        for taps in (1, 2, 3, 4):
            for p0, p1 in ((0, 0), (1, 2), (3, -1)):
                x = torch.zeros(1, 1, size, size + 1)
                y = upfirdn2d(x, torch.ones(taps, taps), up=up, down=down, padding=[p0, p1, p1, p0])
                expect_w = ((size + 1) * up + p0 + p1 - taps + down) // down
                expect_h = (size * up + p1 + p0 - taps + down) // down
                assert tuple(y.shape) == (1, 1, expect_h, expect_w)


def test_impossible_size_is_a_clear_error():
    with pytest.raises(ValueError, match='does not fit'):
        upfirdn2d(torch.zeros(1, 1, 3, 3), torch.ones(5, 5))


# ----------------------------------------------------------------------------------------------
# Closed forms.


def test_impulse_upsampling_inserts_zeros():
    x = torch.arange(1, 7, dtype=torch.float32).reshape(1, 1, 2, 3)
    y = upfirdn2d(x, None, up=2)
    expected = torch.zeros(1, 1, 4, 6)
    expected[:, :, ::2, ::2] = x
    assert torch.equal(y, expected)


def test_box_filters_give_nearest_upsampling_and_average_pooling():
    x = torch.tensor(RNG.standard_normal((2, 3, 6, 4)), dtype=torch.float32)
    box = setup_filter([1, 1])
    up = upsample2d(x, box)
    assert torch.allclose(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3), atol=1e-6)
    down = downsample2d(x, box)
    assert torch.allclose(down, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)


def test_filter2d_of_an_impulse_is_the_filter_centred():
    f = torch.tensor(RNG.standard_normal((3, 5)), dtype=torch.float32)
    x = torch.zeros(1, 1, 7, 9)
    x[0, 0, 3, 4] = 1
    y = filter2d(x, f)
    assert y.shape == x.shape
    assert torch.allclose(y[0, 0, 2:5, 2:7], f, atol=1e-7)  # true convolution: the filter itself
    y = filter2d(x, f, flip_filter=True)
    assert torch.allclose(y[0, 0, 2:5, 2:7], f.flip([0, 1]), atol=1e-7)


def test_constant_image_keeps_its_level_away_from_borders():
    x = torch.full((1, 2, 12, 12), 3.0)
    f = setup_filter([1, 3, 3, 1])
    assert torch.allclose(upsample2d(x, f)[:, :, 4:-4, 4:-4], torch.tensor(3.0))
    assert torch.allclose(downsample2d(x, f)[:, :, 1:-1, 1:-1], torch.tensor(3.0))
    assert torch.allclose(filter2d(x, f, gain=2)[:, :, 2:-2, 2:-2], torch.tensor(6.0))


# ----------------------------------------------------------------------------------------------
# setup_filter rules (they decide buffer shapes in official pickles).


def test_setup_filter_separable_rule():
    assert setup_filter([1] * 7).shape == (7, 7)
    assert setup_filter([1] * 8).shape == (8,)
    assert setup_filter([1, 3, 3, 1]).shape == (4, 4)
    assert setup_filter([1, 3, 3, 1], separable=True).shape == (4,)
    assert setup_filter([1] * 8, separable=False).shape == (8, 8)
    with pytest.raises(AssertionError):
        setup_filter(np.ones((3, 3)), separable=True)


def test_setup_filter_values():
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.device.type == 'cpu'
    assert torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert torch.equal(setup_filter(None), torch.ones(1, 1))
    assert torch.equal(setup_filter(2.0), torch.ones(1, 1))
    assert torch.equal(setup_filter([1, 2], normalize=False), torch.tensor([[1., 2], [2, 4]]))
    taps = np.arange(1.0, 9.0)
    assert torch.allclose(setup_filter(taps), torch.tensor(taps / taps.sum(), dtype=torch.float32))
    assert torch.allclose(setup_filter(taps, flip_filter=True), torch.tensor(taps[::-1] / taps.sum(),
                                                                            dtype=torch.float32))
    assert torch.allclose(setup_filter(taps, gain=4), 2 * setup_filter(taps))  # gain ** (ndim / 2)
    full = np.arange(6.0).reshape(2, 3)
    assert torch.allclose(setup_filter(full, gain=4, normalize=False), 4 * torch.tensor(full, dtype=torch.float32))
    assert torch.allclose(setup_filter(full, flip_filter=True, normalize=False),
                          torch.tensor(full[::-1, ::-1].copy(), dtype=torch.float32))


# ----------------------------------------------------------------------------------------------
# Wrappers: sizes and values.


@pytest.mark.parametrize('taps', [1, 2, 3, 4, 5, 8, 12])
@pytest.mark.parametrize('factor', [2, [2, 4], 4])
def test_resampling_wrappers(taps, factor):
    f = setup_filter(RNG.uniform(0.5, 1.5, taps))
    fx, fy = ops._parse_scaling(factor)
    x = RNG.standard_normal((1, 2, 8, 12))
    xt = torch.tensor(x, dtype=torch.float32)
    fw = fh = taps
    fn = f.double().numpy()

    y = upsample2d(xt, f, up=factor)
    assert y.shape == (1, 2, 8 * fy, 12 * fx)
    pad = ((fw + fx - 1) // 2, (fw - fx) // 2, (fh + fy - 1) // 2, (fh - fy) // 2)
    assert_close(y, naive_upfirdn2d(x, fn, (fx, fy), (1, 1), pad, gain=fx * fy))

    y = downsample2d(xt, f, down=factor, padding=1)
    pad = (1 + (fw - fx + 1) // 2, 1 + (fw - fx) // 2, 1 + (fh - fy + 1) // 2, 1 + (fh - fy) // 2)
    assert_close(y, naive_upfirdn2d(x, fn, (1, 1), (fx, fy), pad))

    y = filter2d(xt, f, padding=[1, 0, 2, 1])
    pad = (1 + fw // 2, (fw - 1) // 2, 2 + fh // 2, 1 + (fh - 1) // 2)
    assert y.shape == (1, 2, 8 + 3, 12 + 1)
    assert_close(y, naive_upfirdn2d(x, fn, (1, 1), (1, 1), pad))


def test_wrappers_keep_size_for_stylegan_filter():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 16, 10)
    assert upsample2d(x, f).shape == (2, 3, 32, 20)
    assert downsample2d(x, f).shape == (2, 3, 8, 5)
    assert filter2d(x, f).shape == x.shape


# ----------------------------------------------------------------------------------------------
# Dtypes, layouts, execution paths.


@pytest.mark.parametrize('dtype,rtol', [(torch.float16, 2e-3), (torch.bfloat16, 1e-2), (torch.float64, 1e-12)])
def test_dtypes(dtype, rtol):
    x = RNG.standard_normal((1, 3, 6, 7))
    f = RNG.standard_normal(8).astype(np.float32).astype(np.float64)  # filters are float32
    y = run(x, f, dtype=dtype, up=2, down=1, padding=[4, 3, 3, 4])
    assert y.dtype == dtype
    xq = torch.tensor(x, dtype=dtype).double().numpy()  # the input as the dtype represents it
    assert_close(y.double(), naive_upfirdn2d(xq, f, (2, 2), (1, 1), (4, 3, 3, 4)), rtol=rtol * 10)


def test_channels_last_input_gives_channels_last_output():
    x = torch.randn(2, 5, 9, 7)
    f = setup_filter([1, 3, 3, 1])
    for fn in (lambda v: upsample2d(v, f), lambda v: downsample2d(v, f), lambda v: upsample2d(v, f.sum(0))):
        y_nchw = fn(x)
        y_cl = fn(x.contiguous(memory_format=torch.channels_last))
        assert y_nchw.is_contiguous()
        assert y_cl.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(y_nchw, y_cl, atol=1e-6)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('fshape', [(4, 4), (8,)])
def test_many_small_chunks_match_naive(monkeypatch, channels_last, fshape):
    # Force the CPU path to split over samples and channel groups (with a ragged last group).
    monkeypatch.setattr(ops, '_CHUNK_BYTES_CHANNELS_LAST', 1 << 10)
    monkeypatch.setattr(ops, '_CHUNK_BYTES_NCHW', 1 << 10)
    x = RNG.standard_normal((2, 40, 9, 8))
    f = RNG.standard_normal(fshape)
    xt = torch.tensor(x, dtype=torch.float32)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    for up, down, pad in ((2, 1, (2, 1, 3, 0)), (1, 2, (1, 2, 2, 1))):
        y = upfirdn2d(xt, torch.tensor(f, dtype=torch.float32), up=up, down=down, padding=list(pad))
        assert_close(y, naive_upfirdn2d(x, f, (up, up), (down, down), pad))


def test_impl_argument():
    x = torch.randn(1, 2, 5, 5)
    f = setup_filter([1, 2, 1])
    assert torch.equal(upfirdn2d(x, f, impl='cuda'), upfirdn2d(x, f, impl='ref'))
    with pytest.raises(AssertionError):
        upfirdn2d(x, f, impl='triton')


def test_result_never_aliases_input():
    x = torch.randn(1, 2, 4, 4)
    y = upfirdn2d(x, None)
    y.add_(1)
    assert not torch.equal(x, y)


# ----------------------------------------------------------------------------------------------
# Gradients: numerical checks in float64, first and second order.


@pytest.mark.parametrize('up,down,padding,fshape,flip_filter', [
    (2, 1, [2, 1, 1, 2], (4, 4), False),
    (1, 2, [1, 1, 2, 0], (3, 4), True),
    ([2, 1], [1, 2], [1, 2, -1, 3], (6,), False),
    (4, 2, [-2, 3, 1, -1], (8,), True),
    (1, 1, [0, 1, 2, -1], None, False),
])
def test_gradcheck(up, down, padding, fshape, flip_filter):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    f = None if fshape is None else torch.randn(fshape)

    def fn(v):
        return upfirdn2d(v, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_backward_is_the_transposed_op():
    # <A x, y> == <x, A^T y>, with A^T obtained through autograd.
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    f = torch.randn(5, 4)
    y = upfirdn2d(x, f, up=[2, 3], down=[3, 1], padding=[2, -1, 4, 1])
    probe = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, probe)
    assert torch.allclose((y * probe).sum(), (x * grad).sum())
    assert grad.shape == x.shape


def test_no_gradient_for_filter():
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    f = torch.randn(3, 3, requires_grad=True)
    upfirdn2d(x, f).sum().backward()
    assert x.grad is not None and f.grad is None
