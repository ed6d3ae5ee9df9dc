"""Record tests/data/epigraf_official_outputs.npz: outputs of the OFFICIAL EpiGRAF networks on fixed weights.

Usage (the official code is not part of this repository and must not be copied into it):

    PYTHONPATH=/path/to/epigraf:/path/to/omegaconf_pkgs python tests/data/record_epigraf_official_outputs.py [--out PATH]

`/path/to/epigraf` is a folder holding the official `src/training/` of universome/epigraf (with an empty
`src/__init__.py` and `src/training/__init__.py`); its `src/torch_utils` and `src/dnnlib` are this
repository's torch_utils and dnnlib (symbolic links: the official ones are StyleGAN3's, with the same API),
and OmegaConf must be importable (EpiGRAF's networks take an OmegaConf DictConfig). This script imports
nothing else from this repository, so the parity test can load it for `fill_values` and the constants
without the official code or OmegaConf.

Official sources used (the stored copies of each file; the tensor spec
tests/data/spec/epigraf_official_tensors.json was recorded at bda8d4770209e87d7df4dac2528533b3872aa2d2):
* src/training/networks_epigraf.py @ 6314b1046b66e6c5ee908197ec33ce93ac9ee5b1 (its cfg keys are the spec's);
* src/training/layers.py @ 9047d3120368529ee6e3fe5cbc822cd2a2da98a9 (MappingNetwork with camera_raw_scalars,
  camera_cond_noise_std);
* src/training/rendering.py @ 20824842635502514093a43895d74f09be52ec04;
* src/training/networks_discriminator.py @ e074e3f8cdd5e637f478f34aaf3bd942b05139aa (reads cfg.camera_cond_raw
  and cfg.camera_cond_noise_std, as the spec's D cfg);
* src/training/networks_stylegan2.py and training_utils.py @ 26ff3575985ce1c62d5c75db3bf58f6972f4cadd;
* src/training/networks_inr_gan.py @ 81d1c11a7c1bb26fb60799a6671c0fe6500025a5 up to INR (the spherical background's
  network), networks_epigraf.SynthesisNetwork.render_spherical_bg and rendering.compute_bg_points,
  add_noise_to_interval, depth2pts_outside from the stored copies;
* src/training/networks_stylegan3.py: a stub defining the SynthesisNetwork networks_epigraf.py imports at top (used
  only by the 'stylegan3-r' backbone, not built here).

Deterministic variant, as our `jitter=False, det=True`: the official render always jitters its coarse
depths (transform_points(perturb=True) -> perturb_points, pi-GAN's stratified sampling) and draws the
importance samples with sample_pdf(det=False). While recording, networks_epigraf.transform_points is
called with perturb=False (the plain linspace(ray_start, ray_end, num_ray_steps)) and
networks_epigraf.sample_pdf with det=True (evenly spaced u). Nothing else is changed. Eval mode: the
density noise (nerf_noise_std) is 0; the tri-plane backbone runs with noise_mode='const'.

Networks (float32, CPU, eval mode, no grad), tiny but with the structure of the spec's FFHQ config:
'G' (camera_cond False), 'G_gpc' (the README's GPC variant: mapping camera_cond True with a
mean_camera_pose tensor) and 'G_sphere' (bg_model.type 'sphere', its INR at cmax G_SPHERE_BG['cmax']); 'D' (camera_cond False) and 'D_gpc' (camera_cond True), both with
patch_params_cond, hyper_mod and one additional stride-1 start block. cfg = the spec's cfg with
G_CFG_UPDATES / D_CFG_UPDATES applied (config['G_kwargs'], config['D_kwargs']).

Weights: each network is built after torch.manual_seed(INIT_SEED[net]) (the official initialisation);
then every bias and `noise_strength` (all zero at init) gets + BIAS_STD * N(0, 1) (a torch Generator
seeded PERTURB_SEED), the density output bias gets + DENSITY_BIAS (so that rays gather visible
opacity), and the tensors with more than MAX_STORED values (D's 1001 x 256 patch embedding and its
512-wide hyper-modulation mapping) are overwritten by `fill_values` (a function of the tensor's name and
shape only), which keeps them out of the file. Stored: `G/<name>`, `D/<name>` for every other tensor;
`G_gpc/<name>`, `D_gpc/<name>` for the tensors the GPC variants do not share with 'G', 'D' (the shared
ones are copied from 'G', 'D' before recording). config['stored'] and config['filled'] list them,
config['names'] all the state_dict names of each network.

Recorded (c is the [2, 0] class label throughout):
* `z` [2, 32], `camera_angles` [2, 3] (yaw, pitch, roll), `patch_scales`, `patch_offsets` [2, 2];
* `<g>_ws` = G.mapping(z, c) (the GPC mapping uses mean_camera_pose), `<g>_image` [2, 3, 16, 16] =
  G(z, c, camera_angles=..., noise_mode='const'), `<g>_depth` [2, 1, 16, 16] (return_depth=True);
* `<g>_patch` [2, 3, 8, 8], `<g>_patch_depth` [2, 1, 8, 8] = G.synthesis(ws, camera_angles,
  patch_params={'scales', 'offsets'}, noise_mode='const'), with G.synthesis.test_resolution set to
  cfg.patch.resolution (8) for the call (official synthesis renders train_resolution only in training);
* `G_gpc_cond_ws`, `G_gpc_cond_image` = the GPC G with camera_angles_cond=camera_angles;
* `G_sphere_bg` [2, 3, 16, 16] = the sphere G's background alone (bg_only=True);
* config['sphere_spec']: (name, shape) of every synthesis.bg_model tensor, and config['sphere_num_ws'], of the
  official Generator of the spec's default FFHQ-512 config with bg_model.type 'sphere' (full size, built only);
* `<d>_logits` [2] = D(G_patch, c, patch_params=..., camera_angles=...) (official: [N]).
"""

