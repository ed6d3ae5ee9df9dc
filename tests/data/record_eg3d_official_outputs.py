"""Record tests/data/eg3d_official_outputs.npz: outputs of the OFFICIAL EG3D networks on fixed weights.

Usage (the official code is not part of this repository and must not be copied into it):

    PYTHONPATH=/path/to/eg3d/eg3d:. python tests/data/record_eg3d_official_outputs.py [--out PATH]

`/path/to/eg3d/eg3d` is the folder of NVlabs/eg3d that holds `training/` (triplane.py,
superresolution.py, dual_discriminator.py, networks_stylegan2.py, volumetric_rendering/). It must come
first on the path: its `training` package is imported instead of ours, while `torch_utils` and `dnnlib`
come from this repository (same API). This script imports nothing else from this repository, so the
parity test can load it for `fill_values` without the official code.

Deterministic mode, as our `rendering_kwargs['jitter'] = False`: the official renderer draws the
stratified jitter with torch.rand_like and the importance samples with sample_pdf(det=False). While
recording, torch.rand_like inside ImportanceRenderer.sample_stratified returns zeros and sample_pdf runs
with det=True (evenly spaced u). Nothing else is changed. Noise: backbone noise_mode='const', the
super-resolution's own 'none' (the official default).

Recorded (float32, CPU, eval mode, no grad):
* `z` [2, 512], `c` [2, 25] (two cameras on EG3D's FFHQ orbit, radius 2.7, pivot (0, 0, 0.2)),
  `ws` = G.mapping(z, c), `ws_trunc` (psi 0.7);
* for each rendering case in CASES: `<case>_image`, `<case>_image_raw`, `<case>_image_depth` =
  G.synthesis(ws, c, neural_rendering_resolution=NRR, noise_mode='const') with G.rendering_kwargs
  updated by the case (`<case>_image` of the cases after 'fixed': every 4th row and column);
* `sample_points` [2, 64, 3] and `sample_sigma`, `sample_rgb` = G.sample_mixed(points, dirs, ws);
* `d_logits` = D({'image', 'image_raw'} of the 'fixed' case, c);
* `resize_<mode>` = filtered_resizing(fixed_image, RESIZE_TO, D.resample_filter, mode) for the official modes;
* `config`: JSON with the constructor kwargs and everything else needed to redo the calls.

Weights are not the official initialisation: every parameter and buffer is overwritten by
`fill_values`, a function of the tensor's qualified name and shape only (numpy's legacy RandomState).
"""

import argparse
import json
import pathlib
import zlib
from unittest import mock

import numpy as np
import torch

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / 'eg3d_official_outputs.npz'

RENDERING_KWARGS = dict(
    image_resolution=128, disparity_space_sampling=False, clamp_mode='softplus',
    superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
    gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
    reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=12, depth_resolution_importance=12,
    ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
# EG3D's train.py kwargs for a 128x128 dataset, with small channel counts (the SR module fixes its own).
G_KWARGS = dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2), channel_base=1024, channel_max=64,
                fused_modconv_default='inference_only', rendering_kwargs=RENDERING_KWARGS, num_fp16_res=0,
                sr_num_fp16_res=4, sr_kwargs=dict(channel_base=1024, channel_max=64,
                                                  fused_modconv_default='inference_only'),
                conv_clamp=None, c_dim=25, img_resolution=128, img_channels=3)
D_KWARGS = dict(c_dim=25, img_resolution=128, img_channels=3, channel_base=1024, channel_max=64, num_fp16_res=4,
                conv_clamp=256, disc_c_noise=0.0, block_kwargs=dict(freeze_layers=0), mapping_kwargs={},
                epilogue_kwargs=dict(mbstd_group_size=2))
# Rendering cases: updates of G.rendering_kwargs.
CASES = {
    'fixed': {},
    'auto': dict(ray_start='auto', ray_end='auto', box_warp=1.6, white_back=True),
    'coarse': dict(depth_resolution_importance=0, depth_resolution=16),
}
NRR = 16
FILL_SEED = 0
Z_SEED = 1
POINTS_SEED = 2
BATCH = 2
TRUNCATION_PSI = 0.7
YAWS = (np.pi / 2 + 0.3, np.pi / 2 - 0.2)
PITCH = np.pi / 2 - 0.1
FOCAL = 4.2647
RESIZE_MODES = ('antialiased', 'classic', 'none', 0.5)
RESIZE_TO = 24  # filtered_resizing(fixed_image [128], RESIZE_TO): a downsampling, where the modes differ
MAPPING_LR_MULTIPLIER = 0.01

# ----------------------------------------------------------------------------------------------


def fill_values(name, shape, seed=FILL_SEED):
    """The deterministic float32 value of tensor `name`, or None for one that keeps its value (filters).

    Each tensor draws from RandomState((seed + crc32(name)) % 2**32). Scales keep the tiny network's
    activations sane: mapping weights N(0,1)/0.01 and biases 0.1 N(0,1)/0.01 (effective 0.1 N(0,1));
    `*.affine.bias` 1 + 0.1 N(0,1); other biases 0.1 N(0,1), except the decoder's density output,
    2 + N(0,1), so that rays gather visible opacity; `noise_strength` 0.1 N(0,1); other tensors N(0,1);
    `w_avg` 0.1 N(0,1).
    """
    leaf = name.rsplit('.', 1)[-1]
    if leaf == 'resample_filter':
        return None
    rnd = np.random.RandomState((seed + zlib.crc32(name.encode('utf-8'))) % 2**32)
    x = rnd.standard_normal(tuple(shape))
    in_mapping = '.mapping.' in f'.{name}'
    if leaf == 'weight':
        x = x / MAPPING_LR_MULTIPLIER if in_mapping else x
    elif leaf == 'bias':
        if in_mapping:
            x = x * (0.1 / MAPPING_LR_MULTIPLIER)
        elif name.endswith('.affine.bias'):
            x = 1 + 0.1 * x
        elif name == 'decoder.net.2.bias':
            x = 0.1 * x
            x[0] = 2 + x[0] * 10
        else:
            x = 0.1 * x
    elif leaf in ('noise_strength', 'w_avg'):
        x = 0.1 * x
    elif leaf not in ('const', 'noise_const'):
        raise ValueError(f'fill_values: no rule for tensor {name!r}')
    return np.asarray(x, dtype=np.float32)


