"""Record tests/data/creps_official_outputs.npz: outputs of the OFFICIAL CREPS generator on fixed weights.

Usage (the official file is not part of this repository and must not be copied into it):

    python tests/data/record_creps_official_outputs.py \\
        --official-src /path/to/CREPS/training/networks_creps.py [--out tests/data/creps_official_outputs.npz]

The official module imports `torch_utils.misc`, `torch_utils.persistence` and `torch_utils.ops.bias_act`;
it is run against this repository's torch_utils (same API) and imported under the distinct module name
`creps_official_networks`, so it never clashes with our `training.networks_creps`.

What is recorded (all float32, CPU, eval mode, `force_fp32=True` everywhere, because the official head
blocks otherwise run in float16):

* `z` [2, z_dim] and the official mapping outputs `ws` (psi=1) and `ws_trunc` (psi=0.7);
* `img` = synthesis(ws): every layer sees the same w;
* `ws_mixed` (a different random w per layer) and `img_mixed` = synthesis(ws_mixed): which w each layer uses;
* `img_scale_<tag>` = synthesis(ws) after replacing the buffer `G.synthesis.b4.input.coords` by
  `linspace(0, 1, int(img_resolution * scale)).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)`, which is how the
  official gen_images.py renders at another scale (`--scale`), for every scale in SCALES;
* `config`: a JSON string with the constructor kwargs, the seeds and the scales.

The weights are not the official initialisation: every parameter and buffer is overwritten by
`fill_deterministic` below, a function of the tensor's qualified name and shape only (numpy's legacy
RandomState, stable across numpy versions). The parity test (tests/training/test_creps_official_parity.py)
imports this same function to fill our generator, whose tensor names equal the official ones.
"""

import argparse
import importlib.util
import json
import pathlib
import sys
import zlib

import numpy as np
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / 'creps_official_outputs.npz'

CONFIG = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
              channel_base=256, channel_max=64)
FILL_SEED = 0       # fill_deterministic(G, FILL_SEED)
Z_SEED = 1          # z = RandomState(Z_SEED).standard_normal([BATCH, z_dim])
WS_MIXED_SEED = 2   # ws_mixed = RandomState(WS_MIXED_SEED).standard_normal([BATCH, num_ws, w_dim])
BATCH = 2
TRUNCATION_PSI = 0.7
SCALES = {'2': 2.0, '0p5': 0.5, '1p5': 1.5}   # npz key suffix -> scale
MAPPING_LR_MULTIPLIER = 0.01                  # MappingNetwork default, which CONFIG keeps

# ----------------------------------------------------------------------------------------------


def fill_values(name, shape, seed=FILL_SEED):
    """The deterministic float32 value of the tensor `name` (a qualified parameter or buffer name), or None
    for a tensor that keeps its constructed value (the `coords` buffers, which must stay a linspace).

    Each tensor draws from its own stream, RandomState((seed + crc32(name)) % 2**32), so the values do not
    depend on which other tensors exist. Scales keep the activations of the tiny network in a sane range:
    * mapping layers: weight N(0,1)/lr_multiplier and bias 10*N(0,1), i.e. effective weights N(0,1)/sqrt(in)
      and effective biases 0.1*N(0,1) after the layer's gains;
    * `*.affine.bias`: 1 + 0.1*N(0,1) (the official bias_init is 1); other biases 0.1*N(0,1);
    * every other weight N(0,1) (the layers apply their own gains or demodulate);
    * `freqs`: 10*N(0,1) (the official bandwidth); `w_avg`: 0.1*N(0,1).
    """
    leaf = name.rsplit('.', 1)[-1]
    if leaf == 'coords':
        return None
    rnd = np.random.RandomState((seed + zlib.crc32(name.encode('utf-8'))) % 2**32)
    x = rnd.standard_normal(tuple(shape))
    if leaf == 'weight':
        x = x / MAPPING_LR_MULTIPLIER if name.startswith('mapping.') else x
    elif leaf == 'bias':
        if name.startswith('mapping.'):
            x = x * (0.1 / MAPPING_LR_MULTIPLIER)
        elif name.endswith('.affine.bias'):
            x = 1 + 0.1 * x
        else:
            x = 0.1 * x
    elif leaf == 'freqs':
        x = 10 * x
    elif leaf == 'w_avg':
        x = 0.1 * x
    else:
        raise ValueError(f'fill_values: no rule for tensor {name!r}')
    return x.astype(np.float32)


