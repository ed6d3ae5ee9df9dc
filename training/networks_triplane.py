"""EG3D's tri-plane generator and dual discriminator (NVlabs/eg3d: eg3d/training/triplane.py,
superresolution.py, dual_discriminator.py), with the official class names, constructor arguments,
tensors and forward functions.

TriPlaneGenerator:
- `backbone`: a StyleGAN2 Generator (our training.networks_stylegan2) at 256x256 with 96 channels,
  read as 3 planes x 32 features; its mapping embeds the camera label c (times
  rendering_kwargs['c_scale'], or zeros when 'c_gen_conditioning_zero');
- `decoder`: OSGDecoder, the mean of the three plane features -> FC 32->64 (lr_mul) -> softplus ->
  FC 64->33: sigma = out[0] (raw), features = sigmoid(out[1:]) * 1.002 - 0.001; no view direction;
- `renderer` / `ray_sampler`: training.rendering (pixel-centre rays, stratified + importance samples,
  EG3D's ray marcher, the XY/XZ/ZX plane projection), run in chunks of rays;
- `superresolution`: SuperresolutionHybrid2X / 4X / 8X / 8XDC, named by
  rendering_kwargs['superresolution_module'] with the official class path
  ('training.superresolution.SuperresolutionHybrid8XDC'); it sees only the last w, repeated;
- `G(z, c)` and `G.synthesis(ws, c)` return the official dict {'image', 'image_raw', 'image_depth'}.
  As in EG3D, passing neural_rendering_resolution sets G.neural_rendering_resolution, and when the
  super-resolution needs no resize (2X at neural rendering resolution 64, 4X at 128) 'image_raw'
  includes the ToRGB of its first block (EG3D adds it in place to the raw image it returns; checked
  against the official code, and kept because the official D trained on it).

Deterministic rendering: rendering_kwargs['jitter'] = False (absent = True, as EG3D).

Our additions, all off by default so the official arguments build the official network:
- TriPlaneGenerator(triplane_resolution=256, triplane_channels=32): a smaller backbone for tiny
  models (tests, CPU experiments);
- the super-resolution classes accept any power-of-two img_resolution (the official ones assert one
  value: 128 for 2X, 256 for 4X, 512 for 8X and 8XDC, and then their input sizes are the official
  64, 128 and 128), the mapping's `w_dim` (official: 512 fixed) and `block_channels` (official:
  (128, 64), or (256, 128) for 8XDC);
- the ray chunk, rendering_kwargs['ray_chunk'] (default 2**15 rays per batch, 2**11 on the CPU).
Departures: DualDiscriminator adds its c noise to a copy of c (EG3D adds it in place, to the
caller's tensor); SuperresolutionHybridDeepfp32 (a 256x256 legacy class the official generator can no
longer build) is not provided.

Like networks_raycond2 this module imports from `training` (the StyleGAN2 layers and the renderer),
so executing a pickle's embedded source (`trust_code=True`, plain `pickle.load`) needs this
repository's `training` package importable; the default no-exec loading does not execute anything.
"""

import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training import networks_stylegan2 as sg2
from training.rendering import marching, rays
from training.rendering import renderer as rendering

# ----------------------------------------------------------------------------------------------
# Rendering modules (no tensors; official attribute names: G.renderer, G.ray_sampler, renderer.ray_marcher).


@persistence.persistent_class
class MipRayMarcher2(torch.nn.Module):
    """EG3D's ray marcher: (rgb, depth, weights) of samples along rays (training.rendering.marching)."""

    def forward(self, colors, densities, depths, rendering_options):
        return marching.march_rays_with_options(colors, densities, depths, rendering_options)


@persistence.persistent_class
class RaySampler(torch.nn.Module):
    """EG3D's ray sampler: (origins, directions) [N, resolution**2, 3] through the pixel centres."""

    def forward(self, cam2world_matrix, intrinsics, resolution):
        return rays.sample_rays(cam2world_matrix, intrinsics, resolution)


