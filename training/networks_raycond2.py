"""Ray Conditioning on the StyleGAN2 backbone (config raycond2).

The camera enters the synthesis network as a light field: a 6-channel Plücker map (direction d,
moment o x d) of the camera's rays, computed at the input resolution of each modulated convolution
and concatenated to its input. In block b4 the constant gets the 4x4 map before conv1; in every
later block b{res} the input gets the map at res/2 before the upsampling conv0, and conv0's output
the map at res before conv1. ToRGB is not conditioned. Each conditioned conv therefore has weights
[out, in + 6, k, k] and an affine with in + 6 outputs: the styles modulate the ray channels like the
features. The mapping network ignores the camera (no label embedding) but keeps the `mapping(z, c)`
signature; `c_dim` stays 25 so that the training loop draws camera labels and the discriminator is
conditioned on them. Everything else is the StyleGAN2 backbone of `networks_stylegan2`: its layers
are reused and only the modulated convs are swapped for ray-conditioned ones, so the parameter and
buffer names and shapes are those of the official release (`tests/data/spec/raycond_official_tensors.json`).

    G(z, c)                    = G.synthesis(G.mapping(z, c), c=c)
    G.synthesis(ws, c=c, ...)  c [N, 25] camera labels are required: they are what is rendered.

Ray field. By default the rays are physical pixel-centre rays (`cameras.get_rays`). The official
release computes a different, non-physical field (pixel units against normalised intrinsics, and a
transposed map: `cameras.legacy_raycond_rays`), and its published weights only give their published
images with that field. `legacy_rays=True` selects it.

How the flag is set when pickles are loaded:
- Our own pickles record `legacy_rays` in the Generator's `init_kwargs` whenever it was passed
  (training configs should always pass it); a pickle whose Generator was built without it gets the
  constructor default, physical rays, because the no-exec loader recognises our own module source
  and rebuilds it with our classes as they are.
- Official pickles embed the official `training/networks_raycond2.py`, whose Generator has no
  `legacy_rays` argument. That file is a modified copy of the StyleGAN2 module with its top-level
  names, which the name-based identification of `torch_utils.persistence` would take for StyleGAN2
  (and then fail on the widened tensors). Instead an import hook (`claim_official_sources`)
  recognises an official Ray Conditioning source (not ours, StyleGAN2 / StyleGAN3 class names, uses
  Plücker rays) by reading it, without running it, and registers for that exact source a no-exec
  rebuild whose Generator and SynthesisNetwork default to `legacy_rays=True`.
  The rebuilt Generator records `legacy_rays=True` in its `init_kwargs`, so it stays legacy when it is
  pickled again. The official synthesis blocks keep the release's ray function as an attribute, so
  the files refer to the global `training.plucker.plucker_embedding`: `training/plucker.py` is our
  implementation of it, admitted by the no-exec loader (imported below so that it registers). With
  `trust_code=True` the official source itself runs, with its own rays and our `training.plucker`.

Unlike networks_stylegan2/3 this module imports from `training` (the backbone and `cameras`), so
executing a pickle's embedded source (`trust_code=True`, plain `pickle.load`) needs this repository's
`training` package importable; the default no-exec loading does not execute anything.
"""

import ast
import functools
import hashlib

import torch

from torch_utils import persistence
from training import cameras
from training import capabilities
from training import networks_stylegan2
from training import plucker  # noqa: F401 (official pickles refer to training.plucker.plucker_embedding)

RAY_CHANNELS = 6  # Plücker coordinates: direction (3) and moment (3).

# ----------------------------------------------------------------------------------------------
# Shared with networks_raycond3.


def check_camera(c, batch_size, device):
    """The camera labels `c` as float32 [batch_size, 25] on `device`, or one clear error."""
    if c is None:
        raise TypeError('Ray-conditioned synthesis renders a camera: pass the [N, 25] camera labels, '
                        'G(z, c) or G.synthesis(ws, c=c).')
    c = torch.as_tensor(c)
    if c.ndim != 2 or c.shape[0] != batch_size or c.shape[1] != cameras.LABEL_DIM:
        raise ValueError(f'Ray-conditioned synthesis needs camera labels of shape [{batch_size}, {cameras.LABEL_DIM}] '
                         f'(one per w); got {list(c.shape)}.')
    return c.to(device=device, dtype=torch.float32)


def check_label_dim(c_dim):
    if c_dim != cameras.LABEL_DIM:
        raise ValueError(f'A ray-conditioned generator takes {cameras.LABEL_DIM}-float camera labels (c_dim='
                         f'{cameras.LABEL_DIM}), not c_dim={c_dim}; train it on a dataset with camera labels and --cond=1.')


