"""Record tests/data/gram_official_outputs.npz: outputs of the OFFICIAL GRAM networks on fixed weights.

Usage (the official code is not part of this repository and must not be copied into it):

    PYTHONPATH=/path/to/GRAM python tests/data/record_gram_official_outputs.py [--out PATH]

`/path/to/GRAM` is the root of microsoft/GRAM, the folder that holds `generators/` (generators.py,
representations/gram.py, renderers/manifold_renderer.py, renderers/math_utils_torch.py) and
`discriminators/` (discriminators.py, gram_discriminator.py). The official modules are imported only
inside `record()`, so the parity test can load this script for `fill_values` and the constants without
the official code on the path.

GRAM renders deterministically (ManifoldRenderer.render calls get_initial_rays_trig with
randomize=False); nothing is mocked. Two generators, tiny but with the structure of GRAM's configs.py:
'faces' (FFHQ_default: background plane, 24 manifolds, levels 23 -> 8) and 'carla' (CARLA_default:
`normalize: 2` in the representation kwargs, `delta_alpha: 0.02` in the renderer kwargs, no background,
white background, 48 manifolds, levels 35 -> 5).

The official `get_camera_origins(camera_pos)` only works for a batch of one camera (it assigns a [N]
tensor into an [N, 1] slice), which is all the official training ever passes (batch_split makes the
split batch 1). So every batch of N cameras here is rendered as N calls with one (z, camera) pair each,
concatenated; rendering has no coupling between batch entries.

Weights: `representation.sample_network.*` (the manifold predictor) keeps the official geometric
initialisation, drawn after torch.manual_seed(G_INIT_SEED); those tensors are stored as
`G_<net>/<name>` (its `center` is a plain attribute, not a tensor of the state dict: see config). Every
other parameter of G and every parameter of D is overwritten by `fill_values`, a function of the
tensor's qualified name and shape only (numpy's legacy RandomState); they are not stored (the mapping
network alone has 284k values). config['filled'] lists the filled names of each network.

Recorded (float32, CPU, eval mode, no grad), for <net> in ('faces', 'carla'):
* `<net>_z` [3, 16]; `<net>_camera_pos` [3, 2] ((phi, theta): phi the polar angle from +y, theta the
  azimuth in the x-z plane; origin = (sin phi cos theta, cos phi, sin phi sin theta));
  `<net>_camera_origin` [3, 3] = get_camera_origins; `<net>_cam2world` [3, 4, 4] =
  create_cam2world_matrix(normalize_vecs(-origin), origin);
* `<net>_<case>_image` [3, 3, S, S] = G(z, fov, ray_start, ray_end, camera_pos=..., ...) for the cases of
  CASES[<net>] (renderer attributes and call kwargs in config['cases']);
* `<net>_valid_fraction`: scalar, the fraction of (ray, level) pairs of the 'cams' case that are valid
  crossings (is_valid of get_intersections; the background plane is not counted);
  `faces_cams_is_valid` [3, 256, 23] that is_valid itself (before the renderer's sort by distance);
* `faces_cams_depth` [3, 16, 16], `faces_cams_weights` [3, 16, 16, 24], `faces_cams_z_vals`
  [3, 16, 16, 24]: G.experiment(...)'s detailed output for the 'cams' case (sorted by distance; trailing
  singleton dims squeezed); `carla_cams_depth` [3, 16, 16] (NaN, as official, on rays without any valid
  crossing: no background, so the weights sum to 0; counts in config['depth_nan_count']);
* `faces_avg_frequencies`, `faces_avg_phase_shifts` [1, 288]: set on G.representation.rf_network for
  the truncation case (mean of the mapping of the 64 rows of `faces_avg_z`, [64, 16]);
* `<net>_isect_points_in` [1, 5, 64, 3] (5 straight lines through the manifold centre),
  `<net>_isect_levels` [L], and G.representation.sample_network.get_intersections(points, levels) ->
  `<net>_isect_points` [1, 5, L, 3], `<net>_isect_s` [1, 5, 64, 1], `<net>_isect_valid` [1, 5, L, 1];
* `d_input` [2, 3, 32, 32], `d_prediction` [2, 1], `d_position` [2, 2] = GramDiscriminator(32)(d_input)
  (the official D.forward takes only the image and returns (prediction, position));
* `config`: JSON with the constructor kwargs and everything else needed to redo the calls.
"""

