"""Pickling of network objects together with the source code of the module that defines them.

A class decorated with `@persistent_class` pickles its instances as
`_reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=<whole module source>, class_name=..., state=...)`,
the format of the official StyleGAN2-ADA / StyleGAN3 / EG3D / Ray Conditioning releases. A snapshot
therefore loads wherever `dnnlib` and `torch_utils` import, without the code that trained it.

Two ways to load:
- `pickle.load` (or `load(f, trust_code=True)`) executes the embedded source, exactly like the
  official code. Only do this with files you trust.
- `load(f)` (the default, `trust_code=False`) never executes anything from the file: a restricted
  unpickler admits only tensors, numpy arrays and scalars, builtin containers and EasyDict, and it
  rebuilds every persistent object from a class registered with `register_no_exec_module`, using the
  object's recorded constructor arguments and tensors, and resolves the few function references that
  official networks keep to functions of ours registered with `register_no_exec_global`.
  Plain (not persistent) torch modules inside a persistent one are pickled as references to their
  class; the loader admits `torch.nn.Sequential`, `ModuleList` and `ModuleDict`, and the classes
  registered with `register_no_exec_plain_module` (CREPS's `SynthesisInput`), as state holders only:
  such a reference yields an inert object that keeps the pickled state, and the rebuilt network takes
  the tensors of that submodule from it by name, as from any other submodule. Nothing of the class
  runs, and a plain module anywhere but among the submodules of a persistent object is refused.
  OmegaConf configs in the recorded arguments (EpiGRAF's `cfg`) are read through inert stand-ins of
  their node classes and come out as nested EasyDicts with their interpolations resolved; OmegaConf is
  never imported. EpiGRAF's `src.dnnlib` / `src.torch_utils` globals are read as ours.

Code a trusted load executes cannot change what later no-exec loads build: registrations made by an
executed embedded source are ignored.
"""

import _compat_pickle
import ast
import copy
import functools
import inspect
import io
import pickle
import re
import sys
import types
import uuid
from typing import Any, Callable, Dict, Iterable, Optional

import dnnlib

_version = 6                # Written into every pickle; the official releases use the same number.
_decorators = set()         # Every class produced by persistent_class().
_import_hooks = []          # Functions meta -> meta, run on every load before the version check.
_module_to_src_dict = {}    # module object -> source text
_src_to_module_dict = {}    # source text -> module object
_executed_module_names = set()  # Modules made by executing a pickle's embedded source (trust_code=True).


# ----------------------------------------------------------------------------
# Saving.

def persistent_class(orig_class: type) -> type:
    """Class decorator: instances pickle together with the source of the module that defines the class.

    The class must be defined at the top level of an importable module, and its constructor arguments
    must be pickleable: they are recorded (`init_args`, `init_kwargs`) so that the object can be
    rebuilt, also by the no-exec loader.
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            assert orig_class.__name__ in orig_module.__dict__
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    _decorators.add(Decorator)
    return Decorator


def is_persistent(obj: Any) -> bool:
    """True for a class made by persistent_class() and for its instances."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # Unhashable objects.
        pass
    return type(obj) in _decorators


def import_hook(hook: Callable) -> None:
    """Register `hook(meta) -> meta`, run on every persistent object loaded, before the version check.

    Hooks may rewrite `meta.module_src` to patch old pickles against API changes. A hook defined by
    the embedded source of a pickle (run by a trusted load) is ignored: see `_from_executed_source`.
    """
    assert callable(hook)
    if _from_executed_source(hook):
        return
    _import_hooks.append(hook)


def _from_executed_source(obj: Any) -> bool:
    """True for a class or function defined by a pickle's embedded source, executed by a trusted load.

    Such sources are module sources like ours: executing an edited copy of one re-runs its
    `register_no_exec_module` and `import_hook` calls with the edited classes. Those calls must not
    change what later loads build, so they are ignored; only modules imported from files register.
    """
    return getattr(obj, "__module__", None) in _executed_module_names


def _module_to_src(module: types.ModuleType) -> str:
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


