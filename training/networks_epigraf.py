"""EpiGRAF (NeurIPS 2022): a tri-plane generator rendered straight to pixels, trained on patches.

Names, constructor arguments and tensors are those of the official release (universome/epigraf,
src/training/networks_epigraf.py, networks_discriminator.py and layers.py), so its `state_dict`s
load by name (spec test, tests/data/spec/epigraf_official_tensors.json):

- `Generator(cfg, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, **synthesis_kwargs)`:
  - `mapping`: EpiGRAF's MappingNetwork, with optional pose conditioning (`camera_cond`): yaw and
    pitch, normalised to sign(a) (|a| mod 2 pi) / 2 pi, as raw scalars, with dropout, concatenated
    to the class label and embedded; the `mean_camera_pose` buffer stands in at eval time without
    angles;
  - `synthesis.tri_plane_decoder`: StyleGAN2's synthesis blocks ('skip') from 4 to
    `cfg.tri_plane.res` (512), 3 * feat_dim channels, float32 (`cfg.tri_plane.fp32`);
  - `synthesis.tri_plane_mlp`: TriPlaneMLP, the mean of the three plane features (bilinear,
    align_corners=True, planes (x, y), (x, z), (y, z) of points / cube_scale) through 32 -> 64
    (lrelu) -> 4: raw colour and raw density, no view direction.
- `Discriminator(cfg, c_dim, img_resolution, img_channels, ...)`: StyleGAN2's resnet D on patches
  of `img_resolution` (64) with `num_additional_start_blocks` leading stride-1 blocks; the patch
  (scale, offset x, offset y) embedded by ScalarEncoder1d (10 log-spaced frequencies, sin and cos,
  plus a learned embedding of round(1000 x)); a 2-layer mapping of that code h modulates the input
  channels of each block's conv1 by 1 + tanh(A h); a projection head on (class label, patch code),
  with the camera (Fourier features of yaw and pitch) when `cfg.camera_cond`.

Rendering (EpiGRAF's, in pi-GAN's form): `num_ray_steps` distances in [ray_start, ray_end] per ray,
stratified inside their mid-point intervals (always in the official code; `jitter=False` turns it
off here), the decoder there, per-sample weights with true deltas (the last 1e10, no background),
density noise of std `nerf_noise_std` in training, softplus; as many importance samples from the
weights (+1e-5, without their first and last) over the mid-points, no smoothing; both sets merged
and sorted, and composited again: colour = sum w c (raw, no sigmoid), depth = sum w t.

Backgrounds (`cfg.bg_model.type`), composited behind the scene by its final transmittance, the last
delta then 1e-3: 'plane', 3 more tri-plane decoder channels used as a 2D image cut to the patch; or
'sphere', NeRF++'s background (`synthesis.bg_model`, training/networks_inr_gan.INR, on the last 4 ws):
`bg_model.num_steps` disparities from `start` to 0 (jittered in training), the INR at their inverted-
sphere coordinates, composited over the negated disparities with no noise. Deliberate: the sphere is
the cameras' (radius cfg.dataset.camera.radius; EpiGRAF's is 1, as are all its datasets' cameras), and
its points come from a closed form with no cross product, so a ray through the centre is no NaN.

Our contract on top (the official call still works):
- `G(z, c)` with c the [N, 25] camera label returns the [N, 3, R, R] image; `G(z, c_class,
  camera_angles=...)` is the official call (c with 0 columns). `resolution=R` renders any size,
  `patch=(scales [N, 2], offsets [N, 2])` (or EpiGRAF's `patch_params` dict) renders the rays of
  that window at `patch_resolution` (cfg.patch.resolution). Depth on request (`return_depth`).
- Cameras: EpiGRAF's (yaw, pitch, roll) put yaw 0 on the +x axis, GRAM's frontal camera (and our
  labels') sits on +z. Labels are converted with the frontal offset (training.cameras
  .epigraf_angles_to_label: yaw = GRAM's azimuth - pi / 2), so the network renders the label's
  camera in a world turned by that quarter turn about +y (`LABEL_TO_EPIGRAF`), and official weights
  see exactly the rays of the official code.
- Rays: physical pixel-centre rays by default; `legacy_rays=True` is EpiGRAF's grid (linspace(-1, 1)
  including the image borders), set by the official-checkpoint loader.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from dnnlib import EasyDict
from torch_utils import misc
from torch_utils import persistence
from training import cameras
from training import networks_stylegan2 as sg2
from training.rendering import rays, sampling

# Label world -> EpiGRAF's world: (x, y, z) -> (z, y, -x), a quarter turn about +y that takes our
# frontal camera (+z) to EpiGRAF's yaw 0 (+x).
LABEL_TO_EPIGRAF = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0))
PITCH_EPS = 1e-5  # EpiGRAF clamps the pitch to [eps, pi - eps]


def _config(cfg):
    """A config (dict, EasyDict, or an OmegaConf-like stand-in) as nested EasyDicts."""
    if isinstance(cfg, dict):
        return EasyDict({key: _config(value) for key, value in cfg.items()})
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_config(value) for value in cfg)
    return cfg


def to_epigraf_frame(points):
    """Points or directions [..., 3] of the label world in EpiGRAF's frame (LABEL_TO_EPIGRAF)."""
    return points @ torch.tensor(LABEL_TO_EPIGRAF, dtype=points.dtype, device=points.device).T


def angles_to_label(angles, fov_degrees, radius):
    """[N, 25] labels of EpiGRAF's cameras (yaw, pitch, roll) [N, 3], its pitch clamped to [eps, pi - eps] as it does."""
    angles = torch.as_tensor(angles, dtype=torch.float32)
    angles = torch.cat([angles[:, :1], angles[:, 1:2].clamp(PITCH_EPS, math.pi - PITCH_EPS), angles[:, 2:]], dim=1)
    return cameras.epigraf_angles_to_label(angles, fov_degrees, radius=radius).to(angles.device)


