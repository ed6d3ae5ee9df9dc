"""What a generator declares about itself, read in one place by the scripts, the metrics and resume.

The code around a network does not guess from parameter names or from `c_dim` (a 25-class model is
not a camera model); it reads what the network declares. A generator declares, as plain attributes
(so its pickled source needs nothing beyond `torch_utils` and `dnnlib` to import):

- `label_kind`: what its label `c` is: 'none' (c_dim == 0), 'class' (one-hot classes) or 'camera'
  (the 25-float camera label of `training.cameras`); `torch_utils.misc.label_kind` checks it.
- `synthesis_options`: what `G.synthesis(ws, ...)` accepts beyond `ws`, from OPTIONS below.
- `output_key`: None when `G(...)` and `G.synthesis(...)` return the image tensor; else the key of
  the image in the dict they return (EG3D's `{'image', 'image_raw', 'image_depth'}` -> 'image');
- `image_modes`: the keys of that dict a user may ask for (gen_images.py --image-mode); default
  ('image',). A key ending in '_depth' holds depth, not colour;
- `mode_options`: {mode: synthesis keywords} for outputs the network computes only on request (GRAM:
  {'image_depth': {'return_depth': True}}, whereupon it returns a dict with 'image' and the mode);
  `mode_kwargs` collects them;
- `sample_density(ws, points, **block_kwargs)` (optional method) with `density_box` (the side of the
  cube about the origin that holds the field) and optionally `density_level` (the default iso-level):
  the density [N, M, 1] at world points [N, M, 3] of the labels' world, for gen_images.py --shapes
  (EG3D's `sample_mixed` with its `rendering_kwargs['box_warp']` serves otherwise);
- `state_attributes`: names of plain (non-tensor) attributes that are part of the network's state:
  the no-exec loader restores them and the training loop copies them from G to G_ema after every
  step (EG3D: the scheduled neural rendering resolution); default none;
- `resume_widening(source_G)` (optional method): how `--resume` copies tensors of a source network
  whose shapes differ from this one's (see `resume_widening` below).

Networks that declare nothing (foreign code run with trust_code=True) get what their signatures
show: a synthesis that takes the label `c` renders a camera; keywords it names, or any keyword when
it has **kwargs, are accepted; an image tensor is returned unless a dict with 'image' comes back.
"""

import inspect

import torch

# Keywords of G.synthesis that scripts and metrics pass when the network accepts them.
OPTIONS = {
    'camera': 'c=[N, 25] camera labels: the camera is rendered',
    'transform': 'a user transform of the input grid, in G.synthesis.input.transform (StyleGAN3)',
    'scale': 'scale=s renders at s times img_resolution',
    'size': 'size=(H, W) renders an H x W view at the pixel pitch of the scale (coordinate-based generators)',
    'view': 'translate=(x, y) image sizes and zoom=z move and magnify the content (coordinate-based generators)',
    'noise_mode': "noise_mode='random'|'const'|'none'",
    'force_fp32': 'force_fp32=True runs fp16 layers in fp32',
    'render': 'render options of volume renderers (rendering_kwargs)',
    'resolution': 'resolution=R renders R x R pixels, one ray each (volume renderers such as GRAM and EpiGRAF)',
    'ray_step_multiplier': 'ray_step_multiplier=K renders with K times the samples per ray it was trained with (EpiGRAF)',
}


def _synthesis_parameters(G):
    try:
        return inspect.signature(getattr(G.synthesis, 'forward', G.synthesis)).parameters
    except (TypeError, ValueError, AttributeError):
        return {}


def label_kind(G):
    """'none', 'class' or 'camera': what the label `c` of G is."""
    declared = getattr(G, 'label_kind', None)
    if declared is not None:
        return declared
    if 'c' in _synthesis_parameters(G):
        return 'camera'
    return 'class' if getattr(G, 'c_dim', 0) else 'none'


def synthesis_options(G):
    """The frozenset of OPTIONS that G.synthesis accepts."""
    declared = getattr(G, 'synthesis_options', None)
    if declared is not None:
        return frozenset(declared)
    parameters = _synthesis_parameters(G)
    any_keyword = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    options = {name for name in ('scale', 'noise_mode', 'force_fp32') if name in parameters or (any_keyword and name != 'scale')}
    if 'c' in parameters:
        options.add('camera')
    if isinstance(getattr(getattr(getattr(G, 'synthesis', None), 'input', None), 'transform', None), torch.Tensor):
        options.add('transform')
    return frozenset(options)


def accepts(G, option):
    """True when G.synthesis accepts `option` (a name of OPTIONS)."""
    assert option in OPTIONS, option
    return option in synthesis_options(G)


def image_of(G, output):
    """The image tensor in what G or G.synthesis returned."""
    key = getattr(G, 'output_key', None)
    if key is None and isinstance(output, dict) and 'image' in output:
        key = 'image'
    return output if key is None else output[key]


def image_modes(G):
    """The outputs a user may ask for (--image-mode): ('image',) unless G declares more."""
    return tuple(getattr(G, 'image_modes', ('image',)))


def mode_kwargs(G, modes):
    """The keywords G.synthesis needs so that its output holds every one of `modes` (see mode_options)."""
    declared = getattr(G, 'mode_options', None) or {}
    kwargs = {}
    for mode in modes:
        kwargs.update(declared.get(mode, {}))
    return kwargs


def output_of(G, output, mode='image'):
    """The `mode` output (a name of image_modes(G)) in what G or G.synthesis returned."""
    return image_of(G, output) if mode == 'image' else output[mode]


def state_attributes(G):
    """Names of G's plain state attributes (G_ema copies them from G after every training step)."""
    return tuple(getattr(G, 'state_attributes', ()))


def image_outputs(G, output):
    """{suffix: tensor} of what G returned: '' for the image, and for a dict output every other
    'image_<name>' entry under '_<name>' (EG3D: '_raw', '_depth'), for snapshot grids."""
    key = getattr(G, 'output_key', None)
    if key is None and isinstance(output, dict) and 'image' in output:
        key = 'image'
    if key is None:
        return {'': output}
    outputs = {'': output[key]}
    for name, value in output.items():
        if name != key and name.startswith('image_') and isinstance(value, torch.Tensor) and value.ndim == 4:
            outputs['_' + name.removeprefix('image_')] = value
    return outputs


def resume_widening(G, source_G):
    """None, or `widen(tensor_name, src_shape, dst_shape) -> region or None` for a --resume into G from source_G.

    A network that can start from another family's weights declares `resume_widening(source_G)` (Ray
    Conditioning from 2D StyleGAN: tensors widened by the ray channels get the 2D tensor in their
    leading part). With a widening, a source tensor of another shape goes into `region` of the
    destination tensor, or, where widen() gives None, the destination keeps its initialisation.
    Without one, every shared name must agree in shape.
    """
    declare = getattr(G, 'resume_widening', None)
    return declare(source_G) if callable(declare) else None