def _check_pickleable(obj: Any) -> None:
    """Fail early, at construction, if the recorded state of a persistent object cannot be pickled."""
    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray, type(None))):
            return None
        if f"{type(obj).__module__}.{type(obj).__name__}" in ("numpy.ndarray", "torch.Tensor", "torch.nn.parameter.Parameter"):
            return None
        if is_persistent(obj):
            return None
        return obj  # Anything else gets a trial pickle below.
    with io.BytesIO() as f:
        pickle.dump(recurse(obj), f)


# ----------------------------------------------------------------------------
# Loading by executing the embedded source (the official behaviour).

def _src_to_module(module_src: str) -> types.ModuleType:
    module = _src_to_module_dict.get(module_src, None)
    if module is None:
        module_name = "_imported_module_" + uuid.uuid4().hex
        _executed_module_names.add(module_name)
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        # Registered before executing: the decorators inside the source look their source up here.
        _module_to_src_dict[module] = module_src
        _src_to_module_dict[module_src] = module
        exec(module_src, module.__dict__)  # pylint: disable=exec-used
    return module


def _run_import_hooks(meta: Any) -> dnnlib.EasyDict:
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, "An import hook returned None; it must return the (modified) meta."
    return meta


def _reconstruct_persistent_obj(meta: Dict) -> Any:
    """Rebuild a persistent object by executing its embedded module source (trusted files only)."""
    meta = _run_import_hooks(meta)
    assert meta.version == _version, f"Unsupported persistent object version {meta.version}; expected {_version}."
    module = _src_to_module(meta.module_src)
    assert meta.type == "class"
    orig_class = module.__dict__[meta.class_name]
    decorator_class = persistent_class(orig_class)
    obj = decorator_class.__new__(decorator_class)
    setstate = getattr(obj, "__setstate__", None)
    if callable(setstate):
        setstate(meta.state)  # nn.Module back-fills attributes that newer PyTorch versions added.
    else:
        obj.__dict__.update(meta.state)
    return obj


# ----------------------------------------------------------------------------
# Loading without executing anything from the file.

class UnsafePickleError(pickle.UnpicklingError):
    """The no-exec loader met something it will not rebuild without running code from the file."""


_TRUST_HINT = "if you trust the file and its author, load it with trust_code=True"


class _NoExecModule:
    """Our classes that stand in for the classes of one known embedded module."""

    def __init__(self, key: str, classes: Dict[str, type], signature: frozenset, sources: frozenset):
        self.key = key
        self.classes = classes
        self.signature = signature
        self.sources = sources


_no_exec_modules: Dict[str, _NoExecModule] = {}


def register_no_exec_module(key: str, classes: Iterable[type], signature: Optional[Iterable[str]] = None) -> None:
    """Let the no-exec loader rebuild objects of an embedded module from our own `classes`.

    An embedded module source is recognised as `key` when it is the source of one of `classes`, or when
    it defines at top level every name in `signature` (default: the classes' names); when several
    registered modules match, the one with the largest signature wins. Objects are then rebuilt from the
    class of the same name, constructed with the recorded constructor arguments.
    """
    classes = list(classes)
    if any(_from_executed_source(cls) for cls in classes):
        return  # A trusted load ran a pickle's copy of a registering module: keep the registry as it is.
    by_name = {cls.__name__: cls for cls in classes}
    signature = frozenset(signature if signature is not None else by_name)
    sources = frozenset(getattr(cls, "_orig_module_src", None) for cls in classes) - {None}
    _no_exec_modules[key] = _NoExecModule(key, by_name, signature, sources)


@functools.lru_cache(maxsize=64)
def _top_level_names(module_src: str) -> frozenset:
    # Parsing builds a syntax tree only; nothing in the source runs. Cached: a pickle repeats the same
    # module source for each of its dozens of objects.
    try:
        tree = ast.parse(module_src)
    except SyntaxError:
        return frozenset()
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))


