"""Official GRAM checkpoints (microsoft/GRAM `pretrained_models/<config>/`) read as our network snapshots.

A GRAM release folder holds `generator.pth`, a `torch.save` of `generator.state_dict()`, and
`ema.pth`, a `torch.save` of the `torch_ema.ExponentialMovingAverage` object of training (decay
0.999): its `shadow_params` are one tensor per generator parameter, in `G.parameters()` order.
GRAM's render scripts load generator.pth and then copy the shadow parameters into the generator
(`ema.copy_to(generator.parameters())`), so the EMA weights are the ones users see; they become our
G_ema. `ema2.pth` (decay 0.9999) is not used for rendering and is not read.

Everything is read with `torch.load(weights_only=True)`: tensors and containers only, plus, for
ema.pth, a stand-in for torch_ema's class (torch_ema need not be installed and nothing from the file
runs). The files do not record GRAM's config; it is identified from the tensor shapes (see
`identify_config`). GRAM releases no discriminator: the snapshot's D is a freshly initialised
GramDiscriminator of the config (for `train.py --resume`, which then fine-tunes it from scratch).
"""

import copy
import os
import pickle
import re
import zipfile
from typing import List, NamedTuple, Optional

import torch

from training import networks_gram
from training.snapshots import NetworkPickleError

GENERATOR_FILE = 'generator.pth'
EMA_FILE = 'ema.pth'
# The tensor whose shape tells the official configs apart (hidden_dim_sample: FFHQ 128, CATS 64, CARLA 256);
# CARLA's field also differs in normalize and the renderer, which no shape shows.
IDENTIFYING_TENSOR = 'representation.sample_network.network.0.weight'
D_SEED = 0  # the fresh discriminator is the same on every load


class GramCheckpointError(NetworkPickleError):
    """A file or folder that is not a usable GRAM checkpoint; the message is one sentence naming it."""


class EmaState(NamedTuple):
    shadow_params: List[torch.Tensor]
    decay: Optional[float]
    num_updates: Optional[int]


class ExponentialMovingAverage:
    """A stand-in for `torch_ema.ema.ExponentialMovingAverage`, the one class ema.pth may name.

    The weights-only unpickler creates it with __new__ and fills it with __setstate__: its attributes
    are kept as plain data and no method of torch_ema exists or runs.
    """
    __module__ = 'torch_ema.ema'
    __qualname__ = 'ExponentialMovingAverage'

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f'torch_ema state is a {type(state).__name__}, not a dict')
        self.__dict__.update(state)


def _weights_only_load(path, what):
    """torch.load(path, weights_only=True); one sentence on any failure (torch's own is paragraphs of advice)."""
    try:
        with torch.serialization.safe_globals([ExponentialMovingAverage]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise GramCheckpointError(f'Refusing to read {path} as {what}: {_unpickler_reason(error)} (nothing from '
                                  f'the file was run).') from None
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        message = ' '.join(str(error).split())[:200].rstrip('.')
        raise GramCheckpointError(f'Cannot read {path} ({type(error).__name__}: {message}); it is damaged or not '
                                  f'{what}.') from None


def _unpickler_reason(error):
    """The short reason in the weights-only unpickler's long message."""
    text = ' '.join(str(error).split())
    match = re.search(r'GLOBAL ([\w.]+)', text)
    if match:
        return f'it names the global {match.group(1)}, which a file of tensors only never needs'
    match = re.search(r'WeightsUnpickler error: (.*?)(?:\. |$)', text)
    return (match.group(1) if match else text[:200]).rstrip('.')


# ----------------------------------------------------------------------------------------------
# generator.pth


def identify_config(state_dict, name='the checkpoint'):
    """The name of the official config (networks_gram.OFFICIAL_CONFIGS) whose generator has exactly these tensor shapes."""
    tensor = state_dict.get(IDENTIFYING_TENSOR)
    shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else None
    for config in networks_gram.OFFICIAL_CONFIGS:
        if shape == list(official_shapes(config).get(IDENTIFYING_TENSOR, [])):
            return config
    known = ', '.join(f'{config} {list(official_shapes(config)[IDENTIFYING_TENSOR])}'
                      for config in networks_gram.OFFICIAL_CONFIGS)
    found = 'missing' if shape is None else str(shape)
    raise GramCheckpointError(f'{name} matches no official GRAM config: its {IDENTIFYING_TENSOR} is {found}, '
                              f'while {known} are known.')


_SHAPES = {}


def official_shapes(config):
    """{tensor name: shape} of the official generator of `config` (built once, on the CPU)."""
    if config not in _SHAPES:
        with torch.random.fork_rng(devices=[]):
            G = build_generator(config)
        _SHAPES[config] = {key: tuple(value.shape) for key, value in G.state_dict().items()}
    return _SHAPES[config]


def build_generator(config):
    """A freshly initialised GramGenerator of an official config, with GRAM's cameras and ray grid."""
    preset = networks_gram.OFFICIAL_CONFIGS[config]
    return networks_gram.GramGenerator(**copy.deepcopy(preset['generator']), **preset['camera'], legacy_rays=True)


def read_state_dict(path):
    """The {name: tensor} of a generator.pth, read weights-only."""
    state = _weights_only_load(path, 'a GRAM generator.pth (a state dict)')
    if isinstance(state, ExponentialMovingAverage):
        raise GramCheckpointError(f'{path} is a GRAM EMA file (torch_ema), which holds no generator config; pass the '
                                  f'{GENERATOR_FILE} beside it, or their folder.')
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise GramCheckpointError(f'{path} is a torch.save file but neither a network pickle nor a GRAM generator.pth: '
                                  f'it holds a {type(state).__name__}, not a state dict of named tensors.')
    return state


def load_generator_pth(path):
    """(GramGenerator with the weights of `path`, config name), eval mode, no gradients."""
    state = read_state_dict(path)
    config = identify_config(state, name=path)
    expected = official_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f'{key} {list(state[key].shape)} (expected {list(expected[key])})' for key in expected
             if key in state and tuple(state[key].shape) != expected[key]]
    if missing or unexpected or wrong:
        parts = [f'{len(missing)} missing (e.g. {missing[0]})'] if missing else []
        parts += [f'{len(unexpected)} unexpected (e.g. {unexpected[0]})'] if unexpected else []
        parts += [f'{len(wrong)} of another shape (e.g. {wrong[0]})'] if wrong else []
        raise GramCheckpointError(f'{path} looks like GRAM {config} but its tensors do not match that config: '
                                  f'{"; ".join(parts)}.')
    with torch.random.fork_rng(devices=[]):  # the initial values are overwritten; leave the caller's RNG alone
        G = build_generator(config)
    G.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return G.eval().requires_grad_(False), config