@torch.no_grad()
def fill_deterministic(module, seed=FILL_SEED):
    """Overwrite every parameter and buffer of `module` in place by `fill_values`."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        values = fill_values(name, tensors[name].shape, seed)
        if values is not None:
            tensors[name].copy_(torch.from_numpy(values))
    return module


def camera_labels():
    """[BATCH, 25] labels: EG3D's LookAt orbit camera (OpenCV cam2world) + FFHQ intrinsics."""
    labels = []
    pivot = np.array([0, 0, 0.2])
    for yaw in YAWS:
        origin = pivot + 2.7 * np.array([np.sin(PITCH) * np.cos(np.pi - yaw), np.cos(PITCH),
                                         np.sin(PITCH) * np.sin(np.pi - yaw)])
        forward = (pivot - origin) / np.linalg.norm(pivot - origin)
        right = np.cross(np.array([0, 1, 0]), forward)
        right = -right / np.linalg.norm(right)
        up = np.cross(forward, right)
        cam2world = np.eye(4)
        cam2world[:3, 0], cam2world[:3, 1], cam2world[:3, 2], cam2world[:3, 3] = right, up, forward, origin
        intrinsics = np.array([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1]])
        labels.append(np.concatenate([cam2world.reshape(-1), intrinsics.reshape(-1)]))
    return np.stack(labels).astype(np.float32)


def deterministic_renderer(renderer_module):
    """Context: the official ImportanceRenderer without jitter and with evenly spaced importance samples."""
    cls = renderer_module.ImportanceRenderer
    stratified, pdf = cls.sample_stratified, cls.sample_pdf

    def sample_stratified(self, *args, **kwargs):
        with mock.patch.object(torch, 'rand_like', torch.zeros_like):
            return stratified(self, *args, **kwargs)

    def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
        return pdf(self, bins, weights, N_importance, det=True, eps=eps)

    return mock.patch.multiple(cls, sample_stratified=sample_stratified, sample_pdf=sample_pdf)

# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def record():
    import training.triplane as official_triplane
    import training.dual_discriminator as official_dual
    import training.volumetric_rendering.renderer as official_renderer

    torch.manual_seed(0)  # Only the constructors' initial values; all of them are overwritten below.
    G = fill_deterministic(official_triplane.TriPlaneGenerator(**G_KWARGS).eval())
    D = fill_deterministic(official_dual.DualDiscriminator(**D_KWARGS).eval())
    z = torch.from_numpy(np.random.RandomState(Z_SEED).standard_normal([BATCH, G.z_dim]).astype(np.float32))
    c = torch.from_numpy(camera_labels())
    out = dict(z=z, c=c, ws=G.mapping(z, c), ws_trunc=G.mapping(z, c, truncation_psi=TRUNCATION_PSI))
    base = dict(G.rendering_kwargs)
    with deterministic_renderer(official_renderer):
        for case, update in CASES.items():
            G.rendering_kwargs = {**base, **update}
            images = G.synthesis(out['ws'], c, neural_rendering_resolution=NRR, noise_mode='const')
            for key, value in images.items():
                # Beyond the first case, every 4th pixel of the super-resolved image keeps the file small.
                out[f'{case}_{key}'] = value[..., ::4, ::4] if key == 'image' and case != 'fixed' else value
        G.rendering_kwargs = base
        rnd = np.random.RandomState(POINTS_SEED)
        points = torch.from_numpy((rnd.uniform(-0.5, 0.5, [BATCH, 64, 3])).astype(np.float32))
        sample = G.sample_mixed(points, torch.zeros_like(points), out['ws'], noise_mode='const')
    out.update(sample_points=points, sample_sigma=sample['sigma'], sample_rgb=sample['rgb'])
    out['d_logits'] = D({'image': out['fixed_image'], 'image_raw': out['fixed_image_raw']}, c.clone())
    for mode in RESIZE_MODES:
        out[f'resize_{mode}'] = official_dual.filtered_resizing(out['fixed_image'], RESIZE_TO, D.resample_filter,
                                                                filter_mode=mode)

    arrays = {k: v.numpy().astype(np.float32) for k, v in out.items()}
    for k, v in arrays.items():
        assert np.isfinite(v).all(), k
    arrays['config'] = np.array(json.dumps(dict(
        G_kwargs=G_KWARGS, D_kwargs=D_KWARGS, cases=CASES, nrr=NRR, fill_seed=FILL_SEED, z_seed=Z_SEED,
        points_seed=POINTS_SEED, truncation_psi=TRUNCATION_PSI, resize_modes=[str(m) for m in RESIZE_MODES],
        torch_version=torch.__version__, numpy_version=np.__version__), sort_keys=True))
    return arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT, type=pathlib.Path, help='output .npz')
    args = parser.parse_args()
    arrays = record()
    np.savez_compressed(args.out, **arrays)
    for k, v in arrays.items():
        print(f'{k:22s} {v}' if k == 'config' else
              f'{k:22s} {str(v.shape):18s} min={v.min():.4g} max={v.max():.4g} mean={v.mean():.4g}')
    print(f'wrote {args.out} ({args.out.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