def _identify_module(module_src: str, class_name: Optional[str] = None) -> Optional[_NoExecModule]:
    # A source of ours can back several entries (one of ours, and another standing in for an official module
    # whose classes include some of ours, e.g. EpiGRAF's layers.py: our StyleGAN2 FullyConnectedLayer): prefer
    # an entry that has the class asked for, then the first registered.
    owners = [entry for entry in _no_exec_modules.values() if module_src in entry.sources]
    if owners:
        return next((entry for entry in owners if class_name in entry.classes), owners[0])
    names = _top_level_names(module_src)
    matches = [entry for entry in _no_exec_modules.values() if entry.signature and entry.signature <= names]
    if not matches:
        return None
    matches.sort(key=lambda entry: len(entry.signature), reverse=True)
    if len(matches) > 1 and len(matches[0].signature) == len(matches[1].signature):
        return None  # Ambiguous: refuse rather than guess.
    return matches[0]


def _describe_module(module_src: str) -> str:
    names = sorted(_top_level_names(module_src))
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"an embedded module defining {shown}" if names else "an embedded module"


class _Pending:
    """A persistent object read from the file, not yet built.

    Building waits until the whole file is read: a parent's constructor creates its own submodules,
    so only the outermost objects are constructed, each exactly once, and their submodules' tensors
    are taken from the pending children's states.
    """

    def __init__(self, cls: type, init_args: tuple, init_kwargs: dict, state: Dict, what: str):
        self.cls = cls
        self.init_args = init_args
        self.init_kwargs = init_kwargs
        self.state = state
        self.what = what


def _reconstruct_without_exec(meta: Any) -> _Pending:
    """Stand-in for _reconstruct_persistent_obj: choose a registered class, execute nothing."""
    if not isinstance(meta, dict) or not isinstance(meta.get("module_src"), str) or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError("A persistent object in the file is malformed.")
    meta = _run_import_hooks(meta)
    if meta.get("version") != _version or meta.get("type") != "class":
        raise UnsafePickleError(f"Unsupported persistent object (type {meta.get('type')!r}, version {meta.get('version')!r}).")
    class_name = meta.get("class_name")
    what = f"'{class_name}' from {_describe_module(meta.module_src)}"
    entry = _identify_module(meta.module_src, class_name)
    if entry is None or class_name not in entry.classes:
        raise UnsafePickleError(
            f"No registered class can stand in for {what}; import the module that registers it "
            f"(for example training.networks_stylegan2) or, {_TRUST_HINT}.")
    state = meta.state
    if "_init_kwargs" not in state:
        raise UnsafePickleError(f"The file does not record the constructor arguments of {what}; {_TRUST_HINT}.")
    return _Pending(entry.classes[class_name], tuple(state.get("_init_args") or ()),
                    dict(state.get("_init_kwargs") or {}), state, what)


# ----------------------------------------------------------------------------
# Plain torch modules inside persistent objects: state holders, never instances of their class.

# Dotted names of the plain module classes the no-exec loader admits as state holders.
_no_exec_plain_modules = {
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
}


def register_no_exec_plain_module(module: str, name: str) -> None:
    """Let the no-exec loader admit the class reference `module.name` as a plain module's state holder.

    For the few submodules official networks build from classes that are not `@persistent_class` (such
    an object pickles as a reference to its class plus its `__dict__`, e.g. CREPS's
    `training.networks_creps.SynthesisInput`). The reference resolves to an inert stand-in that only
    keeps that state; nothing of the named class is imported or run. The stand-in is accepted only as a
    submodule of a persistent object, whose registered class must build a submodule with the same
    tensor names in the same place: the tensors are copied from the stand-in by name.
    `torch.nn.Sequential`, `ModuleList` and `ModuleDict` are always admitted. Ignored when called by code
    that a trusted load executed (see `_from_executed_source`).
    """
    caller = sys._getframe(1).f_globals.get("__name__")  # pylint: disable=protected-access
    if caller in _executed_module_names:
        return
    _no_exec_plain_modules.add(f"{module}.{name}")


class _InertState:
    """An object a file creates with `cls.__new__(cls)` and one dict `__setstate__`, which only keeps that state.

    The base of the stand-ins below; `noun` names what the file referred to, for the refusals.
    """

    __slots__ = ("state",)
    global_name = "an object"
    noun = "object"

    def __new__(cls, *args, **kwargs):
        if cls in _INERT_BASES or args or kwargs:
            raise UnsafePickleError(f"The file creates the {cls.noun} '{cls.global_name}' with arguments, "
                                    f"which the no-exec loader does not admit; {_TRUST_HINT}.")
        obj = super().__new__(cls)
        obj.state = None
        return obj

    def __setstate__(self, state):
        if self.state is not None or not isinstance(state, dict):
            raise UnsafePickleError(f"The {self.noun} '{self.global_name}' in the file has a malformed state; {_TRUST_HINT}.")
        self.state = state


