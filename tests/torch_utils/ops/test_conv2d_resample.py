"""conv2d_resample against a naive float64 numpy oracle of its defining composition.

Oracle: zero-insert upsample -> pad/crop -> FIR filter (gain up**2, only if up > 1) -> 'valid' grouped
convolution -> FIR filter + subsample (only if down > 1), each stage written out directly. The
centring padding inside the definition is checked separately on ramps, independent of the formula.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix
from torch_utils.ops.conv2d_resample import conv2d_resample
from torch_utils.ops.upfirdn2d import setup_filter

# ---------------------------------------------------------------------------------------------
# Oracle


def _np_pad(x, px0, px1, py0, py1):
    """Zero-pad (positive) or crop (negative) the last two axes."""
    x = np.pad(x, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    h, w = x.shape[2:]
    return x[:, :, max(-py0, 0):h - max(-py1, 0), max(-px0, 0):w - max(-px1, 0)]


def _np_correlate(x, k):
    """'valid' 2-D cross-correlation of every channel of x [N, C, H, W] with k [kh, kw]."""
    kh, kw = k.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros(x.shape[:2] + (oh, ow))
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * x[:, :, a:a + oh, b:b + ow]
    return out


def _np_fir(x, f2d, flip_filter):
    """FIR filtering in upfirdn2d's sense: true convolution unless flip_filter."""
    return _np_correlate(x, f2d if flip_filter else f2d[::-1, ::-1])


def _np_grouped_conv(x, w, groups, flip_weight):
    """'valid' grouped conv: cross-correlation with w if flip_weight, else with w flipped (true convolution)."""
    if not flip_weight:
        w = w[:, :, ::-1, ::-1]
    cout, cin_g, kh, kw = w.shape
    cout_g = cout // groups
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], cout, oh, ow))
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g]
        wg = w[g * cout_g:(g + 1) * cout_g]
        for a in range(kh):
            for b in range(kw):
                out[:, g * cout_g:(g + 1) * cout_g] += np.einsum('nchw,oc->nohw', xg[:, :, a:a + oh, b:b + ow], wg[:, :, a, b])
    return out


def _filter_2d(f):
    """Filter tensor (None, [taps] separable, or [fh, fw]) -> float64 numpy [fh, fw]."""
    if f is None:
        return np.ones((1, 1))
    f = f.double().numpy()
    return np.outer(f, f) if f.ndim == 1 else f


def _parse_padding(padding):
    if isinstance(padding, int):
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return list(padding)