# ----------------------------------------------------------------------------------------------
# ema.pth


def load_ema(path):
    """EmaState(shadow_params, decay, num_updates) of a pickled torch_ema ExponentialMovingAverage (ema.pth).

    Read weights-only with a stand-in class: torch_ema is not imported and nothing from the file runs;
    any other global in the file is refused.
    """
    ema = _weights_only_load(path, 'a GRAM ema.pth (a torch_ema ExponentialMovingAverage)')
    if not isinstance(ema, ExponentialMovingAverage):
        raise GramCheckpointError(f'{path} is not a GRAM ema.pth: it holds a {type(ema).__name__}, not a '
                                  f'torch_ema ExponentialMovingAverage.')
    shadow = ema.__dict__.get('shadow_params')
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(tensor, torch.Tensor) for tensor in shadow):
        raise GramCheckpointError(f'{path} is a torch_ema ExponentialMovingAverage without a list of shadow '
                                  f'parameter tensors, so it holds no EMA weights to use.')
    decay, num_updates = ema.__dict__.get('decay'), ema.__dict__.get('num_updates')
    return EmaState(list(shadow), None if decay is None else float(decay),
                    None if num_updates is None else int(num_updates))


def apply_ema(G, ema, name='ema.pth'):
    """A copy of G with the shadow parameters copied into its trainable parameters in order (ema.copy_to)."""
    G_ema = copy.deepcopy(G)
    params = list(G_ema.parameters())  # all of GramGenerator's parameters are trained in GRAM
    if len(ema.shadow_params) != len(params):
        raise GramCheckpointError(f'{name} holds {len(ema.shadow_params)} shadow parameters, but the generator has '
                                  f'{len(params)}; it belongs to another generator.')
    names = [key for key, _ in G_ema.named_parameters()]
    for index, (key, param, shadow) in enumerate(zip(names, params, ema.shadow_params)):
        if tuple(shadow.shape) != tuple(param.shape):
            raise GramCheckpointError(f'{name}: shadow parameter #{index} has shape {list(shadow.shape)}, but the '
                                      f'generator\'s {key} is {list(param.shape)}; it belongs to another generator.')
    with torch.no_grad():
        for param, shadow in zip(params, ema.shadow_params):
            param.copy_(shadow.to(param.dtype))
    return G_ema.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# The snapshot.


def checkpoint_paths(source):
    """(generator.pth path, ema.pth path or None) of a release folder or of a generator.pth path."""
    if os.path.isdir(source):
        generator = os.path.join(source, GENERATOR_FILE)
        if not os.path.isfile(generator):
            raise GramCheckpointError(f'The folder {source} holds no {GENERATOR_FILE}, so it is not a GRAM checkpoint.')
    else:
        generator = source
    ema = os.path.join(os.path.dirname(os.path.abspath(generator)), EMA_FILE)
    if os.path.abspath(ema) == os.path.abspath(generator):
        return generator, None
    return generator, (ema if os.path.isfile(ema) else None)


def is_torch_file(path):
    """True for a torch.save file: the zip format, or the legacy format (a pickle of the magic number first)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(16)
    except OSError:
        return False
    if head.startswith(b'PK\x03\x04') and zipfile.is_zipfile(path):
        return True
    # Legacy torch.save: protocol-2 pickle of the long 0x1950a86a20f9469cfc6c (LONG1 of 10 bytes).
    return head.startswith(b'\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19')


def claims(source):
    """Whether `source` (a local path) is for this reader: a folder with generator.pth, or a torch.save file."""
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, GENERATOR_FILE))
    return os.path.isfile(source) and is_torch_file(source)


def load_gram_checkpoint(source):
    """Our snapshot dict of a GRAM release: dict(G, D, G_ema, augment_pipe=None, training_set_kwargs=None).

    source: the release folder (generator.pth, optionally ema.pth), or a generator.pth path, whose
    sibling ema.pth is used when present. G holds the raw generator.pth weights and G_ema those with
    ema.pth's shadow parameters copied in (GRAM's rendering weights); without ema.pth G_ema equals G.
    GRAM releases no discriminator, so D is a freshly initialised GramDiscriminator of the config
    (seeded, the same on every load). Networks are on the CPU, in eval mode, without gradients.
    """
    generator_path, ema_path = checkpoint_paths(source)
    G, config = load_generator_pth(generator_path)
    G_ema = apply_ema(G, load_ema(ema_path), name=ema_path) if ema_path is not None else copy.deepcopy(G)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(D_SEED)
        D = networks_gram.GramDiscriminator(**networks_gram.OFFICIAL_CONFIGS[config]['discriminator'])
    return dict(G=G, D=D.eval().requires_grad_(False), G_ema=G_ema.eval().requires_grad_(False),
                augment_pipe=None, training_set_kwargs=None)
