"""Persistence: the official pickle format, loading by executing embedded source, and the no-exec loader."""

import importlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import dnnlib
from torch_utils import persistence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A small network module. Its top level appends to a marker file whenever it is executed, which lets
# the tests see whether loading ran the embedded source.
TOY_SOURCE = textwrap.dedent('''
    import numpy as np
    import torch
    from torch_utils import persistence

    with open(MARKER_PATH, "a") as _f:
        _f.write("x")

    @persistence.persistent_class
    class Inner(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(channels, channels))
            self.register_buffer("offset", torch.randn(channels))

        def forward(self, x):
            return x @ self.weight + self.offset

    @persistence.persistent_class
    class Toy(torch.nn.Module):
        def __init__(self, channels, scale=2.0, extra=None):
            super().__init__()
            self.inner = Inner(channels)
            self.scale = scale
            self.bias = torch.nn.Parameter(torch.randn(channels))

        def forward(self, x):
            return self.inner(x) * self.scale + self.bias

    @persistence.persistent_class
    class ImageLayer(torch.nn.Module):
        """Calls the ops the way the official StyleGAN2/3 network sources do."""
        def __init__(self, channels):
            super().__init__()
            from torch_utils.ops import upfirdn2d
            self.weight = torch.nn.Parameter(torch.randn(channels, channels, 3, 3))
            self.bias = torch.nn.Parameter(torch.randn(channels))
            self.register_buffer("resample_filter", upfirdn2d.setup_filter([1, 3, 3, 1]))
            self.register_buffer("lowpass", upfirdn2d.setup_filter(np.hanning(12)))

        def forward(self, x):
            from torch_utils import misc
            from torch_utils.ops import bias_act, conv2d_resample, filtered_lrelu, fma, upfirdn2d
            misc.assert_shape(x, [None, self.weight.shape[1], None, None])
            y = conv2d_resample.conv2d_resample(x, self.weight, f=self.resample_filter, up=2, padding=1, flip_weight=False)
            y = bias_act.bias_act(y, self.bias, act="lrelu", clamp=256)
            y = fma.fma(y, torch.full([1, 1, 1, 1], 0.5), upfirdn2d.upsample2d(x, self.resample_filter))
            return filtered_lrelu.filtered_lrelu(y, fu=self.lowpass, fd=self.lowpass, b=self.bias, up=2, down=2,
                                                 padding=[11, 11, 11, 11], clamp=256)
''')