import argparse
import json
import math
import pathlib
import zlib

import numpy as np
import torch

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / 'gram_official_outputs.npz'

Z_DIM = 16
IMG_SIZE = 16
G_KWARGS = {
    'faces': dict(z_dim=Z_DIM, img_size=IMG_SIZE, h_stddev=0.3, v_stddev=0.155, h_mean=math.pi * 0.5,
                  v_mean=math.pi * 0.5, sample_dist='gaussian',
                  representation_kwargs=dict(hidden_dim=32, sigma_clamp_mode='softplus',
                                             rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=16,
                                             layer_num_sample=3, center=[0, 0, -1.5], init_radius=0),
                  renderer_kwargs=dict(num_samples=64, num_manifolds=24, levels_start=23, levels_end=8,
                                       last_back=False, white_back=False, background=True)),
    'carla': dict(z_dim=Z_DIM, img_size=IMG_SIZE, h_stddev=math.pi, v_stddev=math.pi * (42.5 / 180),
                  h_mean=math.pi * 0.5, v_mean=math.pi * (42.5 / 180), sample_dist='spherical_uniform',
                  representation_kwargs=dict(hidden_dim=32, normalize=2, sigma_clamp_mode='softplus',
                                             rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=16,
                                             layer_num_sample=3, center=[0, 0, 0], init_radius=0),
                  renderer_kwargs=dict(num_samples=64, num_manifolds=48, levels_start=35, levels_end=5,
                                       delta_alpha=0.02, last_back=False, white_back=True, background=False)),
}
CAMERA = {  # configs.py 'camera': the fov, ray_start, ray_end keyword arguments of G.forward.
    'faces': dict(fov=12, ray_start=0.88, ray_end=1.12),
    'carla': dict(fov=30, ray_start=0.7, ray_end=1.3),
}
CAMERA_POS = {  # [phi, theta] per camera.
    'faces': [[math.pi / 2, math.pi / 2], [math.pi / 2 - 0.15, math.pi / 2 + 0.4], [math.pi / 2 + 0.1, math.pi / 2 - 0.3]],
    'carla': [[math.pi / 4, math.pi / 2], [math.pi / 3, math.pi / 2 + 1.0], [math.pi / 2 - 0.1, math.pi / 2 - 2.0]],
}
# Cases: renderer attribute updates ('renderer') and extra G.forward kwargs ('call').
CASES = {
    'faces': {
        'cams': dict(renderer={}, call={}),
        'cams_lock': dict(renderer=dict(lock_view_dependence=True), call={}),
        'trunc': dict(renderer={}, call=dict(truncation_psi=0.7)),
        'size8': dict(renderer={}, call=dict(img_size=8)),
    },
    'carla': {
        'cams': dict(renderer={}, call={}),
        'size8': dict(renderer={}, call=dict(img_size=8)),
    },
}
G_INIT_SEED = 0       # torch.manual_seed before each G is built: the sample network's official init.
FILL_SEEDS = {'faces': 0, 'carla': 1, 'D': 2}
Z_SEED = 3
AVG_Z_SEED = 4
AVG_Z_COUNT = 64
D_INPUT_SEED = 5
D_IMG_SIZE = 32
D_BATCH = 2
# Intersection probe: 5 lines through the manifold centre (world coordinates = center * 0.24 / 2,
# GramSample's UniformBoxWarp(0.24)), points centre + t * direction, t in linspace(-T, T, 64).
ISECT_DIRECTIONS = [[0, 0, 1], [0.3, 0.1, 1], [-0.4, 0.2, 0.9], [1, 0, 0.2], [0.1, -1, 0.3]]
ISECT_T = {'faces': 0.3, 'carla': 0.6}
ISECT_SAMPLES = 64
MAPPING_LAST = 6      # index of the last Linear of CustomMappingNetwork.network