import argparse
import copy
import json
import math
import pathlib
import zlib
from unittest import mock

import numpy as np
import torch

DATA = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = DATA / 'epigraf_official_outputs.npz'
SPEC = DATA / 'spec' / 'epigraf_official_tensors.json'
SPEC_G = 'epigraf ffhq512 (default config) G'
SPEC_D = 'epigraf ffhq512 (default config) D'

Z_DIM = W_DIM = 32
RESOLUTION = 16
PATCH_RESOLUTION = 8
G_CFG_UPDATES = {
    'cbase': 256, 'cmax': 32, 'w_dim': W_DIM, 'num_ray_steps': 6,
    'patch': {'resolution': PATCH_RESOLUTION, 'mbstd_group_size': 2},
    'dataset': {'resolution': RESOLUTION},
    'tri_plane': {'res': 16, 'feat_dim': 4, 'mlp': {'hid_dim': 8}},
}
D_CFG_UPDATES = {
    'cbase': 128, 'cmax': 16, 'num_additional_start_blocks': 1, 'mbstd_group_size': 2,
    'patch': {'resolution': PATCH_RESOLUTION, 'mbstd_group_size': 2},
}
G_SPHERE_BG = {'type': 'sphere', 'cmax': 32}  # the release's INR is 128 wide; 32 keeps the file small
MEAN_CAMERA_POSE = [math.pi / 2, math.pi / 2, 0.0]
CAMERA_ANGLES = [[math.pi / 2 + 0.25, math.pi / 2 - 0.1, 0.0], [math.pi / 2 - 0.35, math.pi / 2 + 0.15, 0.0]]
PATCH_SCALES = [[0.5, 0.5], [0.25, 0.25]]
PATCH_OFFSETS = [[0.1, 0.3], [0.6, 0.2]]
BATCH = 2
INIT_SEED = {'G': 0, 'G_gpc': 0, 'G_sphere': 0, 'D': 1, 'D_gpc': 1}
PERTURB_SEED = 2
Z_SEED = 3
FILL_SEED = 4
BIAS_STD = 0.1
DENSITY_BIAS = 4.0
DENSITY_BIAS_NAME = 'synthesis.tri_plane_mlp.model.1.bias'  # [img_channels + 1]: the last entry is the density
MAX_STORED = 20000
NOISE_MODE = 'const'
GENERATORS = ('G', 'G_gpc', 'G_sphere')
DISCRIMINATORS = ('D', 'D_gpc')
BASE = {'G_gpc': 'G', 'G_sphere': 'G', 'D_gpc': 'D'}

# ----------------------------------------------------------------------------------------------


def _update(tree, updates):
    for key, value in updates.items():
        if isinstance(value, dict):
            _update(tree[key], value)
        else:
            tree[key] = value
    return tree


def spec_kwargs(name):
    entry = next(e for e in json.loads(SPEC.read_text()) if e['name'] == name)
    return copy.deepcopy(entry['kwargs'])


def g_kwargs(net):
    """The official Generator's kwargs (JSON: mean_camera_pose as a list) for 'G', 'G_gpc' or 'G_sphere'."""
    kwargs = spec_kwargs(SPEC_G)
    cfg = _update(kwargs['cfg'], G_CFG_UPDATES)
    cfg['camera_cond'] = net == 'G_gpc'
    if net == 'G_sphere':
        _update(cfg['bg_model'], G_SPHERE_BG)
    kwargs.update(img_resolution=RESOLUTION, z_dim=Z_DIM, w_dim=W_DIM, channel_base=cfg['cbase'],
                  channel_max=cfg['cmax'])
    kwargs['mapping_kwargs'].update(camera_cond=cfg['camera_cond'], mean_camera_pose=list(MEAN_CAMERA_POSE))
    return kwargs