def _write_toy_module(directory, name, marker, source=TOY_SOURCE):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".py")
    with open(path, "w") as f:
        f.write(f"MARKER_PATH = {str(marker)!r}\n" + source)
    return path


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Import a fresh toy module (unique name) from a folder that a child process cannot see."""
    marker = tmp_path / "marker.txt"
    name = f"toynet_{os.urandom(4).hex()}"
    _write_toy_module(str(tmp_path / "mods"), name, marker)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    module = importlib.import_module(name)
    assert marker.read_text() == "x"
    yield module, marker
    sys.modules.pop(name, None)


def _count(marker):
    return len(marker.read_text()) if marker.exists() else 0


# ----------------------------------------------------------------------------
# The pickle format.

def test_instances_reduce_to_the_official_meta_format(toy):
    module, _ = toy
    net = module.Toy(3, scale=0.5)
    func, args, state = net.__reduce__()[:3]
    assert func is persistence._reconstruct_persistent_obj
    assert state is None
    meta = args[0]
    assert type(meta) is dict
    assert set(meta) == {"type", "version", "module_src", "class_name", "state"}
    assert meta["type"] == "class" and meta["version"] == 6 and meta["class_name"] == "Toy"
    assert meta["module_src"] == open(module.__file__).read()
    assert meta["state"]["_init_kwargs"] == {"scale": 0.5}
    assert meta["state"]["_init_args"] == (3,)
    assert set(meta["state"]["_parameters"]) == {"bias"}


def test_persistent_class_records_constructor_arguments(toy):
    module, _ = toy
    extra = {"nested": [1, 2]}
    net = module.Toy(4, extra=extra)
    extra["nested"].append(3)  # The record is a deep copy.
    assert net.init_args == (4,)
    assert isinstance(net.init_kwargs, dnnlib.EasyDict)
    assert net.init_kwargs.extra == {"nested": [1, 2]}
    assert persistence.is_persistent(net) and persistence.is_persistent(module.Toy)
    assert not persistence.is_persistent(torch.nn.Linear(1, 1))
    assert module.Toy.__name__ == "Toy" and isinstance(net, torch.nn.Module)


def test_unpicklable_constructor_arguments_fail_at_construction(toy):
    module, _ = toy
    with pytest.raises(Exception):
        module.Toy(2, extra=lambda: None)


def test_trusted_round_trip_in_process_reuses_the_module(toy):
    module, marker = toy
    net = module.Toy(3)
    x = torch.randn(2, 3)
    loaded = pickle.loads(pickle.dumps(net))
    # The source was seen before (it is the imported module's), so nothing is executed again.
    assert _count(marker) == 1
    assert type(loaded) is module.Toy
    assert torch.equal(loaded(x), net(x))
    # Pickling a loaded object again keeps the embedded source.
    again = pickle.loads(pickle.dumps(loaded))
    assert torch.equal(again(x), net(x))


CHILD_LOADER = textwrap.dedent('''
    import sys, pickle
    # Only the package root (plus the standard library and site-packages for torch and numpy).
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                     and "editable" not in repr(f).lower()]
    sys.path = [PKG_ROOT] + [p for p in sys.path if "site-packages" in p or "lib/python" in p and "site-packages" not in p]
    import importlib.util
    for name in ("training", "metrics", TOY_NAME):
        assert importlib.util.find_spec(name) is None, name + " should not be importable here"
    import torch, torch_utils, dnnlib
    assert torch_utils.__file__.startswith(PKG_ROOT), torch_utils.__file__
    with open(PKL, "rb") as f:
        data = pickle.load(f)
    net = data["G_ema"]
    assert type(net).__module__.startswith("_imported_module_"), type(net).__module__
    assert isinstance(data["kwargs"], dnnlib.EasyDict)
    torch.save([net(data["x"]), data["image_layer"](data["image"])], OUT)
''')


def test_trusted_round_trip_in_a_fresh_interpreter_with_only_dnnlib_and_torch_utils(toy, tmp_path):
    module, marker = toy
    net = module.Toy(3, scale=3.0).eval().requires_grad_(False)
    x = torch.randn(2, 3)
    image_layer, image = module.ImageLayer(4), torch.randn(2, 4, 8, 8)
    pkl = tmp_path / "snapshot.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(dict(G_ema=net, x=x, kwargs=dnnlib.EasyDict(a=1), image_layer=image_layer, image=image), f)

    pkg_root = tmp_path / "pkgroot"
    for package in ("dnnlib", "torch_utils"):
        shutil.copytree(os.path.join(REPO_ROOT, package), pkg_root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out.pt"
    code = (f"PKG_ROOT = {str(pkg_root)!r}\nTOY_NAME = {module.__name__!r}\nPKL = {str(pkl)!r}\n"
            f"OUT = {str(out)!r}\n" + CHILD_LOADER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    net_out, image_out = torch.load(out)
    assert torch.equal(net_out, net(x))
    assert image_out.shape == (2, 4, 16, 16) and torch.allclose(image_out, image_layer(image))
    assert _count(marker) == 2  # The child executed the embedded source once.


def test_import_hooks_may_patch_the_source(toy, monkeypatch):
    module, marker = toy
    net = module.Toy(2, scale=1.0)
    data = pickle.dumps(net)
    seen = []

    def hook(meta):
        seen.append(meta.class_name)
        meta.module_src = meta.module_src.replace("* self.scale", "* self.scale * 10")
        return meta
    monkeypatch.setattr(persistence, "_import_hooks", [hook])
    loaded = pickle.loads(data)
    assert seen == ["Inner", "Toy"]
    x = torch.randn(1, 2)
    expected = (x @ net.inner.weight + net.inner.offset) * 10 + net.bias
    assert torch.allclose(loaded(x), expected)
    assert _count(marker) == 2  # The patched source is new, so it ran.


# ----------------------------------------------------------------------------
# The no-exec loader.

@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(persistence, "_no_exec_modules", {})
    return persistence


def test_no_exec_loader_rebuilds_registered_classes_without_running_the_source(toy, registry, tmp_path):
    module, marker = toy
    registry.register_no_exec_module("toy", [module.Toy, module.Inner])
    net = module.Toy(3, scale=0.25).eval()
    net.inner.train()
    net.bias.requires_grad_(False)
    path = tmp_path / "net.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G": net, "note": "hello", "kwargs": dnnlib.EasyDict(a=[1, 2])}, f)

    loaded = persistence.load(str(path))
    assert _count(marker) == 1
    G = loaded["G"]
    assert type(G) is module.Toy and loaded["note"] == "hello" and loaded["kwargs"].a == [1, 2]
    for (name_a, a), (name_b, b) in zip(net.state_dict().items(), G.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)
    assert G.training is False and G.inner.training is True
    assert G.bias.requires_grad is False and G.inner.weight.requires_grad is True
    x = torch.randn(2, 3)
    assert torch.equal(G(x), net(x))


def test_no_exec_loader_recognises_a_foreign_copy_of_a_module_by_its_names(toy, registry, tmp_path):
    module, marker = toy
    registry.register_no_exec_module("toy", [module.Toy, module.Inner])
    # A pickle written by another copy of the code: same classes, different source text.
    other_name = module.__name__ + "_fork"
    _write_toy_module(str(tmp_path / "fork"), other_name, marker,
                      source="# a fork with a different header\n" + TOY_SOURCE)
    sys.path.insert(0, str(tmp_path / "fork"))
    try:
        fork = importlib.import_module(other_name)
    finally:
        sys.path.remove(str(tmp_path / "fork"))
        sys.modules.pop(other_name, None)
    assert _count(marker) == 2
    net = fork.Toy(2)
    G = persistence.load(io.BytesIO(pickle.dumps(net)))
    assert _count(marker) == 2
    assert type(G) is module.Toy
    x = torch.randn(1, 2)
    assert torch.equal(G(x), net(x))


def test_no_exec_loader_refuses_unknown_globals_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))
    data = pickle.dumps({"G": Evil()})
    with pytest.raises(persistence.UnsafePickleError, match=r"'posix\.system'.*trust_code=True"):
        persistence.load(io.BytesIO(data))
    assert not marker.exists()
    # The same bytes do run code under plain pickle: the check above could fail.
    pickle.loads(data)
    assert marker.exists()


def test_no_exec_loader_refuses_unregistered_persistent_objects_and_runs_nothing(toy, registry, tmp_path):
    module, marker = toy
    data = pickle.dumps(module.Toy(2))
    # Make the embedded source unknown to this process so that trusted loading would execute it.
    persistence._src_to_module_dict.pop(module.Toy._orig_module_src, None)
    try:
        with pytest.raises(persistence.UnsafePickleError, match=r"'Inner'.*trust_code=True"):
            persistence.load(io.BytesIO(data))
        assert _count(marker) == 1
        persistence.load(io.BytesIO(data), trust_code=True)
        assert _count(marker) == 2  # Trusted loading did run it: the refusal above mattered.
    finally:
        persistence._src_to_module_dict[module.Toy._orig_module_src] = module


def test_no_exec_loader_refuses_tensor_shape_mismatch_with_a_clear_message(toy, registry, tmp_path):
    module, marker = toy
    net = module.Toy(3)
    data = pickle.dumps(net)

    class Toy(torch.nn.Module):  # A registered class whose constructor builds other shapes.
        def __init__(self, channels, scale=2.0, extra=None):
            super().__init__()
            self.inner = module.Inner(channels)
            self.bias = torch.nn.Parameter(torch.zeros(channels + 1))
    registry.register_no_exec_module("toy", [Toy, module.Inner], signature=["Toy", "Inner"])
    with pytest.raises(persistence.UnsafePickleError, match=r"'bias'.*\[3\].*\[4\]"):
        persistence.load(io.BytesIO(data))


def test_no_exec_loader_refuses_storage_bytes_that_hide_a_pickle(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))
    inner = io.BytesIO()
    torch.save(Evil(), inner)

    class SneakyStorage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner.getvalue(),))
    data = pickle.dumps(SneakyStorage())
    with pytest.raises(persistence.UnsafePickleError, match="tensor storage.*trust_code=True"):
        persistence.load(io.BytesIO(data))
    assert not marker.exists()
    # torch's own helper for this global would have run it.
    pickle.loads(data)
    assert marker.exists()


def test_no_exec_loader_admits_plain_data():
    import numpy as np
    obj = {"a": np.arange(5, dtype=np.int16), "s": np.float32(1.5), "t": torch.arange(4.0).view(2, 2)[:, 1],
           "p": torch.nn.Parameter(torch.ones(2)), "h": torch.ones(2, dtype=torch.float16), "set": {1, 2},
           "e": dnnlib.EasyDict(x=1), "c": 1 + 2j, "b": b"\x00\xff"}
    loaded = persistence.load(io.BytesIO(pickle.dumps(obj)))
    assert np.array_equal(loaded["a"], obj["a"]) and loaded["a"].dtype == np.int16
    assert loaded["s"] == np.float32(1.5) and type(loaded["s"]) is np.float32
    assert torch.equal(loaded["t"], torch.tensor([1.0, 3.0]))
    assert isinstance(loaded["p"], torch.nn.Parameter) and loaded["h"].dtype == torch.float16
    assert loaded["set"] == {1, 2} and loaded["e"].x == 1 and loaded["c"] == 1 + 2j and loaded["b"] == b"\x00\xff"
    # Protocol 2 spells bytes through _codecs.encode.
    assert persistence.load(io.BytesIO(pickle.dumps(obj, protocol=2)))["b"] == b"\x00\xff"


def test_no_exec_loader_builds_each_object_once_and_keeps_the_callers_random_streams(toy, registry, monkeypatch):
    import numpy as np
    module, _ = toy
    registry.register_no_exec_module("toy", [module.Toy, module.Inner])
    data = pickle.dumps({"G": module.Toy(3), "G_ema": module.Toy(3)})
    calls = {"Toy": 0, "Inner": 0}
    for cls in (module.Toy, module.Inner):
        original = cls.__init__

        def counting(self, *args, _original=original, _name=cls.__name__, **kwargs):
            calls[_name] += 1
            _original(self, *args, **kwargs)
        monkeypatch.setattr(cls, "__init__", counting)

    torch.manual_seed(123)
    np.random.seed(7)
    expected_torch, expected_numpy = torch.rand(4), np.random.rand(4)
    torch.manual_seed(123)
    np.random.seed(7)
    loaded = persistence.load(io.BytesIO(data))
    assert torch.equal(torch.rand(4), expected_torch) and np.array_equal(np.random.rand(4), expected_numpy)
    # Two networks, each built once; the inner layers only by their parents' constructors.
    assert calls == {"Toy": 2, "Inner": 2}
    assert loaded["G"] is not loaded["G_ema"] and loaded["G"].inner is not loaded["G_ema"].inner


# ----------------------------------------------------------------------------
# Plain (not persistent) torch modules inside persistent ones: admitted as state holders only.

# Official networks build a few submodules from plain classes (torch.nn.Sequential, CREPS's
# SynthesisInput): a pickle refers to such a class by name and stores the instance's __dict__.
PLAIN_SOURCE = textwrap.dedent('''
    import torch
    from torch_utils import persistence

    with open(MARKER_PATH, "a") as _f:
        _f.write("x")

    @persistence.persistent_class
    class Leaf(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(channels, channels))

        def forward(self, x):
            return x @ self.weight

    class Plain(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.register_buffer("shift", torch.randn(channels))
            self.scale = torch.nn.Parameter(torch.randn(channels))
            self.leaf = Leaf(channels)

        def forward(self, x):
            return self.leaf(x) * self.scale + self.shift

    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.plain = Plain(channels)
            self.seq = torch.nn.Sequential(Leaf(channels), torch.nn.Sequential(Leaf(channels)))
            self.blocks = torch.nn.ModuleList([Leaf(channels), Leaf(channels)])
            self.named = torch.nn.ModuleDict({"a": Leaf(channels)})

        def forward(self, x):
            x = self.seq(self.plain(x))
            for block in self.blocks:
                x = block(x)
            return self.named["a"](x)
''')


@pytest.fixture
def plain_toy(tmp_path, monkeypatch, registry):
    """A module with a plain submodule class; Net and Leaf registered, Plain admitted as a state holder."""
    marker = tmp_path / "plain_marker.txt"
    name = f"plainnet_{os.urandom(4).hex()}"
    _write_toy_module(str(tmp_path / "plain_mods"), name, marker, source=PLAIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "plain_mods"))
    module = importlib.import_module(name)
    monkeypatch.setattr(persistence, "_no_exec_plain_modules", set(persistence._no_exec_plain_modules))
    registry.register_no_exec_module("plain", [module.Net, module.Leaf])
    persistence.register_no_exec_plain_module(name, "Plain")
    assert _count(marker) == 1
    yield module, marker
    sys.modules.pop(name, None)


class _CraftingPickler(pickle.Pickler):
    """Pickles instances of one class with a reduce tuple of the test's choosing (a tampered file)."""

    def __init__(self, file, cls, recipe):
        super().__init__(file, protocol=4)
        self.cls, self.recipe = cls, recipe

    def reducer_override(self, obj):
        return self.recipe(obj) if type(obj) is self.cls else NotImplemented