def concat_rays(x, rays, key):
    """x ⊕ the ray map `rays[key]`, in x's dtype (the maps are computed once per forward, in float32)."""
    if rays is None:
        raise TypeError('This layer is ray-conditioned and needs the ray maps of the camera; call the '
                        'synthesis network with the camera, G.synthesis(ws, c=c).')
    return torch.cat([x, rays[key].to(x.dtype)], dim=1)


@functools.lru_cache(maxsize=32)
def _top_level_names(module_src):
    # Parsing only; nothing in the source runs.
    try:
        tree = ast.parse(module_src)
    except SyntaxError:
        return frozenset()
    return frozenset(node.name for node in tree.body if isinstance(node, (ast.ClassDef, ast.FunctionDef)))


def _stand_in(build, name, module_src, defaults):
    """A constructor named `name` for the no-exec loader: build(**defaults, **recorded arguments)."""
    def construct(*args, **kwargs):
        return build(*args, **{**defaults, **kwargs})
    construct.__name__ = construct.__qualname__ = name
    construct._orig_module_src = module_src  # What the loader matches the embedded source against.
    return construct


def claim_official_sources(key, required_names, our_marker, stand_ins, legacy_classes):
    """An import hook that lets the no-exec loader rebuild the official release's `key` module with legacy rays.

    A module source met while loading is the official one when it is not ours (it does not define
    `our_marker`), defines `required_names` and uses Plücker rays. For each such source, the hook
    registers stand-ins keyed on that exact source: `stand_ins` maps official class names to our
    classes, and those in `legacy_classes` are built with `legacy_rays=True` unless the file says
    otherwise. The hook never changes what it is given.
    """
    claimed = set()

    def hook(meta):
        src = meta.get('module_src')
        if not isinstance(src, str) or src in claimed or 'plucker' not in src.lower():
            return meta
        names = _top_level_names(src)
        if our_marker in names or not set(required_names) <= names:
            return meta
        digest = hashlib.sha1(src.encode('utf-8', 'surrogatepass')).hexdigest()[:12]
        persistence.register_no_exec_module(
            f'{key} (official release, source {digest})',
            [_stand_in(cls, name, src, dict(legacy_rays=True) if cls in legacy_classes else {})
             for name, cls in stand_ins.items()],
            signature=())  # Matched by the exact source only.
        claimed.add(src)
        return meta

    return hook

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(networks_stylegan2.SynthesisLayer):
    """StyleGAN2 modulated conv on its input ⊕ the ray map at the input resolution; `in_channels` counts features only."""

    def __init__(self, in_channels, out_channels, *args, **kwargs):
        super().__init__(in_channels + RAY_CHANNELS, out_channels, *args, **kwargs)
        self.feature_channels = in_channels

    @property
    def ray_key(self):
        return self.resolution // self.up  # The input resolution.

    def forward(self, x, w, rays=None, **layer_kwargs):
        return super().forward(concat_rays(x, rays, self.ray_key), w, **layer_kwargs)


def block_ray_maps(c, resolutions, legacy):
    """{res: [N, 6, res, res] Plücker map} for every resolution a conditioned conv reads."""
    with torch.no_grad():
        return {res: cameras.plucker_map(c, res, res, legacy=legacy) for res in resolutions}