def _oracle(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    x, w = x.detach().double().numpy(), w.detach().double().numpy()
    f2d = _filter_2d(f)
    fh, fw = f2d.shape
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:   # keep the upsampled image centred on the input
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2

    n, c, h, wd = x.shape
    z = np.zeros((n, c, h * up, wd * up))
    z[:, :, ::up, ::up] = x
    z = _np_pad(z, px0, px1, py0, py1)
    if up > 1:
        z = _np_fir(z, f2d * up ** 2, flip_filter)
    z = _np_grouped_conv(z, w, groups, flip_weight)
    if down > 1:
        z = _np_fir(z, f2d, flip_filter)[:, :, ::down, ::down]
    return z


# ---------------------------------------------------------------------------------------------
# Forward against the oracle over every branch


def _tensor(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


FILTERS = {
    'none': None,
    'sg2': setup_filter([1, 3, 3, 1]),                                          # 4x4 symmetric
    'sep_asym': torch.tensor([1.0, 2.0, 4.0, 3.0]) / 10,                       # separable, non-symmetric, even
    'full_asym': _tensor((3, 4), seed=99, dtype=torch.float32).abs() / 6 + 0.05,  # fh=3 != fw=4, non-symmetric
}
KERNELS = [(1, 1), (3, 3), (3, 2)]                  # (kh, kw)
PADDINGS = [0, 1, [2, 1], [1, 2, 0, 3], [-1, 2, 1, -2]]


@pytest.mark.parametrize('padding', PADDINGS, ids=str)
@pytest.mark.parametrize('kernel', KERNELS, ids=str)
@pytest.mark.parametrize('filter_name', list(FILTERS))
@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_matches_oracle(up, down, filter_name, kernel, padding):
    f = FILTERS[filter_name]
    x = _tensor((2, 4, 5, 6), seed=1)
    checked = 0
    for groups in (1, 2):
        w = _tensor((4, 4 // groups) + kernel, seed=2 + groups)
        for flip_weight in (True, False):
            for flip_filter in (False, True):
                args = dict(f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
                expected = _oracle(x, w, **args)
                if min(expected.shape[2:]) <= 0:
                    continue
                y = conv2d_resample(x, w, **args)
                assert y.dtype == x.dtype
                assert tuple(y.shape) == expected.shape, args
                np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10, err_msg=str(args))
                checked += 1
    assert checked > 0


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1), (1, 4)])
def test_upfirdn_factor_4_and_float32(up, down):
    f = setup_filter([1, 2, 3, 4, 5, 6, 7, 8])       # 8 taps: stays separable
    x = _tensor((1, 2, 8, 8), seed=5, dtype=torch.float32)
    w = _tensor((3, 2, 3, 3), seed=6, dtype=torch.float32)
    args = dict(f=f, up=up, down=down, padding=[1, 0, 2, 1], flip_weight=(up == 1))
    y = conv2d_resample(x, w, **args)
    expected = _oracle(x, w, **args)
    assert y.dtype == torch.float32 and tuple(y.shape) == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('conv_enabled', [False, True])
def test_gradfix_enabled_gives_same_result(conv_enabled, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', conv_enabled)
    x = _tensor((1, 4, 5, 5), seed=7)
    w = _tensor((4, 2, 3, 3), seed=8)
    args = dict(f=FILTERS['sg2'], up=2, down=1, padding=1, groups=2, flip_weight=False)
    np.testing.assert_allclose(conv2d_resample(x, w, **args).numpy(), _oracle(x, w, **args), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Properties independent of the oracle's padding formula


def test_plain_conv_equals_functional():
    x, w = _tensor((2, 4, 5, 6), seed=10), _tensor((6, 2, 3, 3), seed=11)
    torch.testing.assert_close(conv2d_resample(x, w, padding=1, groups=2), F.conv2d(x, w, padding=1, groups=2))
    torch.testing.assert_close(conv2d_resample(x, w, padding=1, groups=2, flip_weight=False),
                               F.conv2d(x, w.flip([2, 3]), padding=1, groups=2))
    # up = down = 1 ignores the filter.
    torch.testing.assert_close(conv2d_resample(x, w, f=FILTERS['full_asym'], padding=[1, 0], groups=2),
                               F.conv2d(x, w, padding=[0, 1], groups=2))


@pytest.mark.parametrize('h,w', [(4, 4), (8, 6)])
def test_stylegan2_shapes(h, w):
    f = setup_filter([1, 3, 3, 1])
    x = _tensor((2, 3, h, w), seed=12, dtype=torch.float32)
    w3 = _tensor((5, 3, 3, 3), seed=13, dtype=torch.float32)
    w1 = _tensor((5, 3, 1, 1), seed=14, dtype=torch.float32)
    assert conv2d_resample(x, w3, f=f, up=2, padding=1, flip_weight=False).shape == (2, 5, 2 * h, 2 * w)
    assert conv2d_resample(x, w3, f=f, down=2, padding=1).shape == (2, 5, h // 2, w // 2)
    assert conv2d_resample(x, w1, f=f, down=2).shape == (2, 5, h // 2, w // 2)      # D's skip 1x1 conv
    assert conv2d_resample(x, w3, padding=1).shape == (2, 5, h, w)


def test_upsampling_is_centred_on_a_ramp():
    # [1,3,3,1] upsampling reproduces linear ramps; output sample u sits at input coordinate (u + 0.5) / 2 - 0.5.
    f = setup_filter([1, 3, 3, 1])
    ramp = torch.arange(8, dtype=torch.float64).reshape(1, 1, 1, 8).repeat(1, 1, 8, 1)
    identity = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    y = conv2d_resample(ramp, identity, f=f, up=2)
    expected = (torch.arange(16, dtype=torch.float64) + 0.5) / 2 - 0.5
    torch.testing.assert_close(y[0, 0, 4, 2:-2], expected[2:-2])
    # Same through the 3x3 transposed-conv branch with a centred delta kernel.
    delta = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    delta[0, 0, 1, 1] = 1
    y3 = conv2d_resample(ramp, delta, f=f, up=2, padding=1, flip_weight=False)
    torch.testing.assert_close(y3[0, 0, 4, 2:-2], expected[2:-2])


def test_downsampling_is_centred_on_a_ramp():
    # Output sample v of a symmetric 4-tap downsample sits at input coordinate 2v + 0.5.
    f = setup_filter([1, 3, 3, 1])
    ramp = torch.arange(12, dtype=torch.float64).reshape(1, 1, 1, 12).repeat(1, 1, 12, 1)
    delta = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    delta[0, 0, 1, 1] = 1
    expected = 2 * torch.arange(6, dtype=torch.float64) + 0.5
    y1 = conv2d_resample(ramp, torch.ones(1, 1, 1, 1, dtype=torch.float64), f=f, down=2)
    y3 = conv2d_resample(ramp, delta, f=f, down=2, padding=1)
    torch.testing.assert_close(y1[0, 0, 3, 1:-1], expected[1:-1])
    torch.testing.assert_close(y3[0, 0, 3, 1:-1], expected[1:-1])


def test_upsampling_preserves_dc():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 6, 6), 3.0, dtype=torch.float64)
    w = torch.ones(2, 2, 1, 1, dtype=torch.float64)
    y = conv2d_resample(x, w, f=f, up=2)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 6.0))


# ---------------------------------------------------------------------------------------------
# Gradients


GRAD_CASES = [
    dict(kernel=(1, 1), up=1, down=2, padding=0, groups=1, flip_weight=True),       # 1x1 + down
    dict(kernel=(1, 1), up=2, down=1, padding=0, groups=2, flip_weight=True),       # 1x1 + up
    dict(kernel=(3, 3), up=1, down=2, padding=1, groups=2, flip_weight=True),       # strided conv
    dict(kernel=(3, 3), up=2, down=1, padding=1, groups=2, flip_weight=False),      # transposed conv
    dict(kernel=(3, 2), up=2, down=2, padding=[0, 1, 1, 0], groups=1, flip_weight=True),
    dict(kernel=(3, 3), up=1, down=1, padding=1, groups=1, flip_weight=False),      # plain conv
    dict(kernel=(3, 3), up=1, down=1, padding=[1, 0, 2, 1], groups=2, flip_weight=True),  # generic
]


@pytest.mark.parametrize('conv_enabled', [False, True])
@pytest.mark.parametrize('case', GRAD_CASES, ids=lambda c: f"k{c['kernel']}-up{c['up']}-down{c['down']}-g{c['groups']}")
def test_gradcheck_and_gradgradcheck(case, conv_enabled, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', conv_enabled)
    case = dict(case)
    kernel, groups = case.pop('kernel'), case['groups']
    x = _tensor((1, 2, 4, 4), seed=20).requires_grad_(True)
    w = _tensor((2, 2 // groups) + kernel, seed=21).requires_grad_(True)
    fn = lambda x, w: conv2d_resample(x, w, f=FILTERS['sep_asym'], **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize('kwargs', [
    dict(up=0), dict(down=0), dict(up=1.5), dict(groups=0), dict(up=True),
    dict(f=torch.ones(4, dtype=torch.float64)), dict(f=torch.ones(2, 2, 2)),
    dict(groups=3),
])
def test_invalid_arguments_raise(kwargs):
    x, w = torch.zeros(1, 4, 4, 4), torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError):
        conv2d_resample(x, w, **kwargs)


def test_invalid_tensors_raise():
    with pytest.raises(ValueError):
        conv2d_resample(torch.zeros(4, 4, 4), torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError):
        conv2d_resample(torch.zeros(1, 4, 4, 4), torch.zeros(2, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError):
        conv2d_resample(torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 3, 3))