# ----------------------------------------------------------------------------------------------


def fill_values(name, shape, seed=0):
    """The deterministic float32 value of tensor `name`, or None for one that keeps its value.

    `name` is the qualified name inside GramGenerator or GramDiscriminator. Each tensor draws from
    RandomState((seed + crc32(name)) % 2**32). Rules (scales follow the official initialisers):
    * `representation.sample_network.*`: None (official geometric init, stored in the npz);
    * mapping network `*.mapping_network.network.K.weight` [out, in]: N(0,1) sqrt(2 / 1.04) / sqrt(in)
      (kaiming, leaky 0.2), times 0.25 for the last layer (K = 6);
    * `representation.rf_network.network.0.layer.weight` [out, in]: U(-1/in, 1/in) (first FiLM layer);
    * other 2-D weights of the radiance field: U(-sqrt(6/in)/25, sqrt(6/in)/25) (SIREN, freq 25);
    * biases of G: U(-0.1, 0.1);
    * 4-D (conv) weights of D [out, in, kh, kw]: N(0,1) / sqrt(in kh kw); biases of D: 0.1 N(0,1).
    """
    if 'sample_network.' in name:
        return None
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit('.', 1)[-1]
    rnd = np.random.RandomState((seed + zlib.crc32(name.encode('utf-8'))) % 2**32)
    if name.startswith('representation.'):
        if leaf == 'weight' and len(shape) == 2:
            fan_in = shape[1]
            if '.mapping_network.network.' in name:
                x = rnd.standard_normal(shape) * math.sqrt(2 / (1 + 0.2**2)) / math.sqrt(fan_in)
                if name.endswith(f'.network.{MAPPING_LAST}.weight'):
                    x = x * 0.25
            elif name == 'representation.rf_network.network.0.layer.weight':
                x = rnd.uniform(-1 / fan_in, 1 / fan_in, shape)
            else:
                bound = math.sqrt(6 / fan_in) / 25
                x = rnd.uniform(-bound, bound, shape)
        elif leaf == 'bias' and len(shape) == 1:
            x = rnd.uniform(-0.1, 0.1, shape)
        else:
            raise ValueError(f'fill_values: no rule for tensor {name!r} {shape}')
    else:
        if leaf == 'weight' and len(shape) == 4:
            x = rnd.standard_normal(shape) / math.sqrt(shape[1] * shape[2] * shape[3])
        elif leaf == 'bias' and len(shape) == 1:
            x = 0.1 * rnd.standard_normal(shape)
        else:
            raise ValueError(f'fill_values: no rule for tensor {name!r} {shape}')
    return np.asarray(x, dtype=np.float32)