@persistence.persistent_class
class ImportanceRenderer(torch.nn.Module):
    """EG3D's renderer of tri-planes: a coarse pass, an importance pass, and the ray marcher."""

    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()

    def forward(self, planes, decoder, ray_origins, ray_directions, rendering_options):
        """(features [N, R, C] in [-1, 1], depth [N, R, 1], weight sum [N, R, 1])."""
        field = rendering.triplane_field(planes, decoder, rendering_options['box_warp'])
        chunk = (rendering_options['ray_chunk'] if 'ray_chunk' in rendering_options
                 else rendering.default_ray_chunk(ray_origins.device))  # smaller on the CPU (see the renderer)
        return rendering.render_rays(field, ray_origins, ray_directions, rendering_options, chunk=chunk)

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options):
        """{'rgb', 'sigma'} of the field at points [N, M, 3] (EG3D's run_model, density noise included)."""
        out = rendering.triplane_field(planes, decoder, options['box_warp'])(sample_coordinates, sample_directions)
        if options.get('density_noise', 0) > 0:
            out['sigma'] = out['sigma'] + torch.randn_like(out['sigma']) * options['density_noise']
        return out

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class OSGDecoder(torch.nn.Module):
    """Tri-plane features [N, 3, M, C] -> {'rgb': [N, M, out_dim], 'sigma': [N, M, 1]}; ignores directions."""

    def __init__(self, n_features, options):
        super().__init__()
        self.hidden_dim = 64
        lr_mul = options['decoder_lr_mul']
        self.net = torch.nn.Sequential(
            sg2.FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr_mul),
            torch.nn.Softplus(),
            sg2.FullyConnectedLayer(self.hidden_dim, 1 + options['decoder_output_dim'], lr_multiplier=lr_mul))

    def forward(self, sampled_features, ray_directions):
        return self.forward_mean_features(sampled_features.mean(1))

    def forward_mean_features(self, x):
        """The decoder on the mean over the planes [N, M, C], already taken (the renderer's fused tri-plane sampling)."""
        n, m, c = x.shape
        fc0, activation, fc1 = self.net
        x = fc0(x.reshape(n * m, c))
        if x.requires_grad or activation.beta != 1:
            x = activation(x)
        else:  # no autograd graph: softplus in place (log(1 + e^x), public ops), without one more [N * M, 64] tensor
            x = torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device), out=x)
        x = fc1(x).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:])
        if rgb.requires_grad:
            rgb = rgb * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid
        else:  # no autograd graph (no_grad, frozen decoder): the same, in place, without two more [N, M, C] tensors
            rgb = rgb.mul_(1 + 2 * 0.001).sub_(0.001)
        return {'rgb': rgb, 'sigma': x[..., 0:1]}

# ----------------------------------------------------------------------------------------------
# Super-resolution (official module: training.superresolution).


