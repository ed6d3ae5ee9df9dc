"""The CUDA kernels of every op, without a GPU: their files reach nothing from PyTorch but c10's Half
and BFloat16 (so CI compiles them), nvcc compiles them for sm_80 and sm_90 (syntax and template
errors fail here, not on a user's first GPU run), every header they or their bindings include is
among the plugin's declared sources (a missing one would break the JIT build on a user's machine),
and they are opt-in: nothing is built while RAYCOND_CUDA_KERNELS is unset, and CPU tensors or
impl='ref' always take the reference path."""

import pytest
import torch

import cuda_sources
from torch_utils import custom_ops
from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

PLUGINS = {'bias_act': bias_act, 'upfirdn2d': upfirdn2d, 'filtered_lrelu': filtered_lrelu}
KERNEL_SYSTEM_INCLUDES = {'<c10/util/BFloat16.h>', '<c10/util/Half.h>', '<cstdint>', '<cuda_runtime.h>', '<math.h>'}


@pytest.mark.parametrize('op', sorted(PLUGINS))
def test_kernel_file_reaches_nothing_from_pytorch_but_half_and_bfloat16(op):
    _, system = cuda_sources.transitive_includes(f'{op}_kernel.cu')
    assert system <= KERNEL_SYSTEM_INCLUDES, system - KERNEL_SYSTEM_INCLUDES


@pytest.mark.parametrize('op', sorted(PLUGINS))
def test_plugin_sources_declare_every_local_header(op):
    sources = PLUGINS[op]._PLUGIN_SOURCES
    declared = set(sources['sources']) | set(sources['headers'])
    for name in sources['sources']:
        local, _ = cuda_sources.transitive_includes(name)
        assert local <= declared, (name, local - declared)
    assert sorted(sources['sources']) == sorted([f'{op}.cpp', f'{op}_kernel.cu'])


@cuda_sources.needs_nvcc
@pytest.mark.parametrize('op', sorted(PLUGINS))
def test_kernel_compiles_with_nvcc_for_sm80_and_sm90(op, tmp_path):
    result = cuda_sources.nvcc_compile(f'{op}_kernel.cu', str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / f'{op}_kernel.cu.o').stat().st_size > 0


@pytest.mark.parametrize('op', sorted(PLUGINS))
def test_kernels_are_opt_in_and_never_chosen_off_cuda(op, monkeypatch):
    module = PLUGINS[op]
    monkeypatch.delenv(custom_ops.CUDA_KERNELS_ENV, raising=False)
    assert not custom_ops.cuda_kernels_enabled()
    monkeypatch.setattr(custom_ops, 'try_get_plugin', lambda *a, **k: pytest.fail('no build while disabled'))
    assert module._plugin() is None
    x = torch.randn([1, 2, 4, 4])
    assert module.selected_impl(x) == 'ref' and module.selected_impl(x, impl='ref') == 'ref'
    monkeypatch.setenv(custom_ops.CUDA_KERNELS_ENV, '1')
    assert custom_ops.cuda_kernels_enabled()
    assert module.selected_impl(x) == 'ref'  # a CPU tensor, even with kernels enabled
