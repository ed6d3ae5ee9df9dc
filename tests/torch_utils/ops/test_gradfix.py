"""conv2d_gradfix and grid_sample_gradfix: values, gradients of order 1 and 2, and no_weight_gradients."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix


@pytest.fixture(params=[False, True], ids=['disabled', 'enabled'])
def gradfix_enabled(request, monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', request.param)
    monkeypatch.setattr(conv2d_gradfix, 'weight_gradients_disabled', False)
    return request.param


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    monkeypatch.setattr(conv2d_gradfix, 'weight_gradients_disabled', False)


def _randn(*shape, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=requires_grad)


def _naive_correlation(x, w, b=None, stride=1, padding=0, groups=1):
    """Direct float64 loop oracle for a grouped, strided, zero-padded 2-D cross-correlation."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, cout, oh, ow))
    cout_g = cout // groups
    for o in range(cout):
        g = o // cout_g
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cin_g:(g + 1) * cin_g, i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    if b is not None:
        out += np.asarray(b).reshape(1, -1, 1, 1)
    return out


# ---------------------------------------------------------------------------------------------
# conv2d / conv_transpose2d


@pytest.mark.parametrize('stride,padding,groups', [(1, 0, 1), (1, 1, 2), (2, 1, 1), (2, 2, 2)])
def test_conv2d_matches_naive_oracle(gradfix_enabled, stride, padding, groups):
    x = _randn(2, 4, 6, 5, seed=1)
    w = _randn(6, 4 // groups, 3, 3, seed=2)
    b = _randn(6, seed=3)
    y = conv2d_gradfix.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    expected = _naive_correlation(x.detach(), w.detach(), b.detach(), stride, padding, groups)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_is_adjoint_of_conv2d(gradfix_enabled):
    # <conv_transpose2d(u, w), v> == <u, conv2d(v, w)> for matching stride/padding/groups.
    w = _randn(6, 2, 3, 3, seed=4, requires_grad=False)     # conv2d weight: 4 in (2 groups), 6 out
    v = _randn(2, 4, 7, 7, seed=5, requires_grad=False)
    u = _randn(2, 6, 4, 4, seed=6, requires_grad=False)
    conv_v = conv2d_gradfix.conv2d(v, w, stride=2, padding=1, groups=2)
    assert conv_v.shape == u.shape
    tu = conv2d_gradfix.conv_transpose2d(u, w, stride=2, padding=1, groups=2)
    assert tu.shape == v.shape
    assert torch.allclose((tu * v).sum(), (u * conv_v).sum(), rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_matches_functional(gradfix_enabled):
    x = _randn(2, 4, 3, 4, seed=7)
    w = _randn(4, 3, 3, 3, seed=8)
    b = _randn(6, seed=9)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    y = conv2d_gradfix.conv_transpose2d(x, w, b, **kw)
    torch.testing.assert_close(y, F.conv_transpose2d(x, w, b, **kw))


@pytest.mark.parametrize('kw', [dict(stride=1, padding=1, groups=1, dilation=1),
                                dict(stride=2, padding=0, groups=2, dilation=1),
                                dict(stride=1, padding=2, groups=1, dilation=2)])
def test_conv2d_gradcheck_gradgradcheck(enabled, kw):
    x = _randn(1, 2, 4, 4, seed=10)
    w = _randn(2, 2 // kw['groups'], 3, 3, seed=11)
    b = _randn(2, seed=12)
    fn = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize('kw', [dict(stride=1, padding=1, output_padding=0, groups=1, dilation=1),
                                dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1),
                                dict(stride=2, padding=0, output_padding=0, groups=1, dilation=2)])
def test_conv_transpose2d_gradcheck_gradgradcheck(enabled, kw):
    x = _randn(1, 2, 3, 3, seed=13)
    w = _randn(2, 1, 3, 3, seed=14)
    b = _randn(kw['groups'], seed=15)
    fn = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


# ---------------------------------------------------------------------------------------------
# no_weight_gradients


def _r1_like(conv, x, w, *, disable):
    """Forward outside the context, input gradient inside it (like the R1 penalty), then a penalty backward."""
    y = conv(x, w)
    with conv2d_gradfix.no_weight_gradients(disable):
        gx, gw = torch.autograd.grad(y.square().sum(), [x, w], create_graph=True, allow_unused=True)
    penalty = gx.square().sum()
    dx, dw = torch.autograd.grad(penalty, [x, w])
    return gx, gw, dx, dw


@pytest.mark.parametrize('transpose', [False, True])
def test_no_weight_gradients_skips_weight_but_keeps_input_and_double_backward(enabled, transpose):
    if transpose:
        conv = lambda x, w: conv2d_gradfix.conv_transpose2d(x, w, stride=2, padding=1, groups=2)  # noqa: E731
        w = _randn(4, 3, 3, 3, seed=21)
    else:
        conv = lambda x, w: conv2d_gradfix.conv2d(x, w, stride=2, padding=1, groups=2)  # noqa: E731
        w = _randn(6, 2, 3, 3, seed=21)
    x = _randn(2, 4, 5, 5, seed=20)

    gx, gw, dx, dw = _r1_like(conv, x, w, disable=True)
    assert gw is None

    # Oracle: the same computation through plain torch.nn.functional autograd.
    ref_conv = ((lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, groups=2)) if transpose
                else (lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=2)))
    y = ref_conv(x, w)
    rgx, rgw = torch.autograd.grad(y.square().sum(), [x, w], create_graph=True)
    rdx, rdw = torch.autograd.grad(rgx.square().sum(), [x, w])
    torch.testing.assert_close(gx, rgx)
    torch.testing.assert_close(dx, rdx)
    torch.testing.assert_close(dw, rdw)   # the penalty still reaches the weight through the input gradient

    # Outside the context (or with disable=False) the weight gradient is there again.
    gx2, gw2, _, _ = _r1_like(conv, x, w, disable=False)
    torch.testing.assert_close(gw2, rgw)
    torch.testing.assert_close(gx2, rgx)