@persistence.persistent_class
class SynthesisBlockNoUp(sg2.SynthesisBlock):
    """A StyleGAN2 synthesis block whose first conv keeps the resolution, and whose skip image is not upsampled."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=[1, 3, 3, 1], conv_clamp=256, **kwargs):
        if in_channels == 0 or architecture == 'resnet':
            raise ValueError('SynthesisBlockNoUp needs input channels and the skip or orig architecture.')
        super().__init__(in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                         architecture=architecture, resample_filter=resample_filter, conv_clamp=conv_clamp, **kwargs)
        layer_kwargs = {k: v for k, v in kwargs.items()
                        if k not in ('use_fp16', 'fp16_channels_last', 'fused_modconv_default')}
        # Same tensors as the parent's conv0, without the 2x upsampling.
        self.conv0 = sg2.SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        _ = update_emas
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        w0, w1, *w_rgb = ws.unbind(dim=1)
        dtype, memory_format = sg2._block_precision(self.use_fp16, self.channels_last, ws.device, force_fp32)
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training
        x = x.to(dtype=dtype, memory_format=memory_format)
        x = self.conv0(x, w0, fused_modconv=fused_modconv, **layer_kwargs)
        x = self.conv1(x, w1, fused_modconv=fused_modconv, **layer_kwargs)
        if w_rgb:
            y = self.torgb(x, w_rgb[0], fused_modconv=fused_modconv).to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img


class _Superresolution(torch.nn.Module):
    """Two synthesis blocks driven by the last w: raw features at `input_resolution` -> RGB at img_resolution.

    Subclasses set `first_block` (SynthesisBlock or SynthesisBlockNoUp; with it the input is at half,
    else at a quarter of img_resolution), `default_channels`, `has_filter_buffer` and
    `resize_only_smaller`.
    """

    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, w_dim=512, block_channels=None, **block_kwargs):
        super().__init__()
        _ = num_fp16_res, conv_clamp, channel_base, channel_max  # ignored, as in EG3D
        sg2._check_resolution(img_resolution)
        use_fp16 = sr_num_fp16_res > 0
        mid, out = self.default_channels if block_channels is None else block_channels
        first_resolution = img_resolution // 2
        self.input_resolution = first_resolution if self.first_block is SynthesisBlockNoUp else first_resolution // 2
        self.sr_antialias = sr_antialias
        clamp = 256 if use_fp16 else None
        self.block0 = self.first_block(channels, mid, w_dim=w_dim, resolution=first_resolution, img_channels=3,
                                       is_last=False, use_fp16=use_fp16, conv_clamp=clamp, **block_kwargs)
        self.block1 = sg2.SynthesisBlock(mid, out, w_dim=w_dim, resolution=img_resolution, img_channels=3,
                                         is_last=True, use_fp16=use_fp16, conv_clamp=clamp, **block_kwargs)
        if self.has_filter_buffer:
            self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))

    def forward(self, rgb, x, ws, **block_kwargs):
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = x.shape[-1]
        if (size < self.input_resolution) if self.resize_only_smaller else (size != self.input_resolution):
            resize = dict(size=(self.input_resolution, self.input_resolution), mode='bilinear', align_corners=False,
                          antialias=self.sr_antialias)
            x = F.interpolate(x, **resize)
            rgb = F.interpolate(rgb, **resize)
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb


@persistence.persistent_class
class SuperresolutionHybrid2X(_Superresolution):
    """64 -> 128 (official): a same-resolution block at 64 (128 channels), then 2x up to 128 (64 channels)."""
    first_block, default_channels = SynthesisBlockNoUp, (128, 64)
    has_filter_buffer, resize_only_smaller = True, False


@persistence.persistent_class
class SuperresolutionHybrid4X(_Superresolution):
    """128 -> 256 (official): a same-resolution block at 128 (128 channels), then 2x up to 256 (64 channels)."""
    first_block, default_channels = SynthesisBlockNoUp, (128, 64)
    has_filter_buffer, resize_only_smaller = True, True


@persistence.persistent_class
class SuperresolutionHybrid8X(_Superresolution):
    """128 -> 512 (official): 2x up to 256 (128 channels), then 2x up to 512 (64 channels)."""
    first_block, default_channels = sg2.SynthesisBlock, (128, 64)
    has_filter_buffer, resize_only_smaller = True, False


@persistence.persistent_class
class SuperresolutionHybrid8XDC(_Superresolution):
    """128 -> 512 (official): 2x up to 256 (256 channels), then 2x up to 512 (128 channels)."""
    first_block, default_channels = sg2.SynthesisBlock, (256, 128)
    has_filter_buffer, resize_only_smaller = False, False


SUPERRESOLUTION_CLASSES = {cls.__name__: cls for cls in (SuperresolutionHybrid2X, SuperresolutionHybrid4X,
                                                          SuperresolutionHybrid8X, SuperresolutionHybrid8XDC)}
# The module EG3D picks for a dataset resolution (its train.py), and the one a resolution allows here.
SUPERRESOLUTION_FOR_RESOLUTION = {128: 'SuperresolutionHybrid2X', 256: 'SuperresolutionHybrid4X',
                                  512: 'SuperresolutionHybrid8XDC'}


def superresolution_class(class_path):
    """Our class for an official ('training.superresolution.X') or our ('training.networks_triplane.X') path."""
    module, _, name = str(class_path).rpartition('.')
    if module not in ('training.superresolution', __name__) or name not in SUPERRESOLUTION_CLASSES:
        known = ', '.join(f'training.superresolution.{n}' for n in SUPERRESOLUTION_CLASSES)
        raise ValueError(f'Unknown superresolution_module {class_path!r}; use one of {known}.')
    return SUPERRESOLUTION_CLASSES[name]

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    """EG3D's generator: G(z, c) -> {'image', 'image_raw', 'image_depth'} (see the module docstring)."""

    # Capabilities (read by training.capabilities).
    label_kind = 'camera'
    synthesis_options = ('camera', 'noise_mode', 'force_fp32', 'render')
    output_key = 'image'
    image_modes = ('image', 'image_raw', 'image_depth')
    # Plain attributes that are state: the no-exec loader restores them from a file, and the training
    # loop copies them from G to G_ema after every step (as EG3D's loop does).
    state_attributes = ('neural_rendering_resolution', 'rendering_kwargs')

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality (25: the camera).
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution (after super-resolution).
        img_channels,               # Number of output colour channels.
        sr_num_fp16_res     = 0,    # Float16 in the super-resolution blocks when > 0 (CUDA only).
        mapping_kwargs      = {},   # Arguments for the backbone's MappingNetwork.
        rendering_kwargs    = {},   # EG3D's rendering options (ray bounds, samples, box_warp, SR module, ...).
        sr_kwargs           = {},   # Arguments for the super-resolution module.
        triplane_resolution = 256,  # (ours) Resolution of the planes.
        triplane_channels   = 32,   # (ours) Features per plane.
        label_kind          = 'camera', # (ours) What c is; a tri-plane generator renders cameras only.
        **synthesis_kwargs,         # Arguments for the backbone's SynthesisNetwork.
    ):
        if label_kind != 'camera':
            raise ValueError(f"TriPlaneGenerator renders 25-float camera labels, not label_kind={label_kind!r}.")
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.triplane_channels = triplane_channels
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = sg2.Generator(z_dim, c_dim, w_dim, img_resolution=triplane_resolution,
                                      img_channels=triplane_channels * 3, mapping_kwargs=mapping_kwargs,
                                      label_kind='camera', **synthesis_kwargs)
        sr_class = superresolution_class(rendering_kwargs['superresolution_module'])
        extra = {} if w_dim == 512 else dict(w_dim=w_dim)
        self.superresolution = sr_class(channels=triplane_channels, img_resolution=img_resolution,
                                        sr_num_fp16_res=sr_num_fp16_res, sr_antialias=rendering_kwargs['sr_antialias'],
                                        **extra, **sr_kwargs)
        self.decoder = OSGDecoder(triplane_channels, {'decoder_lr_mul': rendering_kwargs.get('decoder_lr_mul', 1),
                                                      'decoder_output_dim': triplane_channels})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None

    @property
    def num_ws(self):
        return self.backbone.num_ws

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        if self.rendering_kwargs['c_gen_conditioning_zero']:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get('c_scale', 0), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def _planes(self, ws, update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes
        return planes.view(len(planes), 3, self.triplane_channels, planes.shape[-2], planes.shape[-1])

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False, cache_backbone=False,
                  use_cached_backbone=False, **synthesis_kwargs):
        cam2world_matrix = c[:, :16].view(-1, 4, 4)
        intrinsics = c[:, 16:25].view(-1, 3, 3)
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            self.neural_rendering_resolution = neural_rendering_resolution
        ray_origins, ray_directions = self.ray_sampler(cam2world_matrix, intrinsics, neural_rendering_resolution)
        n = ray_origins.shape[0]
        planes = self._planes(ws, update_emas=update_emas, cache_backbone=cache_backbone,
                              use_cached_backbone=use_cached_backbone, **synthesis_kwargs)
        features, depth, _ = self.renderer(planes, self.decoder, ray_origins, ray_directions, self.rendering_kwargs)
        h = w = neural_rendering_resolution
        feature_image = features.permute(0, 2, 1).reshape(n, features.shape[-1], h, w).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, h, w)
        # A copy, not EG3D's view of feature_image: the first super-resolution block adds its ToRGB to
        # the raw image in place when no resize precedes it (2X at 64, 4X at 128), which EG3D then
        # returns as image_raw; the copy keeps those values without clobbering the block's conv input.
        rgb_image = feature_image[:, :3].clone()
        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != 'noise_mode'}
        sr_image = self.superresolution(rgb_image, feature_image, ws,
                                        noise_mode=self.rendering_kwargs['superresolution_noise_mode'], **sr_kwargs)
        return {'image': sr_image, 'image_raw': rgb_image, 'image_depth': depth_image}

    def sample(self, coordinates, directions, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False,
               **synthesis_kwargs):
        """{'rgb', 'sigma'} at world points [N, M, 3] for latents z (density regularisation, shape export)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)

    def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                     **synthesis_kwargs):
        """{'rgb', 'sigma'} at world points [N, M, 3] for given ws."""
        _ = truncation_psi, truncation_cutoff
        planes = self._planes(ws, update_emas=update_emas, **synthesis_kwargs)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, neural_rendering_resolution=None,
                update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
                              cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone,
                              **synthesis_kwargs)

# ----------------------------------------------------------------------------------------------
# Dual discrimination (official module: training.dual_discriminator).


def filtered_resizing(image_orig_tensor, size, f, filter_mode='antialiased'):
    """EG3D's resize of raw images to `size` for the dual discriminator and the loss.

    'antialiased': bilinear with antialiasing; 'none': plain bilinear; a float a in (0, 1): the blend
    (1 - a) * plain + a * antialiased; 'classic': upfirdn2d 2x up, bilinear to 2 * size + 2, 2x down.
    """
    resize = dict(size=(size, size), mode='bilinear', align_corners=False)
    if filter_mode == 'antialiased':
        return F.interpolate(image_orig_tensor, antialias=True, **resize)
    if filter_mode == 'classic':
        x = upfirdn2d.upsample2d(image_orig_tensor, f, up=2)
        x = F.interpolate(x, size=(size * 2 + 2, size * 2 + 2), mode='bilinear', align_corners=False)
        return upfirdn2d.downsample2d(x, f, down=2, flip_filter=True, padding=-1)
    if filter_mode == 'none':
        return F.interpolate(image_orig_tensor, **resize)
    if isinstance(filter_mode, float) and 0 < filter_mode < 1:
        filtered = F.interpolate(image_orig_tensor, antialias=True, **resize)
        aliased = F.interpolate(image_orig_tensor, antialias=False, **resize)
        return (1 - filter_mode) * aliased + filter_mode * filtered
    raise ValueError(f"filter_mode must be 'antialiased', 'classic', 'none' or a float in (0, 1), not {filter_mode!r}.")


@persistence.persistent_class
class DualDiscriminator(sg2.Discriminator):
    """EG3D's D({'image', 'image_raw'}, c): the StyleGAN2 resnet D on [image, raw resized to image], 6 channels."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768, channel_max=512,
                 num_fp16_res=4, conv_clamp=256, cmap_dim=None, disc_c_noise=0, block_kwargs={}, mapping_kwargs={},
                 epilogue_kwargs={}):
        super().__init__(c_dim, img_resolution, img_channels * 2, architecture=architecture, channel_base=channel_base,
                         channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                         block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))
        self.disc_c_noise = disc_c_noise

    def forward(self, img, c, update_emas=False, **block_kwargs):
        _ = update_emas
        image_raw = filtered_resizing(img['image_raw'], size=img['image'].shape[-1], f=self.resample_filter)
        x, img = None, torch.cat([img['image'], image_raw], 1)
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = None
        if self.c_dim > 0:
            if self.disc_c_noise > 0:
                c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)