def _crafted(obj, cls, recipe):
    buffer = io.BytesIO()
    _CraftingPickler(buffer, cls, recipe).dump(obj)
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_no_exec_loader_restores_plain_submodules_by_name(plain_toy, protocol):
    module, marker = plain_toy
    net = module.Net(3).eval()
    net.plain.train()
    net.plain.leaf.eval()
    net.plain.scale.requires_grad_(False)
    data = pickle.dumps({"G": net}, protocol=protocol)
    G = persistence.load(io.BytesIO(data))["G"]
    assert _count(marker) == 1
    assert type(G) is module.Net and type(G.plain) is module.Plain and type(G.seq) is torch.nn.Sequential
    for (name_a, a), (name_b, b) in zip(net.state_dict().items(), G.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)
    assert G.training is False and G.plain.training is True and G.plain.leaf.training is False
    assert G.plain.scale.requires_grad is False and G.plain.leaf.weight.requires_grad is True
    x = torch.randn(2, 3)
    assert torch.equal(G(x), net(x))


def test_no_exec_loader_refuses_a_plain_class_nobody_admitted(plain_toy, monkeypatch):
    module, marker = plain_toy
    data = pickle.dumps(module.Net(2))
    monkeypatch.setattr(persistence, "_no_exec_plain_modules", {"torch.nn.modules.container.Sequential"})
    with pytest.raises(persistence.UnsafePickleError, match=rf"'{module.__name__}\.Plain'.*does not admit.*trust_code=True"):
        persistence.load(io.BytesIO(data))
    assert _count(marker) == 1


