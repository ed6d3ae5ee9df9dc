"""The one line per process that says CUDA tensors run the ops' reference path (custom_ops.note_reference_path).

There is no GPU here, so a CUDA tensor is faked where the dispatch looks at it: each op's
`selected_impl` (what the op itself calls to choose its path) reads only the device, dtype, element
count and rank of `x`, and gets a stand-in that reports device 'cuda'. The real ops on real CPU
tensors must stay silent. A GPU run checks the same through the public ops at the end.
"""

import re
import warnings

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils import distributed
from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

OPS = {'bias_act': bias_act, 'upfirdn2d': upfirdn2d, 'filtered_lrelu': filtered_lrelu}


class CudaLike:
    """What `selected_impl` reads of a float32 CUDA tensor of shape [1, 2, 8, 8]."""
    device = torch.device('cuda')
    dtype = torch.float32
    ndim = 4
    shape = (1, 2, 8, 8)

    def numel(self):
        return 128


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """As in a new process: nothing noted or built yet, default verbosity, kernels disabled."""
    monkeypatch.setattr(custom_ops, '_reference_path_noted', False)
    monkeypatch.setattr(custom_ops, '_cached_plugins', dict())
    monkeypatch.setattr(custom_ops, '_failed_plugins', dict())
    monkeypatch.setattr(custom_ops, 'verbosity', 'brief')
    monkeypatch.delenv(custom_ops.CUDA_KERNELS_ENV, raising=False)
    monkeypatch.setattr(custom_ops, 'get_plugin', lambda *a, **k: pytest.fail('no build in these tests'))


def _note_lines(capsys):
    """The note's lines since the last call; it goes to stderr, never to stdout."""
    out, err = capsys.readouterr()
    assert 'reference PyTorch path' not in out, out
    return [line for line in err.splitlines() if 'reference PyTorch path' in line]


def _dispatch_many_times():
    for _ in range(3):
        for module in OPS.values():
            assert module.selected_impl(CudaLike()) == 'ref'
        assert bias_act.selected_impl(CudaLike(), act='lrelu', clamp=256) == 'ref'


def test_one_line_per_process_across_calls_and_ops_naming_the_reason(capsys):
    _dispatch_many_times()
    lines = _note_lines(capsys)
    assert len(lines) == 1, lines
    line = lines[0]
    assert 'disabled' in line and f'{custom_ops.CUDA_KERNELS_ENV}=1' in line, line
    assert all(name in line for name in OPS) and set(OPS) == set(custom_ops.KERNEL_OPS), line
    _dispatch_many_times()
    assert _note_lines(capsys) == []


def test_cpu_tensors_never_print_it(capsys):
    x = torch.randn([1, 2, 8, 8])
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for enabled in ('0', '1'):  # enabled: a CPU tensor still never asks for the plugin
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(custom_ops.CUDA_KERNELS_ENV, enabled)
            for _ in range(2):
                assert all(module.selected_impl(x) == 'ref' for module in OPS.values())
                bias_act.bias_act(x, torch.zeros(2), act='lrelu')
                upfirdn2d.upsample2d(x, f)
                filtered_lrelu.filtered_lrelu(x, fu=f, fd=f, b=torch.zeros(2), up=2, down=2, padding=2)
    assert _note_lines(capsys) == []
    assert custom_ops._reference_path_noted is False


def test_other_reasons_for_the_reference_path_are_not_reported(capsys):
    wide = CudaLike()
    wide.dtype = torch.float64  # no kernel for float64; not a question of enabling the kernels
    assert all(module.selected_impl(wide) == 'ref' for module in OPS.values())
    assert bias_act.selected_impl(CudaLike(), gain=0) == 'ref'
    assert all(module.selected_impl(CudaLike(), impl='ref') == 'ref' for module in OPS.values())
    assert _note_lines(capsys) == []


@pytest.mark.parametrize('how', ['verbosity', 'rank'])
def test_silent_with_verbosity_none_and_on_other_ranks(capsys, monkeypatch, how):
    if how == 'verbosity':
        monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    else:
        monkeypatch.setattr(distributed, 'get_rank', lambda: 3)
    _dispatch_many_times()
    assert _note_lines(capsys) == []


def test_a_failed_build_is_reported_by_its_warning_only(capsys, monkeypatch):
    monkeypatch.setenv(custom_ops.CUDA_KERNELS_ENV, '1')

    def failing_build(module_name, *args, **kwargs):
        raise custom_ops.PluginBuildError(f'no compiler for {module_name}')

    monkeypatch.setattr(custom_ops, 'get_plugin', failing_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        _dispatch_many_times()
    messages = [str(w.message) for w in caught if issubclass(w.category, custom_ops.PluginFallbackWarning)]
    # One per plugin tried, naming why (filtered_lrelu stops at its upfirdn2d dependency's failure).
    named = sorted(re.match(r'Plugin "(\w+)" is unavailable \(PluginBuildError: no compiler for \1\)', m).group(1)
                   for m in messages)
    assert named == ['bias_act_plugin', 'upfirdn2d_plugin'], messages
    assert _note_lines(capsys) == []


# ----------------------------------------------------------------------------------------------
# CUDA.


@pytest.mark.gpu
def test_public_ops_on_cuda_print_the_line_once(capsys):
    x = torch.randn([1, 4, 16, 16], device='cuda')
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device)
    for _ in range(3):
        bias_act.bias_act(x, torch.zeros(4, device=x.device), act='lrelu')
        upfirdn2d.upsample2d(x, f)
        filtered_lrelu.filtered_lrelu(x, fu=f, fd=f, b=torch.zeros(4, device=x.device), up=2, down=2, padding=2,
                                      gain=float(np.sqrt(2)))
    torch.cuda.synchronize()
    lines = _note_lines(capsys)
    assert len(lines) == 1 and 'disabled' in lines[0], lines