class _PlainModuleState(_InertState):
    """What a file's reference to an admitted plain module class stands for: the pickled state, nothing else.

    Pickle creates it with `cls.__new__(cls)` (NEWOBJ, pickle protocol 2 and later) and hands it the
    module's `__dict__` through `__setstate__` (BUILD). It has no other behaviour; `_restore_module`
    reads its tensors by name. (Protocols 0 and 1 spell NEWOBJ as a call of copyreg._reconstructor,
    which the loader does not admit; torch and the official releases write protocol 2 or later.)
    """

    __slots__ = ()
    global_name = "a plain module"
    noun = "plain module"

    @property
    def what(self) -> str:
        return f"the plain module '{self.global_name}'"


_plain_module_classes: Dict[str, type] = {}


def _plain_module_class(global_name: str) -> type:
    """The stand-in class for one admitted plain module class (one per name, for clear messages)."""
    cls = _plain_module_classes.get(global_name)
    if cls is None:
        cls = type(f"PlainModuleState[{global_name}]", (_PlainModuleState,), dict(__slots__=(), global_name=global_name))
        _plain_module_classes[global_name] = cls
    return cls


def _state_group(node: Any, key: str) -> Dict:
    """node.state[key] ('_modules', '_parameters', '_buffers') as a dict; absent or None gives {}."""
    if not isinstance(node.state, dict):
        raise UnsafePickleError(f"A submodule in the file ({node.what}) has no state; {_TRUST_HINT}.")
    group = node.state.get(key)
    if group is None:
        return {}
    if not isinstance(group, dict):
        raise UnsafePickleError(f"The {key} of {node.what} in the file is not a dict; {_TRUST_HINT}.")
    return group


def _pending_children(pending: Any, prefix: str = "", ancestors: frozenset = frozenset()):
    """(qualified name, node) for the object and every submodule below it: pending objects and plain modules."""
    yield prefix.rstrip("."), pending
    ancestors = ancestors | {id(pending)}
    for child_name, child in _state_group(pending, "_modules").items():
        if child is None:
            continue
        if not isinstance(child, (_Pending, _PlainModuleState)):
            raise UnsafePickleError(f"Submodule '{prefix}{child_name}' of {pending.what} is not an object the loader can rebuild.")
        if id(child) in ancestors:
            raise UnsafePickleError(f"Submodule '{prefix}{child_name}' of {pending.what} contains itself; {_TRUST_HINT}.")
        yield from _pending_children(child, f"{prefix}{child_name}.", ancestors)


def _restore_module(obj, pending: _Pending) -> None:
    """Copy the pickled tensors into a freshly constructed module; names and shapes must match exactly."""
    import torch
    src, flags, nodes = {}, {}, {}
    for module_name, node in _pending_children(pending):
        nodes[module_name] = node
        groups = [_state_group(node, group) for group in ("_parameters", "_buffers")]
        flags[module_name] = bool(node.state.get("training", False))
        for group in groups:
            for name, tensor in group.items():
                if tensor is not None:
                    src[f"{module_name}.{name}" if module_name else name] = tensor
    dst = dict(list(obj.named_parameters()) + list(obj.named_buffers()))
    missing = sorted(set(dst) - set(src))
    unexpected = sorted(set(src) - set(dst))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UnsafePickleError(
            f"The tensors of {pending.what} do not match the registered class ({detail}); {_TRUST_HINT}.")
    with torch.no_grad():
        for name, tensor in dst.items():
            if not isinstance(src[name], torch.Tensor) or tensor.shape != src[name].shape:
                raise UnsafePickleError(
                    f"Tensor '{name}' of {pending.what} has shape {list(getattr(src[name], 'shape', []))} in the "
                    f"file but {list(tensor.shape)} in the registered class; {_TRUST_HINT}.")
            tensor.copy_(src[name].detach())
            if isinstance(tensor, torch.nn.Parameter):
                tensor.requires_grad_(src[name].requires_grad)
    for name, module in obj.named_modules():
        module.training = flags.get(name, module.training)
    # Plain attributes each module's class declares as state (EG3D: the neural rendering resolution that
    # training scheduled; GRAM: its renderer's options), when the file holds plain data for them.
    for module_name, module in obj.named_modules():
        node = nodes.get(module_name)
        for name in getattr(type(module), "state_attributes", ()):
            if node is not None and name in node.state and _is_plain_data(node.state[name]):
                setattr(module, name, _plain_copy(node.state[name]))