def test_no_exec_loader_refuses_plain_modules_outside_a_rebuilt_network(plain_toy, toy):
    module, _ = plain_toy
    toy_module, _ = toy
    persistence.register_no_exec_module("toy", [toy_module.Toy, toy_module.Inner])
    for obj in (torch.nn.Sequential(), module.Plain(2), {"G": module.Net(2), "extra": [torch.nn.ModuleList()]},
                toy_module.Toy(2, extra=torch.nn.ModuleDict())):  # the last: in the constructor arguments
        with pytest.raises(persistence.UnsafePickleError, match=r"plain module '[\w.]+' outside the submodules.*trust_code=True"):
            persistence.load(io.BytesIO(pickle.dumps(obj)))


def test_no_exec_plain_module_stand_ins_only_keep_a_well_formed_state(plain_toy):
    import copyreg
    module, marker = plain_toy
    net = module.Net(2)
    state = module.Plain.__getstate__
    tampered = {
        "with arguments": lambda obj: (copyreg.__newobj__, (type(obj), 1), state(obj)),
        "with a state that is not a dict": lambda obj: (copyreg.__newobj__, (type(obj),), 5),
        "without a state": lambda obj: (copyreg.__newobj__, (type(obj),)),
        "containing itself": lambda obj: (copyreg.__newobj__, (type(obj),), dict(state(obj), _modules={"me": obj})),
        "with _parameters not a dict": lambda obj: (copyreg.__newobj__, (type(obj),), dict(state(obj), _parameters=[1])),
    }
    messages = {"with arguments": "with arguments", "with a state that is not a dict": "malformed state",
                "without a state": "has no state", "containing itself": "contains itself",
                "with _parameters not a dict": "_parameters of the plain module.*not a dict"}
    for how, recipe in tampered.items():
        data = _crafted(net, module.Plain, recipe)
        with pytest.raises(persistence.UnsafePickleError, match=messages[how]):
            persistence.load(io.BytesIO(data))
    assert _count(marker) == 1
    # Protocol 1 creates plain objects through copyreg._reconstructor, which is not admitted.
    with pytest.raises(persistence.UnsafePickleError, match=r"'copyreg\._reconstructor'.*does not admit"):
        persistence.load(io.BytesIO(pickle.dumps(net, protocol=1)))


def test_plain_module_registrations_by_executed_sources_are_ignored(monkeypatch):
    monkeypatch.setattr(persistence, "_no_exec_plain_modules", set(persistence._no_exec_plain_modules))
    before = set(persistence._no_exec_plain_modules)
    source = ("from torch_utils import persistence\n"
              f"persistence.register_no_exec_plain_module('evil_{os.urandom(4).hex()}', 'Thing')\n")
    try:
        persistence._src_to_module(source)  # What a trusted load does with an embedded source.
    finally:
        module = persistence._src_to_module_dict.pop(source)
        persistence._module_to_src_dict.pop(module)
        sys.modules.pop(module.__name__)
    assert persistence._no_exec_plain_modules == before
    persistence.register_no_exec_plain_module("ours", "Thing")  # From an imported module (this one): registered.
    assert persistence._no_exec_plain_modules == before | {"ours.Thing"}
