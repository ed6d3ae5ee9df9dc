"""The names and signatures that code embedded in official pickles calls (dnnlib and torch_utils as the official StyleGAN3 repository defines them).

Official StyleGAN2-ADA / StyleGAN3 / EG3D pickles execute their own network source against our
`dnnlib` and `torch_utils`; a renamed argument or a changed default would break them silently.
Each entry is the published signature; ours may add trailing keyword arguments only.
"""

import importlib
import inspect

import numpy as np
import pytest
import torch

OFFICIAL = {
    "dnnlib.util.open_url": "url, cache_dir=None, num_attempts=10, verbose=True, return_filename=False, cache=True",
    "dnnlib.util.make_cache_dir_path": "*paths",
    "dnnlib.util.call_func_by_name": "*args, func_name=None, **kwargs",
    "dnnlib.util.construct_class_by_name": "*args, class_name=None, **kwargs",
    "torch_utils.persistence.persistent_class": "orig_class",
    "torch_utils.persistence.is_persistent": "obj",
    "torch_utils.persistence.import_hook": "hook",
    "torch_utils.persistence._reconstruct_persistent_obj": "meta",
    "torch_utils.misc.constant": "value, shape=None, dtype=None, device=None, memory_format=None",
    "torch_utils.misc.assert_shape": "tensor, ref_shape",
    "torch_utils.misc.profiled_function": "fn",
    "torch_utils.misc.suppress_tracer_warnings": "",
    "torch_utils.misc.copy_params_and_buffers": "src_module, dst_module, require_all=False",
    "torch_utils.misc.named_params_and_buffers": "module",
    "torch_utils.misc.params_and_buffers": "module",
    "torch_utils.misc.check_ddp_consistency": "module, ignore_regex=None",
    "torch_utils.misc.print_module_summary": "module, inputs, max_nesting=3, skip_redundant=True",
    "torch_utils.misc.ddp_sync": "module, sync",
    "torch_utils.misc.InfiniteSampler": "dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5",
    "torch_utils.training_stats.init_multiprocessing": "rank, sync_device",
    "torch_utils.training_stats.report": "name, value",
    "torch_utils.training_stats.report0": "name, value",
    "torch_utils.training_stats.Collector": "regex='.*', keep_previous=True",
    "torch_utils.custom_ops.get_plugin": "module_name, sources, headers=None, source_dir=None, **build_kwargs",
    "torch_utils.ops.bias_act.bias_act": "x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'",
    "torch_utils.ops.upfirdn2d.setup_filter": "f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None",
    "torch_utils.ops.upfirdn2d.upfirdn2d": "x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'",
    "torch_utils.ops.upfirdn2d.filter2d": "x, f, padding=0, flip_filter=False, gain=1, impl='cuda'",
    "torch_utils.ops.upfirdn2d.upsample2d": "x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'",
    "torch_utils.ops.upfirdn2d.downsample2d": "x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'",
    "torch_utils.ops.conv2d_resample.conv2d_resample": "x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False",
    "torch_utils.ops.fma.fma": "a, b, c",
    "torch_utils.ops.conv2d_gradfix.conv2d": "input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1",
    "torch_utils.ops.conv2d_gradfix.conv_transpose2d": "input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1",
    "torch_utils.ops.conv2d_gradfix.no_weight_gradients": "disable=True",
    "torch_utils.ops.grid_sample_gradfix.grid_sample": "input, grid",
    "torch_utils.ops.filtered_lrelu.filtered_lrelu": "x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False, impl='cuda'",
}


def _resolve(dotted):
    module_name, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), name)


def _parse_official(text):
    """Build a Signature from the published parameter list, evaluating the defaults."""
    def stub_factory():
        namespace = {"torch": torch, "np": np}
        exec(f"def stub({text}): pass", namespace)
        return namespace["stub"]
    return inspect.signature(stub_factory())


@pytest.mark.parametrize("dotted", sorted(OFFICIAL))
def test_official_signature_is_kept(dotted):
    ours = inspect.signature(_resolve(dotted))
    official = _parse_official(OFFICIAL[dotted])
    ours_params = list(ours.parameters.values())
    official_params = list(official.parameters.values())
    assert len(ours_params) >= len(official_params), f"{dotted}{ours} lacks parameters of {official}"
    for ref, got in zip(official_params, ours_params):
        assert got.name == ref.name and got.kind == ref.kind, f"{dotted}: {got} where the official code has {ref}"
        if ref.default is not inspect.Parameter.empty:
            assert got.default == ref.default, f"{dotted}: default of '{ref.name}' is {got.default!r}, officially {ref.default!r}"
        else:
            assert got.default is inspect.Parameter.empty, f"{dotted}: '{ref.name}' must stay required"
    for extra in ours_params[len(official_params):]:
        # Additions are allowed only where callers cannot trip over them.
        assert extra.default is not inspect.Parameter.empty or extra.kind is inspect.Parameter.VAR_KEYWORD, \
            f"{dotted}: added parameter '{extra.name}' must have a default"


def test_module_level_names_that_pickled_code_reads():
    from torch_utils.ops import bias_act, conv2d_gradfix, grid_sample_gradfix
    from torch_utils import persistence, custom_ops
    import dnnlib
    assert dnnlib.util.EasyDict is dnnlib.EasyDict
    assert conv2d_gradfix.enabled is False and conv2d_gradfix.weight_gradients_disabled is False
    assert grid_sample_gradfix.enabled is False
    assert persistence._version == 6
    assert custom_ops.verbosity == "brief"
    expected_gains = {"linear": 1, "relu": np.sqrt(2), "lrelu": np.sqrt(2), "tanh": 1, "sigmoid": 1,
                      "elu": 1, "selu": 1, "softplus": 1, "swish": np.sqrt(2)}
    assert set(bias_act.activation_funcs) == set(expected_gains)
    for name, gain in expected_gains.items():
        spec = bias_act.activation_funcs[name]
        assert spec.def_gain == pytest.approx(gain)
        assert spec.def_alpha == (0.2 if name == "lrelu" else 0)