@torch.no_grad()
def fill_deterministic(module, seed):
    """Overwrite the parameters and buffers of `module` in place by `fill_values`; return the filled names."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    filled = []
    for name in sorted(tensors):
        values = fill_values(name, tensors[name].shape, seed)
        if values is not None:
            tensors[name].copy_(torch.from_numpy(values))
            filled.append(name)
    return filled


def isect_points(net):
    """[1, 5, 64, 3] points on straight lines through the world-space centre of the manifolds."""
    centre = np.array(G_KWARGS[net]['representation_kwargs']['center'], dtype=np.float64) * 0.24 / 2
    t = np.linspace(-ISECT_T[net], ISECT_T[net], ISECT_SAMPLES)
    d = np.array(ISECT_DIRECTIONS, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    points = centre[None, None] + d[:, None] * t[None, :, None]
    return points[None].astype(np.float32)

# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def record():
    import generators.generators as official_generators
    import generators.renderers.manifold_renderer as official_renderer
    import discriminators.discriminators as official_discriminators

    out = {}
    config = dict(G_kwargs=G_KWARGS, camera=CAMERA, camera_pos=CAMERA_POS, cases=CASES, g_init_seed=G_INIT_SEED,
                  fill_seeds=FILL_SEEDS, z_seed=Z_SEED, avg_z_seed=AVG_Z_SEED, avg_z_count=AVG_Z_COUNT,
                  d_input_seed=D_INPUT_SEED, d_img_size=D_IMG_SIZE, isect_directions=ISECT_DIRECTIONS,
                  isect_t=ISECT_T, isect_samples=ISECT_SAMPLES, filled={}, stored={}, valid_fraction={},
                  sample_network_center={}, renderer_attributes={},
                  notes=['Batches of N cameras are N official calls with batch 1, concatenated '
                         '(official get_camera_origins fails for N > 1).',
                         'G_<net>/<name> holds the sample network tensors; the other G tensors and all D '
                         'tensors are fill_values(name, shape, fill_seeds[<net>]).',
                         'faces_cams_* detailed outputs come from G.experiment (same renderer call with '
                         'detailed_output=True).'])
    z_rnd = np.random.RandomState(Z_SEED)
    for net in ('faces', 'carla'):
        torch.manual_seed(G_INIT_SEED)
        G = official_generators.GramGenerator(**G_KWARGS[net]).eval()
        config['filled'][f'G_{net}'] = fill_deterministic(G, FILL_SEEDS[net])
        stored = []
        for name, value in G.state_dict().items():
            if name not in config['filled'][f'G_{net}']:
                out[f'G_{net}/{name}'] = value.detach().clone()
                stored.append(name)
        config['stored'][f'G_{net}'] = stored
        config['sample_network_center'][net] = G.representation.sample_network.center.tolist()
        base_renderer = dict(vars(G.renderer))
        config['renderer_attributes'][net] = base_renderer

        n = len(CAMERA_POS[net])
        z = torch.from_numpy(z_rnd.standard_normal([n, Z_DIM]).astype(np.float32))
        camera_pos = torch.tensor(CAMERA_POS[net], dtype=torch.float32)
        out[f'{net}_z'] = z
        out[f'{net}_camera_pos'] = camera_pos
        origin = torch.cat([official_generators.get_camera_origins(camera_pos[i:i + 1]) for i in range(n)])
        out[f'{net}_camera_origin'] = origin
        out[f'{net}_cam2world'] = official_renderer.create_cam2world_matrix(
            official_renderer.normalize_vecs(-origin), origin)

        if net == 'faces':
            avg_z = torch.from_numpy(np.random.RandomState(AVG_Z_SEED).standard_normal(
                [AVG_Z_COUNT, Z_DIM]).astype(np.float32))
            freq, phase = G.representation.rf_network.mapping_network(avg_z)
            G.representation.rf_network.avg_frequencies = freq.mean(0, keepdim=True)
            G.representation.rf_network.avg_phase_shifts = phase.mean(0, keepdim=True)
            out['faces_avg_z'] = avg_z
            out['faces_avg_frequencies'] = G.representation.rf_network.avg_frequencies
            out['faces_avg_phase_shifts'] = G.representation.rf_network.avg_phase_shifts

        for case, spec in CASES[net].items():
            for key, value in spec['renderer'].items():
                setattr(G.renderer, key, value)
            images = []
            for i in range(n):
                img, pos = G(z[i:i + 1], **CAMERA[net], camera_pos=camera_pos[i:i + 1], **spec['call'])
                assert torch.equal(pos, camera_pos[i:i + 1])
                images.append(img)
            out[f'{net}_{case}_image'] = torch.cat(images)
            if case == 'cams':
                details = [G.experiment(z[i:i + 1], **CAMERA[net], camera_pos=camera_pos[i:i + 1])
                           for i in range(n)]
                exp_img = torch.cat([d[0] for d in details])
                assert torch.allclose(exp_img, out[f'{net}_cams_image'], atol=1e-6), 'experiment != forward'
                keys = ('depth', 'weights', 'z_vals') if net == 'faces' else ('depth',)
                for key in keys:  # depth [1, S, S, 1, 1], weights and z_vals [1, S, S, M, 1] per call
                    value = torch.cat([d[2][key] for d in details]).squeeze(-1)
                    out[f'{net}_cams_{key}'] = value.squeeze(-1) if key == 'depth' else value
                # The valid crossings of this case, as the renderer computes them.
                r = G.renderer
                points_cam, _, rays_d_cam = official_renderer.get_initial_rays_trig(
                    n, r.num_samples, resolution=(IMG_SIZE, IMG_SIZE), device='cpu', fov=CAMERA[net]['fov'],
                    ray_start=CAMERA[net]['ray_start'], ray_end=CAMERA[net]['ray_end'], randomize=False)
                points, _, _, _ = official_renderer.transform_sampled_points(points_cam, rays_d_cam, origin,
                                                                              camera_pos, device='cpu')
                points = points.reshape(n, IMG_SIZE * IMG_SIZE, -1, 3)
                num_levels = r.num_manifolds - 1 if r.background else r.num_manifolds
                levels = torch.linspace(r.levels_start, r.levels_end, num_levels)
                _, _, is_valid = G.representation.get_intersections(points, levels)
                fraction = float(is_valid.mean())
                out[f'{net}_valid_fraction'] = torch.tensor(fraction)
                config['valid_fraction'][net] = fraction
                if net == 'faces':
                    out['faces_cams_is_valid'] = is_valid.squeeze(-1)
            for key in spec['renderer']:
                setattr(G.renderer, key, base_renderer[key])

        # Intersections on fixed lines through the centre.
        points = torch.from_numpy(isect_points(net))
        r = G.renderer
        num_levels = r.num_manifolds - 1 if r.background else r.num_manifolds
        levels = torch.linspace(r.levels_start, r.levels_end, num_levels)
        isect, s, valid = G.representation.sample_network.get_intersections(points, levels)
        out.update({f'{net}_isect_points_in': points, f'{net}_isect_levels': levels, f'{net}_isect_points': isect,
                    f'{net}_isect_s': s, f'{net}_isect_valid': valid})
        config['valid_fraction'][f'{net}_isect'] = float(valid.mean())

    torch.manual_seed(G_INIT_SEED)
    D = official_discriminators.GramDiscriminator(D_IMG_SIZE).eval()
    config['filled']['D'] = fill_deterministic(D, FILL_SEEDS['D'])
    assert len(config['filled']['D']) == len(D.state_dict())
    d_input = torch.from_numpy(np.random.RandomState(D_INPUT_SEED).uniform(
        -1, 1, [D_BATCH, 3, D_IMG_SIZE, D_IMG_SIZE]).astype(np.float32))
    prediction, position = D(d_input)
    out.update(d_input=d_input, d_prediction=prediction, d_position=position)

    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in out.items()}
    for k, v in arrays.items():
        # depth = sum(weights z) / sum(weights) is 0/0 = NaN on rays with no valid crossing (official).
        assert np.isfinite(v).all() or (k.endswith('_depth') and not np.isinf(v).any()), k
        if k.endswith('_depth'):
            config['depth_nan_count'] = {**config.get('depth_nan_count', {}), k: int(np.isnan(v).sum())}
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
        print(f'{k:52s} {v}' if k == 'config' else
              f'{k:52s} {str(v.shape):18s} min={np.nanmin(v):.4g} max={np.nanmax(v):.4g} mean={np.nanmean(v):.4g}')
    print(f'wrote {args.out} ({args.out.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
