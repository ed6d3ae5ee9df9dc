"""Our EG3D networks (training/networks_triplane.py) compute the official EG3D functions: an oracle test.

How the fixture was recorded. tests/data/eg3d_official_outputs.npz was written by
tests/data/record_eg3d_official_outputs.py from the OFFICIAL NVlabs/eg3d code (triplane.py,
superresolution.py, dual_discriminator.py, networks_stylegan2.py, volumetric_rendering/; run from a
copy outside this repository, against our torch_utils and dnnlib). It built a small official
TriPlaneGenerator (128x128 output through SuperresolutionHybrid2X, backbone channel_base 1024 and
channel_max 64, 12 + 12 depth samples) and a DualDiscriminator at 128, overwrote every tensor with
`fill_deterministic` (a function of the tensor's name and shape only), and ran them in eval mode, in
float32, in the official renderer's deterministic variant (zero stratified jitter, sample_pdf with
det=True: exactly our rendering_kwargs['jitter'] = False). Cases: fixed ray bounds with importance
sampling, 'auto' bounds with a white background, and a coarse-only pass.

Why it is an independent oracle: the numbers come from the official code, not from ours. The only
shared pieces are torch_utils' elementwise ops (tested against the official ones elsewhere) and the
weight-filling rule, applied by tensor name to both networks.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

from training import networks_triplane

DATA = pathlib.Path(__file__).resolve().parents[1] / 'data'
FIXTURE = DATA / 'eg3d_official_outputs.npz'
TOL = 1e-3


def _load_recorder():
    spec = importlib.util.spec_from_file_location('record_eg3d_official_outputs', DATA / 'record_eg3d_official_outputs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recorder = _load_recorder()


@pytest.fixture(scope='module')
def fixture():
    with np.load(FIXTURE) as f:
        data = {k: f[k] for k in f.files}
    config = json.loads(str(data.pop('config')))
    data = {k: torch.from_numpy(v) for k, v in data.items()}
    data['config'] = config
    return data


@pytest.fixture(scope='module')
def G(fixture):
    torch.manual_seed(0)
    G = networks_triplane.TriPlaneGenerator(**fixture['config']['G_kwargs']).eval()
    return recorder.fill_deterministic(G)


@pytest.fixture(scope='module')
def D(fixture):
    torch.manual_seed(0)
    return recorder.fill_deterministic(networks_triplane.DualDiscriminator(**fixture['config']['D_kwargs']).eval())


def _close(ours, official, what):
    err = (ours - official).abs().max().item()
    assert err <= TOL, f'{what}: max abs error {err:.3g} (official magnitude {official.abs().max().item():.3g})'


def test_mapping(G, fixture):
    with torch.no_grad():
        _close(G.mapping(fixture['z'], fixture['c']), fixture['ws'], 'ws')
        _close(G.mapping(fixture['z'], fixture['c'], truncation_psi=fixture['config']['truncation_psi']),
               fixture['ws_trunc'], 'ws_trunc')


@pytest.mark.parametrize('case', list(recorder.CASES))
def test_synthesis(G, fixture, case):
    base = dict(G.rendering_kwargs)
    G.rendering_kwargs = {**base, **fixture['config']['cases'][case], 'jitter': False}
    try:
        with torch.no_grad():
            out = G.synthesis(fixture['ws'], fixture['c'], neural_rendering_resolution=fixture['config']['nrr'],
                              noise_mode='const')
    finally:
        G.rendering_kwargs = base
    assert set(out) == {'image', 'image_raw', 'image_depth'}
    if case != 'fixed':
        out['image'] = out['image'][..., ::4, ::4]  # as recorded
    for key in out:
        official = fixture[f'{case}_{key}']
        assert out[key].shape == official.shape, key
        _close(out[key], official, f'{case} {key}')
    # The weights give a render with structure, so the comparison is not of near-constants.
    assert fixture[f'{case}_image_raw'].std().item() > 0.05
    assert fixture[f'{case}_image_depth'].std().item() > 1e-3


def test_sample_mixed(G, fixture):
    with torch.no_grad():
        out = G.sample_mixed(fixture['sample_points'], torch.zeros_like(fixture['sample_points']), fixture['ws'],
                             noise_mode='const')
    _close(out['sigma'], fixture['sample_sigma'], 'sigma')
    _close(out['rgb'], fixture['sample_rgb'], 'rgb')


def test_dual_discriminator(D, fixture):
    with torch.no_grad():
        logits = D({'image': fixture['fixed_image'], 'image_raw': fixture['fixed_image_raw']}, fixture['c'])
    _close(logits, fixture['d_logits'], 'D logits')


@pytest.mark.parametrize('mode', recorder.RESIZE_MODES, ids=str)
def test_filtered_resizing(D, fixture, mode):
    ours = networks_triplane.filtered_resizing(fixture['fixed_image'], recorder.RESIZE_TO, D.resample_filter,
                                               filter_mode=mode)
    _close(ours, fixture[f'resize_{mode}'], f'filtered_resizing {mode}')
