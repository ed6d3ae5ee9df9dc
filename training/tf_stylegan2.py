"""Conversion of StyleGAN2 / StyleGAN2-ADA TensorFlow network pickles into our StyleGAN2 networks.

A TensorFlow pickle is a pickled tuple `(G, D, Gs)` of `dnnlib.tflib.network.Network` objects. Loading
it through `torch_utils.persistence.load(f, stand_ins=STAND_INS)` turns each of them into a
`TFNetworkStub`, a plain dict of its pickled state (constructor kwargs, sub-networks, variables as
numpy arrays), without importing TensorFlow or running anything from the file. The converters then
build `networks_stylegan2.Generator` / `Discriminator` from the recorded kwargs and fill every
parameter and buffer from the TensorFlow variable that holds it, changing the layout where the
frameworks differ:

- convolution weights are [kh, kw, in, out] in TF and [out, in, kh, kw] here;
- dense weights are [in, out] in TF and [out, in] here;
- TF stores the modulation bias without its +1 (ours is initialised to 1 and stores it);
- TF runs an up-sampling convolution as a cross-correlation of the zero-stuffed input with the stored
  kernel, ours as a transposed convolution (a true convolution), so those kernels are flipped in space;
- the constant input and the noise images carry leading singleton axes in TF.

It is written to agree with the official converter (`legacy.py` of the official StyleGAN3 repository).
"""

import re

import numpy as np
import torch

import dnnlib
from training import networks_stylegan2

# ----------------------------------------------------------------------------------------------


class TFConversionError(ValueError):
    """A TensorFlow pickle that cannot be converted; the message is one sentence naming the problem."""


class TFNetworkStub(dnnlib.EasyDict):
    """What a pickled `dnnlib.tflib.network.Network` becomes: its state, held as dict items.

    The unpickler creates it with `__new__` and fills it with `__setstate__`; nothing else runs. The data
    lives in the items (not in attributes) because the no-exec loader rebuilds dict subclasses as
    `type(obj)()` plus item assignment.
    """

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError(f'A TensorFlow network in the pickle has a {type(state).__name__} state, not a dict.')
        self.clear()
        self.update(state)


STAND_INS = {'dnnlib.tflib.network.Network': TFNetworkStub}


def is_tf_pickle(data):
    """True for what a StyleGAN2 TensorFlow pickle loads as: a tuple (G, D, Gs) of TFNetworkStub."""
    return isinstance(data, tuple) and len(data) == 3 and all(isinstance(net, TFNetworkStub) for net in data)

# ----------------------------------------------------------------------------------------------
# Reading the stubs.


def _net_name(tf_net, default):
    name = tf_net.get('name') if isinstance(tf_net, dict) else None
    return name if isinstance(name, str) and name else default


def _check_network(tf_net, what):
    if not isinstance(tf_net, TFNetworkStub):
        raise TFConversionError(f'TensorFlow {what} is a {type(tf_net).__name__}, not a pickled dnnlib.tflib network.')
    version = tf_net.get('version')
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 4:
        raise TFConversionError(
            f"TensorFlow network '{_net_name(tf_net, what)}' has pickle format version {version!r}; only version 4 "
            f"or newer (StyleGAN2 and StyleGAN2-ADA) can be converted.")


def _collect_variables(tf_net, what, prefix=''):
    """{name: numpy array} of a network and, under '<component>/<name>', of its components (recursively)."""
    _check_network(tf_net, what)
    variables = {}
    for item in tf_net.get('variables') or []:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise TFConversionError(f"TensorFlow network '{_net_name(tf_net, what)}' has a malformed variable list.")
        variables[prefix + item[0]] = item[1]
    for component_name, component in (tf_net.get('components') or {}).items():
        variables.update(_collect_variables(component, f"component '{component_name}'", f'{prefix}{component_name}/'))
    return variables