def patch_uv(scales, offsets, resolution, legacy, device, dtype):
    """[N, R * R, 2] normalised image points (u right, v down) of EpiGRAF patches, row-major.

    EpiGRAF maps its NDC grid x to (x + 1) s - 1 + 2 o, with y pointing up: in image coordinates the
    patch spans u in [o_x, o_x + s_x] and v in [1 - o_y - s_y, 1 - o_y] (its y offset counts from
    the bottom edge). legacy: the grid includes the patch borders (EpiGRAF's linspace); else pixel centres.
    """
    grid = (rays.border_uv if legacy else rays.pixel_uv)(resolution, device, dtype)
    u, v = grid[None, :, 0], grid[None, :, 1]
    scales, offsets = scales.to(device, dtype), offsets.to(device, dtype)
    u = offsets[:, :1] + scales[:, :1] * u
    v = 1 - offsets[:, 1:] - scales[:, 1:] + scales[:, 1:] * v
    return torch.stack([u, v], dim=-1)


def extract_patches(images, scales, offsets, resolution, legacy):
    """[N, C, R, R] bilinear patches of images [N, C, H, H] at EpiGRAF's (scale, offset) windows (patch_uv's).

    legacy: EpiGRAF's grid (the window's borders included, align_corners=True); else the window's
    pixel centres (align_corners=False): the points G's physical rays go through.
    """
    uv = patch_uv(scales, offsets, resolution, legacy, images.device, images.dtype)   # [N, R * R, 2], in [0, 1]
    grid = (uv * 2 - 1).reshape(len(images), resolution, resolution, 2)
    return F.grid_sample(images, grid, mode='bilinear', padding_mode='zeros', align_corners=legacy)