def d_kwargs(net):
    kwargs = spec_kwargs(SPEC_D)
    cfg = _update(kwargs['cfg'], D_CFG_UPDATES)
    cfg['camera_cond'] = net == 'D_gpc'
    kwargs.update(img_resolution=PATCH_RESOLUTION, channel_base=cfg['cbase'], channel_max=cfg['cmax'],
                  epilogue_kwargs=dict(mbstd_group_size=cfg['mbstd_group_size']))
    return kwargs


def torch_kwargs(kwargs):
    """JSON kwargs -> constructor kwargs (mean_camera_pose as the tensor the official mapping registers)."""
    kwargs = copy.deepcopy(kwargs)
    mapping = kwargs.get('mapping_kwargs', {})
    if 'mean_camera_pose' in mapping:
        mapping['mean_camera_pose'] = torch.tensor(mapping['mean_camera_pose'], dtype=torch.float32)
    return kwargs


def fill_values(name, shape, seed=FILL_SEED):
    """The float32 value of a filled tensor (more than MAX_STORED values): N(0, 1), as the official init.

    RandomState((seed + crc32(name)) % 2**32); `*mapping.fc<k>.weight` are divided by the mapping's
    lr_multiplier 0.01 (the official FullyConnectedLayer init, randn / lr_multiplier).
    """
    rnd = np.random.RandomState((seed + zlib.crc32(name.encode('utf-8'))) % 2**32)
    x = rnd.standard_normal(tuple(int(s) for s in shape))
    leaf = name.rsplit('.', 1)[-1]
    if leaf != 'weight':
        raise ValueError(f'fill_values: no rule for tensor {name!r}')
    if 'mapping.fc' in name:
        x = x / 0.01
    return np.asarray(x, dtype=np.float32)


def to_fill(state):
    return sorted(name for name, value in state.items() if value.numel() > MAX_STORED)


@torch.no_grad()
def prepare(module, base_state=None):
    """Perturb the zero biases, fill the large tensors; copy the tensors shared with base_state. Returns the filled names."""
    gen = torch.Generator().manual_seed(PERTURB_SEED)
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        if name.endswith('bias') or name.endswith('noise_strength'):
            tensors[name].add_(BIAS_STD * torch.randn(tensors[name].shape, generator=gen))
    if DENSITY_BIAS_NAME in tensors:
        tensors[DENSITY_BIAS_NAME][-1] += DENSITY_BIAS
    filled = to_fill(module.state_dict())
    for name in filled:
        tensors[name].copy_(torch.from_numpy(fill_values(name, tensors[name].shape)))
    if base_state is not None:
        for name, value in base_state.items():
            if name in tensors and tensors[name].shape == value.shape:
                tensors[name].copy_(value)
    return filled


def deterministic(official_ne):
    """Context: the official render without the coarse jitter and with evenly spaced importance samples."""
    transform_points, sample_pdf = official_ne.transform_points, official_ne.sample_pdf

    def transform_points_no_perturb(*args, **kwargs):
        return transform_points(*args, **{**kwargs, 'perturb': False})

    def sample_pdf_det(bins, weights, N_importance, det=False, eps=1e-5):
        return sample_pdf(bins, weights, N_importance, det=True, eps=eps)

    return mock.patch.multiple(official_ne, transform_points=transform_points_no_perturb, sample_pdf=sample_pdf_det)

# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def record():
    from omegaconf import OmegaConf
    import src.training.networks_epigraf as official_ne
    import src.training.networks_discriminator as official_nd

    out = {}
    config = dict(G_kwargs={}, D_kwargs={}, stored={}, filled={}, names={}, init_seed=INIT_SEED, perturb_seed=PERTURB_SEED,
                  z_seed=Z_SEED, fill_seed=FILL_SEED, bias_std=BIAS_STD, density_bias=DENSITY_BIAS,
                  noise_mode=NOISE_MODE, patch_test_resolution=PATCH_RESOLUTION,
                  notes=['deterministic variant: transform_points(perturb=False), sample_pdf(det=True)',
                         '<g>_patch: eval mode with G.synthesis.test_resolution = cfg.patch.resolution'])
    z = torch.from_numpy(np.random.RandomState(Z_SEED).standard_normal([BATCH, Z_DIM]).astype(np.float32))
    c = torch.zeros([BATCH, 0])
    angles = torch.tensor(CAMERA_ANGLES, dtype=torch.float32)
    patch_params = dict(scales=torch.tensor(PATCH_SCALES), offsets=torch.tensor(PATCH_OFFSETS))
    out.update(z=z, camera_angles=angles, patch_scales=patch_params['scales'], patch_offsets=patch_params['offsets'])

    states = {}

    def store(net, module, filled):
        state = module.state_dict()
        base = states.get(BASE.get(net))
        names = [n for n in state if n not in filled and (base is None or n not in base or base[n].shape != state[n].shape)]
        for name in names:
            out[f'{net}/{name}'] = state[name]
        states[net] = {k: v.clone() for k, v in state.items()}
        config['stored'][net], config['filled'][net], config['names'][net] = names, filled, list(state)

    with deterministic(official_ne):
        for net in GENERATORS:
            kwargs = g_kwargs(net)
            config['G_kwargs'][net] = kwargs
            built = torch_kwargs(kwargs)
            built['cfg'] = OmegaConf.create(built['cfg'])
            torch.manual_seed(INIT_SEED[net])
            G = official_ne.Generator(**built).eval()
            store(net, G, prepare(G, states.get(BASE.get(net))))
            out[f'{net}_ws'] = G.mapping(z, c)
            out[f'{net}_image'] = G(z, c, camera_angles=angles.clone(), noise_mode=NOISE_MODE)
            out[f'{net}_depth'] = G(z, c, camera_angles=angles.clone(), noise_mode=NOISE_MODE, return_depth=True)
            test_resolution = G.synthesis.test_resolution
            G.synthesis.test_resolution = PATCH_RESOLUTION
            out[f'{net}_patch'] = G.synthesis(out[f'{net}_ws'], camera_angles=angles.clone(), patch_params=patch_params,
                                              noise_mode=NOISE_MODE)
            out[f'{net}_patch_depth'] = G.synthesis(out[f'{net}_ws'], camera_angles=angles.clone(),
                                                    patch_params=patch_params, noise_mode=NOISE_MODE, return_depth=True)
            G.synthesis.test_resolution = test_resolution
            if net == 'G_sphere':
                out['G_sphere_bg'] = G(z, c, camera_angles=angles.clone(), noise_mode=NOISE_MODE, bg_only=True)
            if net == 'G_gpc':
                out['G_gpc_cond_ws'] = G.mapping(z, c, camera_angles=angles.clone())
                out['G_gpc_cond_image'] = G(z, c, camera_angles=angles.clone(), camera_angles_cond=angles.clone(),
                                            noise_mode=NOISE_MODE)

    full = spec_kwargs(SPEC_G)
    full['mapping_kwargs']['mean_camera_pose'] = list(MEAN_CAMERA_POSE)  # the spec's is dataset-dependent
    full = torch_kwargs(full)
    full['cfg']['bg_model']['type'] = 'sphere'
    full['cfg'] = OmegaConf.create(full['cfg'])
    full_G = official_ne.Generator(**full)
    config['sphere_spec'] = [[name, list(value.shape)] for name, value in full_G.state_dict().items()
                             if name.startswith('synthesis.bg_model.')]
    config['sphere_num_ws'] = [full_G.num_ws, full_G.synthesis.bg_model.num_ws]
    del full_G

    for net in DISCRIMINATORS:
        kwargs = d_kwargs(net)
        config['D_kwargs'][net] = kwargs
        built = torch_kwargs(kwargs)
        built['cfg'] = OmegaConf.create(built['cfg'])
        torch.manual_seed(INIT_SEED[net])
        D = official_nd.Discriminator(**built).eval()
        store(net, D, prepare(D, states.get(BASE.get(net))))
        out[f'{net}_logits'] = D(out['G_patch'], c, patch_params=patch_params, camera_angles=angles.clone())

    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in out.items()}
    for k, v in arrays.items():
        assert np.isfinite(v).all(), k
    config.update(torch_version=torch.__version__, numpy_version=np.__version__)
    arrays['config'] = np.array(json.dumps(config, sort_keys=True))
    return arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT, type=pathlib.Path, help='output .npz')
    args = parser.parse_args()
    arrays = record()
    np.savez_compressed(args.out, **arrays)
    for k, v in arrays.items():
        if k == 'config' or '/' in k:
            continue
        print(f'{k:22s} {str(v.shape):18s} min={v.min():.4g} max={v.max():.4g} mean={v.mean():.4g} std={v.std():.4g}')
    print(f'{sum("/" in k for k in arrays)} stored tensors; wrote {args.out} ({args.out.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