class _StaticKwargs:
    """The constructor kwargs of a TF network, read one by one; leftovers are reported as unsupported."""

    def __init__(self, tf_net, what):
        self.what = what
        kwargs = tf_net.get('static_kwargs') or {}
        if not isinstance(kwargs, dict):
            raise TFConversionError(f'TensorFlow {what} has malformed constructor arguments (static_kwargs).')
        self.kwargs = dict(kwargs)
        self.used = set()

    def __call__(self, name, default=None, none=None):
        """The value of `name` (`default` when absent); a None value reads as `none`."""
        self.used.add(name)
        value = self.kwargs.get(name, default)
        return none if value is None else value

    def ignore(self, *names):
        self.used.update(names)

    def require_standard_channels(self):
        # Configs A-D of the StyleGAN2 paper change the channel rule; our networks implement config E/F's.
        fmap_min = self('fmap_min', 1)
        fmap_decay = self('fmap_decay', 1.0)
        if fmap_min != 1 or fmap_decay != 1.0:
            raise TFConversionError(
                f'TensorFlow {self.what} uses fmap_min={fmap_min!r} and fmap_decay={fmap_decay!r}, the channel rule '
                f'of StyleGAN2 configs A-D, which are not supported (only fmap_min=1 and fmap_decay=1.0).')

    def check_all_used(self):
        unknown = sorted(set(self.kwargs) - self.used, key=str)
        if unknown:
            raise TFConversionError(
                f'TensorFlow {self.what} has the constructor argument {unknown[0]!r}, which the StyleGAN2 converter '
                f'does not know, so the network cannot be converted faithfully.')

# ----------------------------------------------------------------------------------------------
# Copying variables into parameters.

# Layout changes, each with the TF shape it expects for a given shape of ours.
_LAYOUTS = {
    'same':     (lambda v: v,                                   lambda s: s),
    'dense':    (lambda v: v.T,                                 lambda s: s[::-1]),
    'conv':     (lambda v: v.transpose(3, 2, 0, 1),             lambda s: (s[2], s[3], s[1], s[0])),
    'conv_up':  (lambda v: v[::-1, ::-1].transpose(3, 2, 0, 1), lambda s: (s[2], s[3], s[1], s[0])),
    'mod_bias': (lambda v: v + 1,                               lambda s: s),
    'const':    (lambda v: v[0],                                lambda s: (1,) + s),
    'noise':    (lambda v: v[0, 0],                             lambda s: (1, 1) + s),
}


def _fill_module(module, variables, rules, what):
    """Set every parameter and buffer of `module` from `variables` (TF name -> array).

    `rules` is a list of (regex over our tensor name, function(match) -> (TF name, layout) or None); None
    keeps the constructed value (used for the fixed resampling filters).
    """
    tensors = dict(list(module.named_parameters()) + list(module.named_buffers()))
    with torch.no_grad():
        for name, tensor in tensors.items():
            source = None
            for pattern, rule in rules:
                match = re.fullmatch(pattern, name)
                if match:
                    source = rule(match)
                    break
            else:
                raise TFConversionError(f"The converted {what} has a tensor '{name}' no TensorFlow variable maps to.")
            if source is None:
                continue
            tf_name, layout = source
            if tf_name not in variables:
                raise TFConversionError(f"TensorFlow {what} has no variable '{tf_name}', which '{name}' needs.")
            value = np.asarray(variables[tf_name])
            convert, tf_shape = _LAYOUTS[layout]
            expected = tuple(tf_shape(tuple(tensor.shape)))
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                raise TFConversionError(f"TensorFlow variable '{tf_name}' holds {value.dtype} data, not numbers.")
            if value.shape != expected:
                raise TFConversionError(
                    f"TensorFlow variable '{tf_name}' has shape {list(value.shape)} but '{name}' of the converted "
                    f"{what} needs shape {list(expected)} (in TensorFlow layout).")
            tensor.copy_(torch.from_numpy(np.array(convert(value), dtype=np.float32)))


def _build(cls, **kwargs):
    # Constructors draw random initial weights that are overwritten anyway; leave the caller's
    # random streams as they were.
    with torch.random.fork_rng(devices=[]):
        return cls(**kwargs)

# ----------------------------------------------------------------------------------------------
# Generator.