def _is_plain_data(value, depth=0) -> bool:
    if depth > 8:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_data(v, depth + 1) for k, v in value.items())
    return False


def _plain_copy(value):
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_copy(v) for v in value)
    return value


def _build(pending: _Pending, memo: Dict[int, Any]) -> Any:
    import numpy as np
    import torch
    args = _materialize(pending.init_args, memo)
    kwargs = _materialize(pending.init_kwargs, memo)
    # Constructors draw random initial weights; keep the caller's random streams as they were,
    # as plain unpickling would.
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            obj = pending.cls(*args, **kwargs)
    except Exception as err:
        raise UnsafePickleError(f"Rebuilding {pending.what} failed ({type(err).__name__}: {err}); {_TRUST_HINT}.") from None
    finally:
        np.random.set_state(numpy_state)
    if isinstance(obj, torch.nn.Module):
        _restore_module(obj, pending)
    return obj


def _materialize(obj: Any, memo: Dict[int, Any]) -> Any:
    """Replace every pending object in a loaded structure by the object it stands for."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _PlainModuleState):
        raise UnsafePickleError(
            f"The file holds {obj.what} outside the submodules of a network the no-exec loader rebuilds; "
            f"only there can its tensors be restored without running its code; {_TRUST_HINT}.")
    if isinstance(obj, _Pending):
        result = _build(obj, memo)
    elif isinstance(obj, _OmegaConfState):
        if obj.kind == 'metadata':
            raise _omegaconf_refusal("has its metadata where a config belongs")
        result = _omegaconf_to_plain(obj)
    elif isinstance(obj, type) and issubclass(obj, _OmegaConfState):
        raise UnsafePickleError(f"The file holds the class '{obj.global_name}' outside an OmegaConf config; {_TRUST_HINT}.")
    elif isinstance(obj, _OmegaConfTypeName):
        raise UnsafePickleError(f"The file holds '{obj.name}' outside an OmegaConf config; {_TRUST_HINT}.")
    elif isinstance(obj, dict):  # dict, OrderedDict, EasyDict: keep the type.
        result = type(obj)()
        for key, value in obj.items():
            result[key] = _materialize(value, memo)
    elif isinstance(obj, list):
        result = [_materialize(value, memo) for value in obj]
    elif isinstance(obj, tuple):
        result = tuple(_materialize(value, memo) for value in obj)
    else:
        return obj
    memo[id(obj)] = result
    return result


def _load_storage_from_bytes(data: bytes) -> Any:
    # torch's own helper for this global loads with weights_only=False, i.e. it would run any pickle.
    import torch
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise UnsafePickleError(f"A tensor storage in the file hides objects other than tensor data; {_TRUST_HINT}.") from None


# ----------------------------------------------------------------------------
# OmegaConf configs inside the recorded constructor arguments: read as plain data, without OmegaConf.

# EpiGRAF's official networks take `cfg`, an OmegaConf DictConfig (its Hydra config's model.generator or
# model.discriminator subtree), so their pickles hold one in `_init_kwargs`. OmegaConf pickles a config as
# its node objects (created without arguments, then given their `__dict__`), with metadata that names a few
# types. The no-exec loader resolves those class names to the inert stand-ins below, which only keep the
# pickled state; after loading, a config becomes nested EasyDicts, lists and values, with its `${...}`
# interpolations resolved against the config's root (which the pickle holds through `_parent`). Nothing
# of OmegaConf is imported or run; every other name from it, custom resolvers included, stays refused or
# unresolved.

_OMEGACONF_KINDS = {  # dotted name -> what the stand-in holds
    'omegaconf.dictconfig.DictConfig': 'dict',
    'omegaconf.listconfig.ListConfig': 'list',
    'omegaconf.nodes.AnyNode': 'value',
    'omegaconf.nodes.StringNode': 'value',
    'omegaconf.nodes.IntegerNode': 'value',
    'omegaconf.nodes.FloatNode': 'value',
    'omegaconf.nodes.BooleanNode': 'value',
    'omegaconf.base.ContainerMetadata': 'metadata',
    'omegaconf.base.Metadata': 'metadata',
}
# Types an OmegaConf node's metadata names (ref_type, object_type, key_type, element_type); admitted as inert
# names, and only in a file that has referred to an OmegaConf class before.
_OMEGACONF_TYPE_NAMES = {'typing.Any', 'builtins.dict', 'builtins.list', 'builtins.int', 'builtins.float',
                         'builtins.str', 'builtins.bool', 'builtins.bytes'}
_OMEGACONF_MAX_DEPTH = 64  # nesting and interpolation chains; deeper means a crafted or cyclic config


class _OmegaConfState(_InertState):
    """What a file's reference to an admitted OmegaConf class stands for: the pickled `__dict__`, nothing else."""

    __slots__ = ()
    global_name = 'an OmegaConf object'
    noun = 'OmegaConf object'
    kind = None