def test_no_weight_gradients_backward_accumulates_nothing_into_weight(enabled):
    x = _randn(1, 2, 4, 4, seed=30)
    w = _randn(3, 2, 3, 3, seed=31)
    b = _randn(3, seed=32)
    y = conv2d_gradfix.conv2d(x, w, b, padding=1)
    with conv2d_gradfix.no_weight_gradients():
        y.sum().backward()
    assert w.grad is None
    assert x.grad is not None and b.grad is not None
    torch.testing.assert_close(b.grad, torch.full((3,), 16.0, dtype=torch.float64))


def test_no_weight_gradients_has_no_effect_when_disabled(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    x = _randn(1, 2, 4, 4, seed=33)
    w = _randn(3, 2, 3, 3, seed=34)
    with conv2d_gradfix.no_weight_gradients():
        conv2d_gradfix.conv2d(x, w, padding=1).sum().backward()
    assert w.grad is not None


def test_no_weight_gradients_flag_nesting_and_restore(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'weight_gradients_disabled', False)
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled
        with conv2d_gradfix.no_weight_gradients(False):
            assert conv2d_gradfix.weight_gradients_disabled   # False does not re-enable
        assert conv2d_gradfix.weight_gradients_disabled
    assert not conv2d_gradfix.weight_gradients_disabled
    with conv2d_gradfix.no_weight_gradients(disable=False):
        assert not conv2d_gradfix.weight_gradients_disabled
    with pytest.raises(RuntimeError):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError('boom')
    assert not conv2d_gradfix.weight_gradients_disabled


def test_module_defaults():
    # A fresh interpreter, so flags set by other tests in this session cannot leak in.
    code = ('from torch_utils.ops import conv2d_gradfix as c, grid_sample_gradfix as g; '
            'print(c.enabled, c.weight_gradients_disabled, g.enabled)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ['False', 'False', 'False']


# ---------------------------------------------------------------------------------------------
# grid_sample


def _naive_grid_sample(x, grid):
    """Bilinear sampling, zero padding, align_corners=False, written out per output pixel."""
    x, grid = np.asarray(x, np.float64), np.asarray(grid, np.float64)
    n, c, h, w = x.shape
    _, oh, ow, _ = grid.shape
    out = np.zeros((n, c, oh, ow))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                px = ((grid[b, i, j, 0] + 1) * w - 1) / 2
                py = ((grid[b, i, j, 1] + 1) * h - 1) / 2
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                    if 0 <= yy < h and 0 <= xx < w:
                        out[b, :, i, j] += weight * x[b, :, yy, xx]
    return out


@pytest.fixture(params=[False, True], ids=['disabled', 'enabled'])
def grid_enabled(request, monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', request.param)


def _grid(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 4, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2  # some samples fall outside


def test_grid_sample_matches_naive_oracle(grid_enabled):
    x = _randn(2, 3, 5, 6, seed=40, requires_grad=False)
    grid = _grid(41)
    y = grid_sample_gradfix.grid_sample(x, grid)
    np.testing.assert_allclose(y.numpy(), _naive_grid_sample(x, grid), rtol=1e-12, atol=1e-12)


def test_grid_sample_gradcheck_gradgradcheck_wrt_input(grid_enabled):
    x = _randn(1, 2, 4, 5, seed=42)
    grid = _grid(43)[:1]
    fn = lambda x: grid_sample_gradfix.grid_sample(x, grid)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_grid_sample_grid_gradient_first_order(grid_enabled):
    x = _randn(1, 2, 4, 5, seed=44)
    grid = _grid(45)[:1].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, g: grid_sample_gradfix.grid_sample(x, g), (x, grid))