def _synthesis_layer_rules():
    def layer(match):
        res, conv, field = int(match.group(1)), match.group(2), match.group(3)
        if res == 4:
            tf_layer, noise_idx, up = 'synthesis/4x4/Conv', 0, False
        elif conv == 'conv0':
            tf_layer, noise_idx, up = f'synthesis/{res}x{res}/Conv0_up', 2 * int(np.log2(res)) - 5, True
        else:
            tf_layer, noise_idx, up = f'synthesis/{res}x{res}/Conv1', 2 * int(np.log2(res)) - 4, False
        return {
            'weight':           (f'{tf_layer}/weight', 'conv_up' if up else 'conv'),
            'bias':             (f'{tf_layer}/bias', 'same'),
            'noise_strength':   (f'{tf_layer}/noise_strength', 'same'),
            'noise_const':      (f'synthesis/noise{noise_idx}', 'noise'),
            'affine.weight':    (f'{tf_layer}/mod_weight', 'dense'),
            'affine.bias':      (f'{tf_layer}/mod_bias', 'mod_bias'),
        }[field]

    def torgb(match):
        res, field = int(match.group(1)), match.group(2)
        tf_layer = f'synthesis/{res}x{res}/ToRGB'
        return {
            'weight':           (f'{tf_layer}/weight', 'conv'),
            'bias':             (f'{tf_layer}/bias', 'same'),
            'affine.weight':    (f'{tf_layer}/mod_weight', 'dense'),
            'affine.bias':      (f'{tf_layer}/mod_bias', 'mod_bias'),
        }[field]

    return [
        (r'.*resample_filter', lambda m: None),
        (r'mapping\.w_avg', lambda m: ('dlatent_avg', 'same')),
        (r'mapping\.embed\.(weight|bias)',
            lambda m: (f'mapping/LabelEmbed/{m.group(1)}', 'dense' if m.group(1) == 'weight' else 'same')),
        (r'mapping\.fc(\d+)\.(weight|bias)',
            lambda m: (f'mapping/Dense{m.group(1)}/{m.group(2)}', 'dense' if m.group(2) == 'weight' else 'same')),
        (r'synthesis\.b4\.const', lambda m: ('synthesis/4x4/Const/const', 'const')),
        (r'synthesis\.b(\d+)\.(conv[01])\.(weight|bias|noise_strength|noise_const|affine\.weight|affine\.bias)', layer),
        (r'synthesis\.b(\d+)\.torgb\.(weight|bias|affine\.weight|affine\.bias)', torgb),
        (r'synthesis\.b(\d+)\.skip\.weight', lambda m: (f'synthesis/{m.group(1)}x{m.group(1)}/Skip/weight', 'conv_up')),
    ]


_LOD_TORGB = r'synthesis/ToRGB_lod(\d+)/(.*)'


def _rename_lod_torgb(variables, img_resolution):
    """Older 'orig'-architecture pickles name their ToRGB layers by level of detail rather than resolution."""
    renamed = {}
    for name, value in variables.items():
        match = re.fullmatch(_LOD_TORGB, name)
        if match:
            res = img_resolution // 2 ** int(match.group(1))
            name = f'synthesis/{res}x{res}/ToRGB/{match.group(2)}'
        renamed.setdefault(name, value)
    return renamed


def convert_tf_generator(tf_G):
    """networks_stylegan2.Generator (eval mode, no gradients) with the weights of a TF StyleGAN2 generator."""
    what = f"generator '{_net_name(tf_G, 'G')}'"
    variables = _collect_variables(tf_G, 'generator')
    kwarg = _StaticKwargs(tf_G, what)
    kwargs = dict(
        z_dim           = kwarg('latent_size', 512),
        c_dim           = kwarg('label_size', 0),
        w_dim           = kwarg('dlatent_size', 512),
        img_resolution  = kwarg('resolution', 1024),
        img_channels    = kwarg('num_channels', 3),
        mapping_kwargs  = dict(
            num_layers      = kwarg('mapping_layers', 8),
            embed_features  = kwarg('label_fmaps', None),
            layer_features  = kwarg('mapping_fmaps', None),
            activation      = kwarg('mapping_nonlinearity', 'lrelu'),
            lr_multiplier   = kwarg('mapping_lrmul', 0.01),
            w_avg_beta      = kwarg('w_avg_beta', 0.995, none=1),
        ),
        synthesis_kwargs = dict(
            channel_base    = kwarg('fmap_base', 16384) * 2,
            channel_max     = kwarg('fmap_max', 512),
            num_fp16_res    = kwarg('num_fp16_res', 0),
            conv_clamp      = kwarg('conv_clamp', None),
            architecture    = kwarg('architecture', 'skip'),
            resample_filter = kwarg('resample_kernel', [1, 3, 3, 1]),
            use_noise       = kwarg('use_noise', True),
            activation      = kwarg('nonlinearity', 'lrelu'),
        ),
    )
    kwarg.require_standard_channels()
    kwarg.ignore('truncation_psi', 'truncation_cutoff', 'style_mixing_prob', 'structure', 'conditioning',
                 'fused_modconv')
    kwarg.check_all_used()
    if any(re.fullmatch(_LOD_TORGB, name) for name in variables):
        # Only 'orig' names its ToRGB layers by level of detail. (The official converter meant to set
        # this too, but stored it where the generator never reads it.)
        kwargs['synthesis_kwargs']['architecture'] = 'orig'

    G = _build_checked(networks_stylegan2.Generator, kwargs, what)
    _fill_module(G, _rename_lod_torgb(variables, G.img_resolution), _synthesis_layer_rules(), what)
    return G.eval().requires_grad_(False)