_INERT_BASES = (_InertState, _PlainModuleState, _OmegaConfState)
_omegaconf_classes: Dict[str, type] = {}


def _omegaconf_class(global_name: str) -> type:
    cls = _omegaconf_classes.get(global_name)
    if cls is None:
        cls = type(f"OmegaConfState[{global_name}]", (_OmegaConfState,),
                   dict(__slots__=(), global_name=global_name, kind=_OMEGACONF_KINDS[global_name]))
        _omegaconf_classes[global_name] = cls
    return cls


class _OmegaConfTypeName:
    """An inert stand-in for a type that OmegaConf metadata names (typing.Any, builtins.dict, ...)."""

    __slots__ = ('name',)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"The file calls '{self.name}', which the no-exec loader admits only as a type "
                                f"named by an OmegaConf config; {_TRUST_HINT}.")

    def __repr__(self):
        return f"<type name {self.name}>"


def _omegaconf_resolver_cache(*factory):
    """Stand-in for `collections.defaultdict(dict)`, OmegaConf's (discarded) resolver cache: an empty dict."""
    if len(factory) > 1 or not all(isinstance(f, _OmegaConfTypeName) for f in factory):
        raise UnsafePickleError(f"The file creates 'collections.defaultdict' with arguments the no-exec loader does "
                                f"not admit; {_TRUST_HINT}.")
    return {}


def _omegaconf_refusal(what: str) -> UnsafePickleError:
    return UnsafePickleError(f"An OmegaConf config in the file {what}; {_TRUST_HINT}.")


def _omegaconf_node_state(node: Any, depth: int) -> Dict:
    if depth > _OMEGACONF_MAX_DEPTH:
        raise _omegaconf_refusal(f"is nested more than {_OMEGACONF_MAX_DEPTH} levels deep or refers to itself")
    if not isinstance(node, _OmegaConfState) or node.kind not in ('dict', 'list', 'value'):
        raise _omegaconf_refusal(f"holds {type(node).__name__} where a config node belongs")
    if node.state is None:
        raise _omegaconf_refusal(f"has a node '{node.global_name}' without a state")
    return node.state


def _omegaconf_parent(node: _OmegaConfState) -> Optional[_OmegaConfState]:
    parent = node.state.get('_parent') if isinstance(node.state, dict) else None
    return parent if isinstance(parent, _OmegaConfState) and parent.kind in ('dict', 'list') else None


def _omegaconf_child(container: _OmegaConfState, key: str) -> Optional[_OmegaConfState]:
    content = container.state.get('_content') if isinstance(container.state, dict) else None
    if isinstance(content, dict):
        return content.get(key, content.get(int(key)) if key.lstrip('-').isdigit() else None)
    if isinstance(content, list) and key.isdigit() and int(key) < len(content):
        return content[int(key)]
    return None