@torch.no_grad()
def fill_deterministic(module, seed=FILL_SEED):
    """Overwrite every parameter and buffer of `module` in place by `fill_values`, in sorted name order."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    for name in sorted(tensors):
        values = fill_values(name, tensors[name].shape, seed)
        if values is not None:
            tensors[name].copy_(torch.from_numpy(values))
    return module


def line_coords(length):
    """The official gen_images.py `make_coords`, with the length as an int: [1, length, 2, 1] in [0, 1]."""
    return torch.linspace(0, 1, length).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)

# ----------------------------------------------------------------------------------------------


def load_official(official_src):
    """Import the official networks_creps.py as `creps_official_networks`, against our torch_utils."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    name = 'creps_official_networks'
    spec = importlib.util.spec_from_file_location(name, str(official_src))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # persistence.persistent_class reads the module's source from sys.modules.
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def record(official_src):
    official = load_official(official_src)
    torch.manual_seed(0)  # Only the constructor's initial values; all of them are overwritten below.
    G = official.Generator(**CONFIG).eval()
    fill_deterministic(G, FILL_SEED)
    coords_at_1 = G.synthesis.b4.input.coords.clone()
    assert torch.equal(coords_at_1, line_coords(CONFIG['img_resolution']))

    z = torch.from_numpy(np.random.RandomState(Z_SEED).standard_normal([BATCH, CONFIG['z_dim']]).astype(np.float32))
    ws = G.mapping(z, None)
    ws_trunc = G.mapping(z, None, truncation_psi=TRUNCATION_PSI)
    ws_mixed = torch.from_numpy(
        np.random.RandomState(WS_MIXED_SEED).standard_normal([BATCH, G.num_ws, CONFIG['w_dim']]).astype(np.float32))

    out = dict(z=z, ws=ws, ws_trunc=ws_trunc, ws_mixed=ws_mixed)
    out['img'] = G.synthesis(ws, force_fp32=True)
    out['img_mixed'] = G.synthesis(ws_mixed, force_fp32=True)
    for tag, scale in SCALES.items():
        G.synthesis.b4.input.coords = line_coords(int(CONFIG['img_resolution'] * scale))
        out[f'img_scale_{tag}'] = G.synthesis(ws, force_fp32=True)
    G.synthesis.b4.input.coords = coords_at_1

    arrays = {k: v.numpy().astype(np.float32) for k, v in out.items()}
    for k, v in arrays.items():
        assert np.isfinite(v).all(), k
    arrays['config'] = np.array(json.dumps(dict(
        generator_kwargs=CONFIG, num_ws=G.num_ws, fill_seed=FILL_SEED, z_seed=Z_SEED, ws_mixed_seed=WS_MIXED_SEED,
        truncation_psi=TRUNCATION_PSI, scales=SCALES, torch_version=torch.__version__,
        numpy_version=np.__version__), sort_keys=True))
    return arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official-src', required=True, type=pathlib.Path,
                        help='path to the official CREPS training/networks_creps.py')
    parser.add_argument('--out', default=DEFAULT_OUT, type=pathlib.Path, help='output .npz')
    args = parser.parse_args()
    arrays = record(args.official_src)
    np.savez_compressed(args.out, **arrays)
    for k, v in arrays.items():
        print(f'{k:16s} {v}' if k == 'config' else f'{k:16s} {str(v.shape):16s} max|x|={np.abs(v).max():.4g}')
    print(f'wrote {args.out} ({args.out.stat().st_size} bytes)')


if __name__ == '__main__':
    main()