# ----------------------------------------------------------------------------------------------

# Our pickles embed this module, official EG3D pickles the modules below; the no-exec loader rebuilds
# their objects from our classes.
persistence.register_no_exec_module(
    __name__, [MipRayMarcher2, RaySampler, ImportanceRenderer, OSGDecoder, SynthesisBlockNoUp,
               *SUPERRESOLUTION_CLASSES.values(), TriPlaneGenerator, DualDiscriminator])
persistence.register_no_exec_module('training.triplane', [TriPlaneGenerator, OSGDecoder],
                                    signature=['TriPlaneGenerator', 'OSGDecoder'])
persistence.register_no_exec_module(
    'training.superresolution', [SynthesisBlockNoUp, *SUPERRESOLUTION_CLASSES.values()],
    signature=['SynthesisBlockNoUp', *SUPERRESOLUTION_CLASSES])
persistence.register_no_exec_module('training.dual_discriminator', [DualDiscriminator],
                                    signature=['DualDiscriminator', 'filtered_resizing'])
# Plain (non-persistent) modules of the official generator: state holders for the loader.
for _module, _name in [('training.triplane', 'OSGDecoder'),
                       ('training.volumetric_rendering.renderer', 'ImportanceRenderer'),
                       ('training.volumetric_rendering.ray_marcher', 'MipRayMarcher2'),
                       ('training.volumetric_rendering.ray_sampler', 'RaySampler'),
                       ('torch.nn.modules.activation', 'Softplus')]:
    persistence.register_no_exec_plain_module(_module, _name)

# ----------------------------------------------------------------------------------------------