_OMEGACONF_INTERPOLATION = re.compile(r'\$\{\s*(\.*[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*|\.+)\s*\}')


def _omegaconf_select(node: _OmegaConfState, path: str, depth: int) -> Optional[_OmegaConfState]:
    """The node that the interpolation `${path}` in `node` refers to, or None (then it stays unresolved).

    Absolute paths count from the root, relative ones ('.key' a sibling, '..key' one level up) from the
    container holding `node`, as OmegaConf does. Keys that are themselves interpolations are followed.
    """
    dots = len(path) - len(path.lstrip('.'))
    base = _omegaconf_parent(node)
    if dots == 0:
        seen = set()
        while base is not None and _omegaconf_parent(base) is not None and id(base) not in seen:
            seen.add(id(base))
            base = _omegaconf_parent(base)
    for _ in range(max(dots - 1, 0)):
        base = _omegaconf_parent(base) if base is not None else None
    if base is None:
        return None
    for key in [k for k in path.lstrip('.').split('.') if k]:
        base = _omegaconf_follow(base, depth + 1)
        child = _omegaconf_child(base, key) if base is not None else None
        if child is None:
            return None
        base = child
    return base


def _omegaconf_follow(node: Optional[_OmegaConfState], depth: int) -> Optional[_OmegaConfState]:
    """`node`, or the node its whole-value interpolation ('${a.b}') refers to, followed to the end."""
    while node is not None:
        state = _omegaconf_node_state(node, depth)
        value = state.get('_val' if node.kind == 'value' else '_content')
        match = _OMEGACONF_INTERPOLATION.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            return node
        node = _omegaconf_select(node, match.group(1), depth + 1)
        depth += 1
    return None


def _omegaconf_to_plain(node: Any, depth: int = 0) -> Any:
    """A config node as plain data: DictConfig -> EasyDict, ListConfig -> list, value nodes -> their value."""
    state = _omegaconf_node_state(node, depth)
    value = state.get('_val', None) if node.kind == 'value' else state.get('_content', None)
    if isinstance(value, str) and '${' in value:
        match = _OMEGACONF_INTERPOLATION.fullmatch(value)
        if match is not None:
            target = _omegaconf_select(node, match.group(1), depth + 1)
            return value if target is None else _omegaconf_to_plain(target, depth + 1)

        def substitute(match):  # a string with interpolations inside: scalars' text, as OmegaConf formats them
            target = _omegaconf_select(node, match.group(1), depth + 1)
            resolved = _omegaconf_to_plain(target, depth + 1) if target is not None else None
            if target is None or not (resolved is None or isinstance(resolved, (bool, int, float, str))):
                return match.group(0)
            return str(resolved)
        text = _OMEGACONF_INTERPOLATION.sub(substitute, value)
        return value if '${' in text else text  # all or nothing: a part left (a resolver) keeps the whole text
    if node.kind == 'value' or value is None or isinstance(value, str):  # a value, a None config or '???'
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return value
        raise _omegaconf_refusal(f"holds a value of type {type(value).__name__}")
    if node.kind == 'dict' and isinstance(value, dict):
        result = dnnlib.EasyDict()
        for key, child in value.items():
            if not (key is None or isinstance(key, (bool, int, float, str))):
                raise _omegaconf_refusal(f"has a key of type {type(key).__name__}")
            result[key] = _omegaconf_to_plain(child, depth + 1)
        return result
    if node.kind == 'list' and isinstance(value, list):
        return [_omegaconf_to_plain(child, depth + 1) for child in value]
    raise _omegaconf_refusal(f"has a '{node.global_name}' whose content is a {type(value).__name__}")


_no_exec_globals: Dict[str, Any] = {}


def register_no_exec_global(module: str, name: str, obj: Any) -> None:
    """Let the no-exec loader resolve the global reference `module.name` in a file to our `obj`.

    For the module-level functions that official networks keep as attributes (Ray Conditioning's
    synthesis blocks hold `training.plucker.plucker_embedding`), so that their pickles refer to them by
    name: `obj` must be our own implementation of the same function. Ignored when called by code that a
    trusted load executed (see `_from_executed_source`).
    """
    if _from_executed_source(obj):
        return
    _no_exec_globals[f"{module}.{name}"] = obj