def sample_triplane_mean(planes, points, cube_scale):
    """EpiGRAF's plane lookup: the mean over (x, y), (x, z), (y, z) of bilinear features [N, M, C].

    planes [N, 3 * C, H, W]; points [N, M, 3] in the world, divided by cube_scale onto [-1, 1]
    (align_corners=True, zeros outside).
    """
    n, channels, h, w = planes.shape
    m = points.shape[1]
    coords = points / cube_scale
    grid = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [1, 2]]], dim=1)  # [N, 3, M, 2]
    features = F.grid_sample(planes.reshape(n * 3, channels // 3, h, w), grid.reshape(n * 3, 1, m, 2).to(planes.dtype),
                             mode='bilinear', align_corners=True)                              # [N * 3, C, 1, M]
    return features.reshape(n, 3, channels // 3, m).mean(dim=1).permute(0, 2, 1)


def march(rgb_sigma, depths, noise_std=0.0, white_back=False, last_back=False, generator=None, last_delta=1e10):
    """EpiGRAF's fancy_integration with softplus: (colour [N, R, C], depth [N, R, 1], weights [N, R, S, 1],
    final transmittance [N, R, 1]).

    rgb_sigma [N, R, S, C + 1] (raw density last), depths [N, R, S, 1] increasing. The last delta is 1e10
    without a background model and 1e-3 with one (EpiGRAF's use_inf_depth); the final transmittance is
    EpiGRAF's: the exclusive product at the last sample (the light that passes all samples but the last).
    """
    colours, sigmas = rgb_sigma[..., :-1], rgb_sigma[..., -1:]
    deltas = torch.cat([depths[:, :, 1:] - depths[:, :, :-1], torch.full_like(depths[:, :, :1], last_delta)], dim=2)
    if noise_std > 0:
        sigmas = sigmas + noise_std * torch.randn(sigmas.shape, dtype=sigmas.dtype, device=sigmas.device,
                                                  generator=generator)
    alphas = 1 - torch.exp(-deltas * F.softplus(sigmas))
    transmittance = torch.cumprod(1 - alphas + 1e-10, dim=2)
    transmittance = torch.cat([torch.ones_like(transmittance[:, :, :1]), transmittance[:, :, :-1]], dim=2)
    weights = alphas * transmittance
    total = weights.sum(dim=2)
    if last_back:
        weights = torch.cat([weights[:, :, :-1], weights[:, :, -1:] + (1 - total).unsqueeze(2)], dim=2)
    colour = (weights * colours).sum(dim=2)
    if white_back:
        colour = colour + 1 - total
    return colour, (weights * depths).sum(dim=2), weights, transmittance[:, :, -1]


def inverted_sphere_points(origins, dirs, disparity):
    """NeRF++'s inverted-sphere coordinates [N, R, S, 4] of ray points outside the unit sphere (EpiGRAF's sphere
    background): the unit direction of the ray point at radius 1 / s, then s, for disparities s [N, R, S] in [0, 1].

    origins, dirs [N, R, 3] (dirs of any length), origins inside or on the unit sphere. With p the ray's point
    nearest the centre (|p| = h) and d its unit direction, the point beyond at radius r = 1 / s is
    p + sqrt(r^2 - h^2) d, whose direction is s p + sqrt(1 - s^2 h^2) d (d at s = 0: the point at infinity).
    Equal to NeRF++'s depth2pts_outside (a rotation of the sphere's exit point by asin h - asin(s h)).
    """
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    nearest = origins - (origins * d).sum(dim=-1, keepdim=True) * d                 # [N, R, 3], orthogonal to d
    s = disparity.unsqueeze(-1)                                                      # [N, R, S, 1]
    along = (1 - s.square() * nearest.square().sum(dim=-1, keepdim=True).unsqueeze(2)).clamp_min(0).sqrt()
    direction = s * nearest.unsqueeze(2) + along * d.unsqueeze(2)
    return torch.cat([direction / direction.norm(dim=-1, keepdim=True), s], dim=-1)


def stratify(depths, generator=None):
    """pi-GAN's jitter: each depth drawn uniformly between its neighbours' mid-points (the ends kept as bounds)."""
    mids = 0.5 * (depths[:, :, 1:] + depths[:, :, :-1])
    upper = torch.cat([mids, depths[:, :, -1:]], dim=2)
    lower = torch.cat([depths[:, :, :1], mids], dim=2)
    noise = torch.rand(depths.shape, dtype=depths.dtype, device=depths.device, generator=generator)
    return lower + (upper - lower) * noise

# ----------------------------------------------------------------------------------------------
# Encoders and mapping (EpiGRAF's layers.py).


def log_spaced_frequencies(max_value):
    """EpiGRAF's construct_log_spaced_freqs: pi 2^k / T for k < log2 T, T = 2^ceil(log2 max_value)."""
    resolution = 2 ** math.ceil(math.log2(max_value))
    count = int(math.ceil(math.log2(resolution)))
    return (2.0 ** torch.arange(count, dtype=torch.float64) * math.pi / resolution).float()


@persistence.persistent_class
class FourierEncoder1d(torch.nn.Module):
    """[N, D] scalars -> [N, D, F (x 2)]: sin (and cos) of log-spaced frequencies times x."""

    def __init__(self, coord_dim, max_x_value=100.0, use_cos=True):
        super().__init__()
        self.coord_dim = coord_dim
        self.use_cos = use_cos
        self.register_buffer('fourier_coefs', log_spaced_frequencies(max_x_value))
        self.fourier_dim = self.fourier_coefs.shape[0]

    def get_dim(self):
        return self.fourier_dim * (2 if self.use_cos else 1)

    def forward(self, x):
        raw = self.fourier_coefs.view(1, 1, -1) * x.float().unsqueeze(2)
        return torch.cat([raw.sin(), raw.cos()], dim=2) if self.use_cos else raw.sin()


@persistence.persistent_class
class ScalarEncoder1d(torch.nn.Module):
    """[N, D] scalars in [0, 1] -> [N, D * (raw + Fourier + learned)] (per coordinate, in that order)."""

    def __init__(self, coord_dim, x_multiplier, const_emb_dim, use_raw=False, **fourier_kwargs):
        super().__init__()
        self.coord_dim = coord_dim
        self.const_emb_dim = const_emb_dim
        self.x_multiplier = x_multiplier
        self.use_raw = use_raw
        has_scale = x_multiplier > 0
        self.const_embed = torch.nn.Embedding(int(np.ceil(x_multiplier)) + 1, const_emb_dim) \
            if const_emb_dim > 0 and has_scale else None
        self.fourier_encoder = FourierEncoder1d(coord_dim, max_x_value=x_multiplier, **fourier_kwargs) if has_scale else None
        self.fourier_dim = self.fourier_encoder.get_dim() if has_scale else 0
        self.raw_dim = 1 if use_raw else 0

    def get_dim(self):
        return self.coord_dim * (self.const_emb_dim + self.fourier_dim + self.raw_dim)

    def forward(self, x):
        misc.assert_shape(x, [None, self.coord_dim])
        parts = [x.unsqueeze(2)] if self.use_raw else []
        scaled = x.float() * self.x_multiplier
        if self.fourier_encoder is not None:
            parts.append(self.fourier_encoder(scaled))
        if self.const_embed is not None:
            parts.append(self.const_embed(scaled.round().long()))
        return torch.cat(parts, dim=2).reshape(len(x), self.get_dim())


def normalise_angles(angles):
    """EpiGRAF's conditioning angles: sign(a) (|a| mod 2 pi) / 2 pi of (yaw, pitch)."""
    yaw_pitch = angles[:, :2]
    return yaw_pitch.sign() * ((yaw_pitch.abs() % (2 * np.pi)) / (2 * np.pi))


@persistence.persistent_class
class MappingNetwork(sg2.MappingNetwork):
    """StyleGAN2's mapping (2 layers by default) with EpiGRAF's optional camera conditioning.

    camera_raw_scalars: the 2 normalised angles enter as they are (the generator's); False: their
    Fourier features with x_multiplier 64 (the discriminator's head). camera_cond_noise_std:
    Gaussian noise of that std added to the raw angles (EpiGRAF's GPC noise, in eval too).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=2, camera_cond=False, camera_cond_drop_p=0.0,
                 camera_cond_noise_std=0.0, camera_raw_scalars=True, mean_camera_pose=None, **kwargs):
        encoder = None
        if camera_cond:
            encoder = ScalarEncoder1d(coord_dim=2, x_multiplier=0.0 if camera_raw_scalars else 64.0, const_emb_dim=0,
                                      use_raw=camera_raw_scalars)
            c_dim = c_dim + encoder.get_dim()
        super().__init__(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers, **kwargs)
        self.camera_scalar_enc = encoder
        self.camera_cond_drop_p = camera_cond_drop_p
        self.camera_cond_noise_std = camera_cond_noise_std
        if mean_camera_pose is not None:
            self.register_buffer('mean_camera_pose', torch.as_tensor(mean_camera_pose, dtype=torch.float32).reshape(3))
        else:
            self.mean_camera_pose = None

    def forward(self, z, c, camera_angles=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        if c is not None and c.shape[1] == 25 and self.c_dim - self._camera_dim() != 25:
            # Our contract's G.mapping(z, c) with the camera label: no class label; the pose (when conditioned)
            # is the label's in training and the mean pose at eval, as G(z, c).
            if camera_angles is None and self.training and self.camera_scalar_enc is not None:
                camera_angles = cameras.epigraf_angles_from_label(c.to(torch.float32))
            c = c[:, :0]
        if self.camera_scalar_enc is not None:
            if camera_angles is None:
                if self.mean_camera_pose is None:
                    raise ValueError('This mapping network is pose-conditioned: pass camera_angles (it has no mean_camera_pose).')
                camera_angles = self.mean_camera_pose.unsqueeze(0).repeat(len(z if z is not None else c), 1)
            if self.camera_cond_noise_std > 0:  # as EpiGRAF: on the raw angles, in training and at eval
                camera_angles = camera_angles + torch.randn_like(camera_angles) * self.camera_cond_noise_std
            embedding = self.camera_scalar_enc(normalise_angles(camera_angles))
            embedding = F.dropout(embedding, p=self.camera_cond_drop_p, training=self.training)
            c = embedding if c is None or c.shape[1] == 0 else torch.cat([c, embedding], dim=1)
        return super().forward(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                               update_emas=update_emas)

    def _camera_dim(self):
        return 0 if self.camera_scalar_enc is None else self.camera_scalar_enc.get_dim()

# ----------------------------------------------------------------------------------------------
# The generator.


@persistence.persistent_class
class TriPlaneMLP(torch.nn.Module):
    """Mean tri-plane feature -> (raw colour, raw density): feat_dim -> hid_dim (lrelu) ... -> out_dim + 1."""

    def __init__(self, cfg, out_dim):
        super().__init__()
        self.cfg = cfg = _config(cfg)
        self.out_dim = out_dim
        if cfg.tri_plane.get('has_view_cond', False) or cfg.tri_plane.get('posenc_period_len', 0) > 0:
            raise ValueError('EpiGRAF options tri_plane.has_view_cond and tri_plane.posenc_period_len are not '
                             'supported here (the released configs leave them off).')
        layers = cfg.tri_plane.mlp.n_layers
        if layers < 1:
            raise ValueError(f'TriPlaneMLP needs tri_plane.mlp.n_layers >= 1, got {layers}.')
        self.dims = [cfg.tri_plane.feat_dim] + [cfg.tri_plane.mlp.hid_dim] * (layers - 1) + [out_dim + 1]
        activations = ['lrelu'] * (len(self.dims) - 2) + ['linear']
        self.model = torch.nn.Sequential(*[sg2.FullyConnectedLayer(self.dims[i], self.dims[i + 1], activation=act)
                                           for i, act in enumerate(activations)])

    def forward(self, features):
        """[N, M, feat_dim] mean plane features -> [N, M, out_dim + 1]."""
        n, m, channels = features.shape
        return self.model(features.reshape(n * m, channels)).reshape(n, m, self.dims[-1])


@persistence.persistent_class
class SynthesisBlocksSequence(torch.nn.Module):
    """StyleGAN2 synthesis blocks from 4 x 4 up to `out_resolution`, returning the ToRGB sum (the tri-planes)."""

    def __init__(self, w_dim, in_resolution, out_resolution, in_channels, out_channels, channel_base=32768,
                 channel_max=512, num_fp16_res=4, **block_kwargs):
        super().__init__()
        if in_resolution != 0 or in_channels != 0:
            raise ValueError('SynthesisBlocksSequence is built from the 4 x 4 constant here (in_resolution=0).')
        self.w_dim = w_dim
        self.out_resolution = out_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_fp16_res = num_fp16_res
        log2 = int(np.log2(out_resolution))
        if out_resolution < 4 or 2 ** log2 != out_resolution:
            raise ValueError(f'The tri-plane resolution must be a power of two of at least 4, got {out_resolution}.')
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for index, res in enumerate(self.block_resolutions):
            is_last = res == out_resolution
            block = sg2.SynthesisBlock(channels[res // 2] if index > 0 else in_channels, channels[res], w_dim=w_dim,
                                       resolution=res, img_channels=out_channels, is_last=is_last,
                                       use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        index = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            x, img = block(x, img, ws.narrow(1, index, block.num_conv + block.num_torgb), **block_kwargs)
            index += block.num_conv
        return img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws and cameras -> the rendered image (or patch): tri-planes, decoder, two-pass volume rendering."""

    def __init__(self, cfg, w_dim, img_resolution, img_channels, num_fp16_res=4, legacy_rays=False,
                 **synthesis_seq_kwargs):
        super().__init__()
        self.cfg = cfg = _config(cfg)
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.legacy_rays = legacy_rays
        if cfg.backbone != 'stylegan2':
            raise ValueError(f"Only EpiGRAF's default tri-plane backbone 'stylegan2' is supported, got {cfg.backbone!r}.")
        if cfg.bg_model.type not in (None, 'plane', 'sphere'):
            raise ValueError(f"EpiGRAF's bg_model.type must be null, 'plane' or 'sphere', got {cfg.bg_model.type!r}.")
        self.plane_background = cfg.bg_model.type == 'plane'  # the decoder's last img_channels: a 2D background
        if cfg.get('density_shift', 0.0) != 0:
            raise ValueError(f'EpiGRAF density_shift={cfg.density_shift} is not supported (the released configs use 0).')
        if cfg.clamp_mode != 'softplus':
            raise ValueError(f"Only clamp_mode='softplus' is supported, got {cfg.clamp_mode!r}.")
        self.tri_plane_decoder = SynthesisBlocksSequence(
            w_dim=w_dim, in_resolution=0, out_resolution=cfg.tri_plane.res, in_channels=0,
            out_channels=cfg.tri_plane.feat_dim * 3 + (img_channels if self.plane_background else 0), architecture='skip',
            num_fp16_res=0 if cfg.tri_plane.fp32 else num_fp16_res, use_noise=cfg.use_noise, **synthesis_seq_kwargs)
        self.tri_plane_mlp = TriPlaneMLP(cfg, out_dim=img_channels)
        self.num_ws = self.tri_plane_decoder.num_ws
        self.bg_model = None
        if cfg.bg_model.type == 'sphere':  # NeRF++'s background INR, on ws after the tri-plane decoder's
            from training.networks_inr_gan import INR  # imported here: that module uses this one's encoder
            self.bg_model = INR(cfg.bg_model, w_dim)
            self.num_ws += self.bg_model.num_ws
        self.nerf_noise_std = 0.0
        self.train_resolution = cfg.patch.resolution if cfg.patch.enabled else img_resolution
        self.test_resolution = img_resolution

    def progressive_update(self, cur_kimg):
        """EpiGRAF's density noise: nerf_noise_std_init down to 0, linearly over nerf_noise_kimg_growth kimg."""
        start, period = self.cfg.nerf_noise_std_init, self.cfg.nerf_noise_kimg_growth
        self.nerf_noise_std = 0.0 if cur_kimg >= period else start + (0.0 - start) * max(cur_kimg, 0) / period

    def planes_and_background(self, ws, **block_kwargs):
        """(tri-plane features [N, 3 C, H, W], the plane background [N, img_channels, H, W] or None)."""
        out = self.tri_plane_decoder(ws[:, :self.tri_plane_decoder.num_ws], **block_kwargs)
        if not self.plane_background:
            return out, None
        return out[:, :-self.img_channels].contiguous(), out[:, -self.img_channels:]

    def planes(self, ws, **block_kwargs):
        return self.planes_and_background(ws, **block_kwargs)[0]

    def background(self, plane, resolution, patch, n):
        """EpiGRAF's plane background at the rays: resized to the image (bilinear, align_corners=True), then the
        patch's window, as [N, R * R, img_channels]."""
        full = F.interpolate(plane, size=(self.img_resolution, self.img_resolution), mode='bilinear', align_corners=True)
        if patch is None:
            patch = (torch.ones(n, 2, device=plane.device), torch.zeros(n, 2, device=plane.device))
        window = extract_patches(full, patch[0], patch[1], resolution, self.legacy_rays)
        return window.flatten(2).permute(0, 2, 1)

    def sphere_background(self, ws_bg, origins, dirs, jitter=False, generator=None):
        """EpiGRAF's sphere background [N, R, C] of rays (origins, dirs [N, R, 3], EpiGRAF's frame): bg_model.num_steps
        disparities from bg_model.start down to 0 (jittered inside their mid-point intervals when `jitter`), the INR at
        their inverted-sphere points, composited over the negated disparities (increasing), last delta 1e10, no noise.

        The sphere is the cameras' (radius cfg.dataset.camera.radius, 1 in every EpiGRAF dataset): origins are divided
        by that radius, which changes nothing at EpiGRAF's radius 1 and keeps scaled-up cameras on the sphere.
        """
        cfg = self.cfg.bg_model
        n, r = origins.shape[:2]
        disparity = torch.linspace(cfg.start, 0.0, cfg.num_steps, device=origins.device, dtype=origins.dtype)
        disparity = disparity.reshape(1, 1, -1, 1).repeat(n, r, 1, 1)
        if jitter:
            disparity = stratify(disparity, generator)
        points = inverted_sphere_points(origins / float(self.cfg.dataset.camera.radius), dirs, disparity.squeeze(-1))
        out = self.bg_model(points.reshape(n, -1, 4).permute(0, 2, 1), ws_bg).permute(0, 2, 1)
        colour, _, _, _ = march(out.reshape(n, r, cfg.num_steps, -1), -disparity,
                                white_back=bool(self.cfg.dataset.get('white_back', False)))
        return colour

    def field(self, planes, points):
        """[N, M, img_channels + 1] raw colour and density at world points [N, M, 3] of EpiGRAF's frame."""
        return self.tri_plane_mlp(sample_triplane_mean(planes, points, self.cfg.dataset.cube_scale))

    def rays(self, c, resolution, patch=None):
        """(origins, dirs) [N, R * R, 3] in EpiGRAF's frame for labels c [N, 25], the whole image or a patch."""
        n = c.shape[0]
        if patch is None:
            scales = torch.ones(n, 2, device=c.device, dtype=c.dtype)
            patch = (scales, torch.zeros_like(scales))
        uv = patch_uv(patch[0], patch[1], resolution, self.legacy_rays, c.device, c.dtype)   # [N, R, 2]
        origins, dirs = rays.sample_rays_from_labels(c, resolution, uv=uv)
        return to_epigraf_frame(origins), to_epigraf_frame(dirs)

    def render(self, planes, origins, dirs, num_steps, noise_std=0.0, jitter=True, det=False, generator=None,
               ray_chunk=None, background=None, sphere_ws=None):
        """(colour [N, R, C], depth [N, R, 1]) of rays in EpiGRAF's frame: coarse + importance pass.

        Composited behind, weighted by the final transmittance: background [N, R, C] (EpiGRAF's plane model), or
        the sphere background of sphere_ws (its INR's ws, [N, bg_model.num_ws, w_dim]).
        """
        cfg = self.cfg
        camera = cfg.dataset.camera
        last_delta = 1e10 if cfg.bg_model.type is None else 1e-3
        chunk = ray_chunk or origins.shape[1]
        colours, depths_out = [], []
        for start in range(0, origins.shape[1], chunk):
            o, d = origins[:, start:start + chunk], dirs[:, start:start + chunk]
            n, r = o.shape[:2]
            depths = torch.linspace(camera.ray_start, camera.ray_end, num_steps, device=o.device, dtype=o.dtype)
            depths = depths.reshape(1, 1, -1, 1).repeat(n, r, 1, 1)
            if jitter:
                depths = stratify(depths, generator)
            coarse = self.field(planes, (o.unsqueeze(2) + d.unsqueeze(2) * depths).reshape(n, -1, 3))
            coarse = coarse.reshape(n, r, num_steps, -1)
            _, _, weights, _ = march(coarse, depths, noise_std, generator=generator, last_delta=last_delta)
            with torch.no_grad():  # EpiGRAF's sample_pdf is ours (its searchsorted side gives the same samples)
                mids = 0.5 * (depths[:, :, 1:] + depths[:, :, :-1])
                fine = sampling.sample_pdf(mids.squeeze(-1), (weights.squeeze(-1) + 1e-5)[..., 1:-1], num_steps,
                                           det=det, generator=generator).unsqueeze(-1)
            fine_out = self.field(planes, (o.unsqueeze(2) + d.unsqueeze(2) * fine).reshape(n, -1, 3))
            fine_out = fine_out.reshape(n, r, num_steps, -1)
            all_depths = torch.cat([fine, depths], dim=2)
            all_depths, order = torch.sort(all_depths, dim=2)
            outputs = torch.cat([fine_out, coarse], dim=2).gather(2, order.expand(-1, -1, -1, coarse.shape[-1]))
            colour, depth, _, passed = march(outputs, all_depths, noise_std,
                                             white_back=bool(cfg.dataset.get('white_back', False)),
                                             last_back=cfg.dataset.get('last_back', False), generator=generator,
                                             last_delta=last_delta)
            if background is not None:
                colour = colour + background[:, start:start + chunk] * passed
            if sphere_ws is not None:
                colour = colour + self.sphere_background(sphere_ws, o, d, jitter and self.training, generator) * passed
            colours.append(colour)
            depths_out.append(depth)
        return torch.cat(colours, dim=1), torch.cat(depths_out, dim=1)

    def forward(self, ws, camera_angles=None, patch_params=None, max_batch_res=128, return_depth=False,
                ignore_bg=False, bg_only=False, fov=None, c=None, resolution=None, patch=None, jitter=True,
                det=False, generator=None, ray_step_multiplier=1, return_image_depth=False, **block_kwargs):
        """The image [N, C, R, R] (depth [N, 1, R, R] with return_depth) of ws seen by labels c or camera_angles."""
        if bg_only and self.cfg.bg_model.type is None:
            raise ValueError('bg_only needs a background model; this generator has none.')
        n = ws.shape[0]
        if c is None or c.shape[1] != 25:
            if camera_angles is None:
                raise ValueError('EpiGRAF synthesis needs cameras: c ([N, 25] labels) or camera_angles ([N, 3]).')
            misc.assert_shape(camera_angles, [n, 3])
            c = angles_to_label(camera_angles, self.cfg.dataset.camera.fov if fov is None else float(fov),
                                self.cfg.dataset.camera.radius)
        elif fov is not None:  # EpiGRAF's fov override (its front_circle zoom) on labels: their focal
            c = c.clone()
            c[:, 16] = c[:, 20] = 1 / (2 * math.tan(math.radians(float(fov)) / 2))
        c = c.to(device=ws.device, dtype=torch.float32)
        if patch_params is not None:
            patch = (patch_params['scales'], patch_params['offsets'])
        if resolution is None:
            resolution = self.train_resolution if (self.training or patch is not None) else self.test_resolution
        planes, plane_background = self.planes_and_background(ws, **block_kwargs)
        background = None if plane_background is None else self.background(plane_background, int(resolution), patch, n)

        def image(values):
            return values.reshape(n, int(resolution), int(resolution), -1).permute(0, 3, 1, 2).contiguous()
        if bg_only and background is not None:
            return image(background)
        origins, dirs = self.rays(c, int(resolution), patch)
        sphere_ws = None
        if self.bg_model is not None:
            start = self.tri_plane_decoder.num_ws
            sphere_ws = ws[:, start:start + self.bg_model.num_ws]
        if bg_only:
            chunk = max_batch_res ** 2
            return image(torch.cat([self.sphere_background(sphere_ws, origins[:, i:i + chunk], dirs[:, i:i + chunk],
                                                           jitter and self.training, generator)
                                    for i in range(0, origins.shape[1], chunk)], dim=1))
        noise_std = self.nerf_noise_std if self.training else 0.0
        steps = max(2, int(round(self.cfg.num_ray_steps * ray_step_multiplier)))  # EpiGRAF's inference option
        colour, depth = self.render(planes, origins, dirs, steps, noise_std=noise_std, jitter=jitter, det=det,
                                    generator=generator, ray_chunk=max_batch_res ** 2,
                                    background=None if ignore_bg else background,
                                    sphere_ws=None if ignore_bg else sphere_ws)
        if return_image_depth:
            return {'image': image(colour), 'image_depth': image(depth)}
        return image(depth if return_depth else colour)


def _check_class_dim(c_dim, label_kind='camera'):
    """c_dim is the official class-label size (0) or our 25-float camera label (under our loop)."""
    if c_dim not in (0, 25) or label_kind != 'camera':
        raise ValueError(f'EpiGRAF networks see 25-float camera labels and no class label; got c_dim={c_dim}, '
                         f'label_kind={label_kind!r} (class-conditional EpiGRAF is not supported yet).')


@persistence.persistent_class
class Generator(torch.nn.Module):
    """EpiGRAF's generator under its official name and arguments, with our camera-label contract on top."""

    label_kind = 'camera'
    synthesis_options = ('camera', 'resolution', 'ray_step_multiplier', 'noise_mode')
    output_key = None
    image_modes = ('image', 'image_depth')
    mode_options = {'image_depth': {'return_image_depth': True}}  # one render: {'image', 'image_depth'}

    def __init__(self, cfg, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},
                 legacy_rays=False, label_kind='camera', **synthesis_kwargs):
        super().__init__()
        self.cfg = cfg = _config(cfg)
        _check_class_dim(c_dim, label_kind)
        self.z_dim = z_dim
        self.class_dim = 0
        self.c_dim = 25  # our contract: c is the camera label
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(cfg=cfg, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          legacy_rays=legacy_rays, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=self.class_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    @property
    def default_camera(self):
        """The scripts' default camera (training.generation.default_camera): EpiGRAF's radius and fov."""
        camera = self.cfg.dataset.camera
        return dict(radius=float(camera.radius), pivot=(0.0, 0.0, 0.0),
                    focal=1 / (2 * math.tan(math.radians(camera.fov) / 2)))

    def progressive_update(self, cur_kimg):
        self.synthesis.progressive_update(cur_kimg)

    @property
    def density_box(self):
        """The side of the cube the tri-planes cover (for --shapes): 2 cube_scale."""
        return 2 * float(self.cfg.dataset.cube_scale)

    def sample_density(self, ws, points, **block_kwargs):
        """softplus of the raw density [N, M, 1] at points [N, M, 3] of the labels' world (for --shapes)."""
        planes = self.synthesis.planes(ws, **block_kwargs)
        return F.softplus(self.synthesis.field(planes, to_epigraf_frame(points))[..., -1:])

    def forward(self, z, c=None, camera_angles=None, camera_angles_cond=None, truncation_psi=1, truncation_cutoff=None,
                update_emas=False, **synthesis_kwargs):
        label = c if c is not None and c.shape[1] == 25 else None
        if label is None and camera_angles is None:
            raise ValueError('EpiGRAF needs cameras: c ([N, 25] labels) or camera_angles ([N, 3]).')
        # The mapping takes the label for the pose it conditions on (the label's in training, the mean at eval).
        ws = self.mapping(z, label if label is not None else z.new_zeros([len(z), 0]), camera_angles=camera_angles_cond,
                          truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, camera_angles=camera_angles, c=label, update_emas=update_emas, **synthesis_kwargs)

# ----------------------------------------------------------------------------------------------
# The discriminator.


@persistence.persistent_class
class Conv2dLayer(sg2.Conv2dLayer):
    """StyleGAN2's convolution, optionally scaling its input channels by 1 + tanh(affine(h)) (EpiGRAF's hyper_mod)."""

    def __init__(self, in_channels, out_channels, kernel_size, c_dim=0, hyper_mod=False, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        if hyper_mod and c_dim <= 0:
            raise ValueError('A hyper-modulated convolution needs c_dim > 0.')
        self.affine = sg2.FullyConnectedLayer(c_dim, in_channels, bias_init=0) if hyper_mod else None

    def forward(self, x, c=None, gain=1):
        if self.affine is not None:
            x = (x * (1.0 + self.affine(c).tanh().unsqueeze(2).unsqueeze(3))).to(x.dtype)
        return super().forward(x, gain=gain)


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """StyleGAN2's resnet D block with a stride `down` (1 for EpiGRAF's leading blocks) and hyper-modulated conv1."""

    def __init__(self, cfg, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 activation='lrelu', resample_filter=[1, 3, 3, 1], conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, freeze_layers=0, down=2, c_dim=0, hyper_mod=False):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'DiscriminatorBlock in_channels must be 0 or {tmp_channels}, got {in_channels}.')
        self.cfg = _config(cfg)
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', sg2.upfirdn2d.setup_filter(resample_filter))
        self.num_layers = 4
        trainable = [first_layer_idx + i >= freeze_layers for i in range(4)]
        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last, c_dim=c_dim)
        self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                   trainable=trainable[0], **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable[1], **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=down,
                                 hyper_mod=hyper_mod, trainable=trainable[2], resample_filter=resample_filter, **common)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=down, trainable=trainable[3],
                                resample_filter=resample_filter, **common)

    def forward(self, x, img, c=None, force_fp32=False):
        dtype, memory_format = sg2._block_precision(self.use_fp16, self.channels_last, (x if x is not None else img).device,
                                                    force_fp32)
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0:
            y = self.fromrgb(img.to(dtype=dtype, memory_format=memory_format), c=c)
            x = x + y if x is not None else y
        y = self.skip(x, c=c, gain=np.sqrt(0.5))
        x = self.conv0(x, c=c)
        x = self.conv1(x, c=c, gain=np.sqrt(0.5))
        return y.add_(x)


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """EpiGRAF's patch discriminator: D(img, c, patch_params, camera_angles) -> logits [N, 1] (the official gives [N])."""

    label_kind = 'camera'

    def __init__(self, cfg, c_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4,
                 conv_clamp=256, cmap_dim=None, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={},
                 patch_resolution=None):
        super().__init__()
        self.cfg = cfg = _config(cfg)
        _check_class_dim(c_dim)
        c_dim = 0
        self.c_dim = c_dim
        # Official: img_resolution is the patch's, the blocks start at it times 2 ** extra blocks. Our loop
        # passes the dataset's img_resolution with patch_resolution (they must agree with the extra blocks).
        if patch_resolution is not None and patch_resolution * 2 ** cfg.num_additional_start_blocks != img_resolution:
            raise ValueError(f'{img_resolution}x{img_resolution} images seen as {patch_resolution}x{patch_resolution} '
                             f'patches need log2({img_resolution} / {patch_resolution}) leading stride-1 blocks, not '
                             f'num_additional_start_blocks={cfg.num_additional_start_blocks}.')
        self.patch_resolution = img_resolution if patch_resolution is None else patch_resolution
        self.img_resolution = self.patch_resolution * 2 ** cfg.num_additional_start_blocks
        self.img_resolution_log2 = int(np.log2(self.img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        cmap_dim = channels[4] if cmap_dim is None else cmap_dim
        self.img_channels = img_channels
        self.scalar_enc = ScalarEncoder1d(coord_dim=3, x_multiplier=1000.0, const_emb_dim=256) \
            if cfg.patch.patch_params_cond else None
        if c_dim == 0 and self.scalar_enc is None and not cfg.camera_cond:
            cmap_dim = 0
        hyper_dim = 0
        self.hyper_mod_mapping = None
        if cfg.hyper_mod:
            if self.scalar_enc is None:
                raise ValueError('EpiGRAF hyper_mod needs patch.patch_params_cond.')
            hyper_dim = 512
            self.hyper_mod_mapping = MappingNetwork(z_dim=0, c_dim=self.scalar_enc.get_dim(), w_dim=hyper_dim, num_ws=None,
                                                    w_avg_beta=None, **mapping_kwargs)
        layer_index = 0
        for index, res in enumerate(self.block_resolutions):
            block = DiscriminatorBlock(cfg, channels[res] if res < self.img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, img_channels=img_channels,
                                       first_layer_idx=layer_index, use_fp16=res >= fp16_resolution,
                                       down=1 if index < cfg.num_additional_start_blocks else 2, c_dim=hyper_dim,
                                       hyper_mod=cfg.hyper_mod, conv_clamp=conv_clamp, **block_kwargs)
            setattr(self, f'b{res}', block)
            layer_index += block.num_layers
        conditioning_dim = c_dim + (0 if self.scalar_enc is None else self.scalar_enc.get_dim())
        self.head_mapping = None
        # Official: only with a label or the patch code, so a camera-conditioned D without patches (whose
        # cmap_dim stays 512) fails; here the camera alone also gets its head.
        if c_dim > 0 or self.scalar_enc is not None or cfg.camera_cond:
            self.head_mapping = MappingNetwork(z_dim=0, c_dim=conditioning_dim, camera_cond=cfg.camera_cond,
                                               camera_cond_drop_p=cfg.camera_cond_drop_p,
                                               camera_raw_scalars=cfg.get('camera_cond_raw', False), w_dim=cmap_dim,
                                               num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = sg2.DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, img_channels=img_channels,
                                            conv_clamp=conv_clamp, **epilogue_kwargs)

    def forward(self, img, c=None, patch_params=None, camera_angles=None, update_emas=False, patch=None, **block_kwargs):
        _ = update_emas
        n = img.shape[0]
        if camera_angles is None and c is not None and c.shape[1] == 25:
            camera_angles = cameras.epigraf_angles_from_label(c.to(torch.float32))
        if patch_params is not None:
            patch = (patch_params['scales'], patch_params['offsets'])
        hyper = None
        conditioning = torch.zeros([n, 0], device=img.device)
        if self.scalar_enc is not None:
            if patch is None:  # the whole image
                patch = (torch.ones(n, 2, device=img.device), torch.zeros(n, 2, device=img.device))
            scales, offsets = patch
            code = self.scalar_enc(torch.cat([scales[:, :1], offsets], dim=1).to(img.device))
            conditioning = code
            if self.hyper_mod_mapping is not None:
                hyper = self.hyper_mod_mapping(z=None, c=code)
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f'b{res}')(x, img, c=hyper, **block_kwargs)
        cmap = None
        if self.head_mapping is not None:
            cmap = self.head_mapping(z=None, c=conditioning, camera_angles=camera_angles)
        return self.b4(x, None, cmap)


persistence.register_no_exec_module('training.networks_epigraf', [
    FourierEncoder1d, ScalarEncoder1d, MappingNetwork, TriPlaneMLP, SynthesisBlocksSequence, SynthesisNetwork,
    Generator, Conv2dLayer, DiscriminatorBlock, Discriminator])
# The patch encoder's learned embedding is a plain torch module (its official state_dict name); in our
# pickles it is rebuilt by ScalarEncoder1d, so the loader keeps only its tensor.
persistence.register_no_exec_plain_module('torch.nn.modules.sparse', 'Embedding')

# Official EpiGRAF pickles embed src/training/networks_epigraf.py, layers.py, networks_stylegan2.py and
# networks_discriminator.py: recognised by their top-level names (never run), rebuilt from our classes.
persistence.register_no_exec_module('epigraf.networks_epigraf', [TriPlaneMLP, SynthesisBlocksSequence, SynthesisNetwork,
                                                                 Generator],
                                    signature=['tri_plane_renderer', 'nerf_renderer', 'TriPlaneMLP',
                                               'SynthesisBlocksSequence', 'SynthesisNetwork', 'Generator'])
persistence.register_no_exec_module('epigraf.layers', [sg2.FullyConnectedLayer, MappingNetwork, Conv2dLayer,
                                                       ScalarEncoder1d, FourierEncoder1d],
                                    signature=['FullyConnectedLayer', 'MappingNetwork', 'Conv2dLayer', 'ScalarEncoder1d',
                                               'FourierEncoder1d'])
persistence.register_no_exec_module('epigraf.networks_stylegan2', [sg2.SynthesisLayer, sg2.ToRGBLayer, sg2.SynthesisBlock],
                                    signature=['modulated_conv2d', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
                                               'SynthesisNetwork', 'Generator'])
persistence.register_no_exec_module('epigraf.networks_discriminator', [DiscriminatorBlock, sg2.MinibatchStdLayer,
                                                                       sg2.DiscriminatorEpilogue, Discriminator],
                                    signature=['DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
                                               'Discriminator'])


def _official_generators_render_official_rays(meta):
    """An official EpiGRAF Generator (no legacy_rays argument, its source defines tri_plane_renderer) gets EpiGRAF's ray grid."""
    kwargs = meta.state.get('_init_kwargs') if isinstance(meta.get('state'), dict) else None
    if (meta.get('class_name') == 'Generator' and isinstance(kwargs, dict) and 'legacy_rays' not in kwargs
            and 'tri_plane_renderer' in persistence._top_level_names(meta.module_src)):
        meta.state['_init_kwargs'] = dict(kwargs, legacy_rays=True)
    return meta


persistence.import_hook(_official_generators_render_official_rays)