@persistence.persistent_class
class SynthesisNetwork(networks_stylegan2.SynthesisNetwork):
    """StyleGAN2 synthesis whose modulated convs (not ToRGB) are ray-conditioned; forward(ws, c=...)."""

    def __init__(self,
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output image resolution.
        img_channels,           # Number of colour channels.
        legacy_rays = False,    # The official release's non-physical ray field (for its weights)?
        **kwargs,               # Arguments for networks_stylegan2.SynthesisNetwork.
    ):
        super().__init__(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **kwargs)
        self.legacy_rays = bool(legacy_rays)
        # The backbone built plain modulated convs; rebuild each, with the same arguments, ray-conditioned.
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            for name in ('conv0', 'conv1'):
                layer = getattr(block, name, None)
                if layer is not None:
                    setattr(block, name, SynthesisLayer(*layer.init_args, **layer.init_kwargs))

    def forward(self, ws, c=None, **block_kwargs):
        c = check_camera(c, ws.shape[0], ws.device)
        # Conv inputs are at every block resolution: b4.conv1 at 4, b{res}.conv0 at res/2, conv1 at res.
        rays = block_ray_maps(c, self.block_resolutions, self.legacy_rays)
        return super().forward(ws, rays=rays, **block_kwargs)

    def extra_repr(self):
        return f'{super().extra_repr()} legacy_rays={self.legacy_rays}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """Ray-conditioned StyleGAN2 generator: G(z, c) = synthesis(mapping(z), c=c), c the camera."""

    # Capabilities (read by training.capabilities).
    label_kind = 'camera'
    synthesis_options = ('camera', 'noise_mode', 'force_fp32')
    output_key = None

    def __init__(self,
        z_dim,                  # Input latent (Z) dimensionality.
        c_dim,                  # Camera label dimensionality: 25.
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output resolution.
        img_channels,           # Number of output colour channels.
        mapping_kwargs  = {},   # Arguments for networks_stylegan2.MappingNetwork.
        legacy_rays     = False,# The official release's non-physical ray field (for its weights)?
        label_kind      = 'camera', # Always a camera (training configs pass it for every camera-labelled dataset).
        **synthesis_kwargs,     # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        synthesis_kwargs = {**synthesis_kwargs.pop('synthesis_kwargs', {}), **synthesis_kwargs}
        build_generator(self, SynthesisNetwork, networks_stylegan2.MappingNetwork, z_dim, c_dim, w_dim, img_resolution,
                        img_channels, mapping_kwargs, legacy_rays, label_kind, synthesis_kwargs)

    @property
    def legacy_rays(self):
        return self.synthesis.legacy_rays

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        return generator_forward(self, z, c, truncation_psi, truncation_cutoff, update_emas, synthesis_kwargs)

    def resume_widening(self, source_G):
        return widening_from_2d(source_G)


def build_generator(G, synthesis_class, mapping_class, z_dim, c_dim, w_dim, img_resolution, img_channels,
                    mapping_kwargs, legacy_rays, label_kind, synthesis_kwargs):
    """What every ray-conditioned Generator.__init__ does, on the backbone given by the two classes."""
    check_label_dim(c_dim)
    if label_kind != 'camera':
        raise ValueError(f'A ray-conditioned generator renders a camera: label_kind={label_kind!r} is not possible.')
    G.z_dim, G.c_dim, G.w_dim = z_dim, c_dim, w_dim
    G.img_resolution, G.img_channels = img_resolution, img_channels
    G.synthesis = synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                  legacy_rays=legacy_rays, **synthesis_kwargs)
    G.num_ws = G.synthesis.num_ws
    # The camera is rendered, not mapped: a mapping without a label embedding.
    G.mapping = mapping_class(z_dim=z_dim, c_dim=0, w_dim=w_dim, num_ws=G.num_ws, **mapping_kwargs)


def generator_forward(G, z, c, truncation_psi, truncation_cutoff, update_emas, synthesis_kwargs):
    ws = G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
    return G.synthesis(ws, c=c, update_emas=update_emas, **synthesis_kwargs)


def widening_from_2d(source_G):
    """Ray Conditioning starts from 2D StyleGAN weights (the official fine-tuning recipe): when the
    --resume source is not camera-conditioned, a tensor widened by the ray channels receives the 2D
    tensor in its leading part (affine outputs along dim 0, layer inputs along dim 1; the ray part
    keeps its initialisation), and other shape mismatches (the discriminator's label conditioning)
    keep their initialisation. From a camera-conditioned source, shapes must match."""
    if source_G is None or capabilities.label_kind(source_G) == 'camera':
        return None
    return _widened_region


def _widened_region(tensor_name, src_shape, dst_shape):
    """Where a 2D tensor goes inside its ray-widened counterpart, or None."""
    dim = 0 if '.affine.' in tensor_name else 1
    if len(src_shape) != len(dst_shape) or len(dst_shape) <= dim:
        return None
    expected = list(src_shape)
    expected[dim] += RAY_CHANNELS
    if expected != list(dst_shape):
        return None
    return (slice(None),) * dim + (slice(0, src_shape[dim]),)

# ----------------------------------------------------------------------------------------------

# Our own pickles: recognised by their exact source, or, for older versions of this file, by names
# that only this module defines.
persistence.register_no_exec_module('training.networks_raycond2', [SynthesisLayer, SynthesisNetwork, Generator],
                                    signature=['SynthesisLayer', 'SynthesisNetwork', 'Generator', 'block_ray_maps'])

# Official pickles: the official module defines the StyleGAN2 names; ours stand in, with legacy rays.
_SG2 = networks_stylegan2
persistence.import_hook(claim_official_sources(
    'training.networks_raycond2',
    required_names=['SynthesisBlock', 'SynthesisNetwork', 'Generator'],
    our_marker='block_ray_maps',
    stand_ins=dict(FullyConnectedLayer=_SG2.FullyConnectedLayer, Conv2dLayer=_SG2.Conv2dLayer,
                   MappingNetwork=_SG2.MappingNetwork, SynthesisLayer=_SG2.SynthesisLayer, ToRGBLayer=_SG2.ToRGBLayer,
                   SynthesisBlock=_SG2.SynthesisBlock, SynthesisNetwork=SynthesisNetwork, Generator=Generator,
                   DiscriminatorBlock=_SG2.DiscriminatorBlock, MinibatchStdLayer=_SG2.MinibatchStdLayer,
                   DiscriminatorEpilogue=_SG2.DiscriminatorEpilogue, Discriminator=_SG2.Discriminator),
    legacy_classes=[SynthesisNetwork, Generator]))

# ----------------------------------------------------------------------------------------------