# ----------------------------------------------------------------------------------------------
# Discriminator.


def _discriminator_rules():
    def weight_layout(field, conv=True):
        return ('conv' if conv else 'dense') if field == 'weight' else 'same'

    block_layers = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip'}
    return [
        (r'.*resample_filter', lambda m: None),
        (r'b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)',
            lambda m: (f'{m.group(1)}x{m.group(1)}/{block_layers[m.group(2)]}/{m.group(3)}',
                       weight_layout(m.group(3)))),
        (r'mapping\.embed\.(weight|bias)', lambda m: (f'LabelEmbed/{m.group(1)}', weight_layout(m.group(1), False))),
        (r'mapping\.fc(\d+)\.(weight|bias)',
            lambda m: (f'Mapping{m.group(1)}/{m.group(2)}', weight_layout(m.group(2), False))),
        (r'b4\.conv\.(weight|bias)', lambda m: (f'4x4/Conv/{m.group(1)}', weight_layout(m.group(1)))),
        (r'b4\.fc\.(weight|bias)', lambda m: (f'4x4/Dense0/{m.group(1)}', weight_layout(m.group(1), False))),
        (r'b4\.out\.(weight|bias)', lambda m: (f'Output/{m.group(1)}', weight_layout(m.group(1), False))),
    ]


def convert_tf_discriminator(tf_D):
    """networks_stylegan2.Discriminator (eval mode, no gradients) with the weights of a TF StyleGAN2 discriminator."""
    what = f"discriminator '{_net_name(tf_D, 'D')}'"
    variables = _collect_variables(tf_D, 'discriminator')
    kwarg = _StaticKwargs(tf_D, what)
    kwargs = dict(
        c_dim           = kwarg('label_size', 0),
        img_resolution  = kwarg('resolution', 1024),
        img_channels    = kwarg('num_channels', 3),
        architecture    = kwarg('architecture', 'resnet'),
        channel_base    = kwarg('fmap_base', 16384) * 2,
        channel_max     = kwarg('fmap_max', 512),
        num_fp16_res    = kwarg('num_fp16_res', 0),
        conv_clamp      = kwarg('conv_clamp', None),
        cmap_dim        = kwarg('mapping_fmaps', None),
        block_kwargs = dict(
            activation      = kwarg('nonlinearity', 'lrelu'),
            resample_filter = kwarg('resample_kernel', [1, 3, 3, 1]),
            freeze_layers   = kwarg('freeze_layers', 0),
        ),
        mapping_kwargs = dict(
            num_layers      = kwarg('mapping_layers', 0),
            embed_features  = kwarg('mapping_fmaps', None),
            layer_features  = kwarg('mapping_fmaps', None),
            activation      = kwarg('nonlinearity', 'lrelu'),
            lr_multiplier   = kwarg('mapping_lrmul', 0.1),
        ),
        epilogue_kwargs = dict(
            mbstd_group_size    = kwarg('mbstd_group_size', None),
            mbstd_num_channels  = kwarg('mbstd_num_features', 1),
            activation          = kwarg('nonlinearity', 'lrelu'),
        ),
    )
    kwarg.require_standard_channels()
    kwarg.ignore('structure', 'conditioning')
    kwarg.check_all_used()

    D = _build_checked(networks_stylegan2.Discriminator, kwargs, what)
    _fill_module(D, variables, _discriminator_rules(), what)
    return D.eval().requires_grad_(False)

# ----------------------------------------------------------------------------------------------


def _build_checked(cls, kwargs, what):
    try:
        return _build(cls, **kwargs)
    except (ValueError, TypeError, KeyError, AssertionError, RuntimeError) as err:
        detail = str(err).rstrip('.') or type(err).__name__
        raise TFConversionError(
            f'TensorFlow {what} has constructor arguments our {cls.__name__} rejects ({detail}).') from None


def convert_tf_pickle(data):
    """dict(G, D, G_ema) converted from a loaded TensorFlow pickle (G, D, Gs)."""
    if not is_tf_pickle(data):
        raise TFConversionError('The data is not a StyleGAN2 TensorFlow pickle (a tuple of three networks G, D, Gs).')
    tf_G, tf_D, tf_Gs = data
    return dict(G=convert_tf_generator(tf_G), D=convert_tf_discriminator(tf_D), G_ema=convert_tf_generator(tf_Gs))

# ----------------------------------------------------------------------------------------------