def _admitted_global(module: str, name: str) -> Any:
    """The object a global reference in the file may resolve to, or None if it is not admitted."""
    if f"{module}.{name}" in _no_exec_globals:
        return _no_exec_globals[f"{module}.{name}"]
    import collections
    import numpy as np
    import torch
    import torch._utils
    if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
        return _reconstruct_without_exec
    if module == "torch.storage" and name == "_load_from_bytes":
        return _load_storage_from_bytes
    if f"{module}.{name}" in _no_exec_plain_modules:
        return _plain_module_class(f"{module}.{name}")
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(np, "_core", getattr(np, "core", None)).multiarray.__dict__[name]
    admitted = {
        ("dnnlib.util", "EasyDict"): dnnlib.EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): __import__("_codecs").encode,  # How protocol-2 pickles spell bytes.
    }
    if (module, name) in admitted:
        return admitted[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


# EpiGRAF's release is the package `src` (src.dnnlib, src.torch_utils, src.training): its pickles name the
# globals of our dnnlib and torch_utils (EasyDict, _reconstruct_persistent_obj) with that prefix.
_PACKAGE_ALIASES = (("src.torch_utils", "torch_utils"), ("src.dnnlib", "dnnlib"))


class _NoExecUnpickler(pickle.Unpickler):
    def __init__(self, file, stand_ins):
        super().__init__(file)
        self.stand_ins = stand_ins
        self.omegaconf_seen = False

    def find_class(self, module, name):
        # Protocol-2 pickles use Python 2 names ('__builtin__.set'); pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        for official, ours in _PACKAGE_ALIASES:
            if module == official or module.startswith(official + "."):
                module = ours + module[len(official):]
        obj = self.stand_ins.get(f"{module}.{name}") or _admitted_global(module, name) or self._omegaconf_global(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"The file refers to '{module}.{name}', which the no-exec loader does not admit; {_TRUST_HINT}.")
        return obj

    def _omegaconf_global(self, module, name):
        """Inert stand-ins for the OmegaConf classes of a pickled config, and the types its metadata names."""
        if f"{module}.{name}" in _OMEGACONF_KINDS:
            self.omegaconf_seen = True
            return _omegaconf_class(f"{module}.{name}")
        if self.omegaconf_seen and f"{module}.{name}" in _OMEGACONF_TYPE_NAMES:
            return _OmegaConfTypeName(f"{module}.{name}")
        if self.omegaconf_seen and (module, name) == ("collections", "defaultdict"):
            return _omegaconf_resolver_cache
        return None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"The file uses persistent ids, which the no-exec loader does not admit; {_TRUST_HINT}.")


class _StandInUnpickler(pickle.Unpickler):
    """A plain (code-executing) unpickler that resolves some global names to stand-in classes."""

    def __init__(self, file, stand_ins):
        super().__init__(file)
        self.stand_ins = stand_ins

    def find_class(self, module, name):
        return self.stand_ins.get(f"{module}.{name}") or super().find_class(module, name)


def load(file, trust_code: bool = False, stand_ins: Optional[Dict[str, type]] = None) -> Any:
    """Unpickle a network snapshot from a binary file object or a path.

    trust_code=False (default): execute nothing from the file; persistent objects are rebuilt from
    registered classes (see register_no_exec_module) and anything else that would need code from the
    file raises UnsafePickleError. trust_code=True: plain unpickling, which executes the embedded
    source exactly like the official releases do.

    stand_ins maps dotted global names found in the file to classes of ours that replace them in
    either mode (e.g. 'dnnlib.tflib.network.Network' for TensorFlow pickles, so that TensorFlow is
    never imported); such a class must be safe to create with __new__ and fill with __setstate__.
    """
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
        with open(file, "rb") as f:
            return load(f, trust_code=trust_code, stand_ins=stand_ins)
    stand_ins = dict(stand_ins or {})
    if trust_code:
        return _StandInUnpickler(file, stand_ins).load()
    return _materialize(_NoExecUnpickler(file, stand_ins).load(), memo={})
