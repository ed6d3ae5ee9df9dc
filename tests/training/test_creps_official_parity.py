"""Our CREPS generator (training/networks_creps.py) computes the official CREPS function: an oracle test.

How the fixture was recorded. tests/data/creps_official_outputs.npz was written by
tests/data/record_creps_official_outputs.py from the OFFICIAL VinAIResearch/CREPS
training/networks_creps.py (run from a checkout outside this repository, imported under the name
`creps_official_networks` against our torch_utils, whose misc/persistence/bias_act have the official
API). It built a tiny official Generator (z_dim=w_dim=32, c_dim=0, 16x16x3, 2 mapping layers,
channel_base=256, channel_max=64, default biline_channels), eval mode, overwrote every parameter and
buffer with `fill_deterministic` (a function of the tensor's name and shape only, numpy legacy
RandomState; the `coords` buffer keeps its linspace) and stored, in float32 with `force_fp32=True`:
the mapping output for fixed z (psi 1 and 0.7), synthesis images for broadcast ws and for a different
random w per layer, and images at scales 2, 0.5 and 1.5 made the way the official gen_images.py does it
(the buffer `synthesis.b4.input.coords` replaced by a longer or shorter linspace).

Why it is an independent oracle. The expected numbers come from the official code, not from ours and
not from a re-derivation of the paper: the only shared pieces are torch_utils' elementwise ops (bias_act
and friends, themselves tested against the official ones) and the weight-filling rule, which only picks
the numbers and is applied by tensor name to both networks. Any difference in how the layers are wired
(which w each layer takes, which blocks' skip outputs are composed, axis and slot layouts, gains) changes
the images by far more than the 1e-3 tolerance; the recording checked that every one of the num_ws w's
moves the image and that no layer reaches the output clamp, so the clamp cannot hide a difference.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

from training import networks_creps

DATA = pathlib.Path(__file__).resolve().parents[1] / 'data'
FIXTURE = DATA / 'creps_official_outputs.npz'
TOL = 1e-3


def _load_recorder():
    spec = importlib.util.spec_from_file_location('record_creps_official_outputs',
                                                  DATA / 'record_creps_official_outputs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recorder = _load_recorder()


@pytest.fixture(scope='module')
def fixture():
    with np.load(FIXTURE) as f:
        data = {k: f[k] for k in f.files}
    data['config'] = json.loads(str(data['config']))
    return data


@pytest.fixture(scope='module')
def G(fixture):
    kwargs = fixture['config']['generator_kwargs']
    assert kwargs == recorder.CONFIG
    torch.manual_seed(0)
    G = networks_creps.Generator(**kwargs).eval()
    assert G.num_ws == fixture['config']['num_ws']
    recorder.fill_deterministic(G, fixture['config']['fill_seed'])
    return G


def max_err(ours, expected):
    ours = ours.detach().cpu().numpy()
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    return float(np.abs(ours.astype(np.float64) - expected.astype(np.float64)).max())


def test_fixture_is_small_and_complete(fixture):
    assert FIXTURE.stat().st_size < 100_000
    expected_keys = {'z', 'ws', 'ws_trunc', 'ws_mixed', 'img', 'img_mixed', 'config'}
    expected_keys |= {f'img_scale_{tag}' for tag in recorder.SCALES}
    assert expected_keys <= set(fixture)


def test_tensor_names_and_shapes_match_what_the_rule_fills(G):
    # Every tensor of ours gets a value from the rule (the rule raises on an unknown kind), and the
    # coords buffer keeps its linspace.
    for name, t in list(G.named_parameters()) + list(G.named_buffers()):
        values = recorder.fill_values(name, t.shape)
        if values is None:
            assert name.endswith('coords')
        else:
            np.testing.assert_array_equal(t.detach().numpy(), values, err_msg=name)
    assert torch.equal(G.synthesis.b4.input.coords, recorder.line_coords(G.img_resolution))


@torch.no_grad()
def test_mapping(G, fixture):
    z = torch.from_numpy(fixture['z'])
    assert max_err(G.mapping(z, None), fixture['ws']) <= 1e-5
    assert max_err(G.mapping(z, None, truncation_psi=fixture['config']['truncation_psi']), fixture['ws_trunc']) <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize('ws_key,img_key', [('ws', 'img'), ('ws_mixed', 'img_mixed')],
                         ids=['broadcast_ws', 'per_layer_ws'])
def test_synthesis_at_scale_1(G, fixture, ws_key, img_key):
    ws = torch.from_numpy(fixture[ws_key])
    err = max_err(G.synthesis(ws, force_fp32=True), fixture[img_key])
    assert err <= TOL, f'max abs error {err:.3g} against the official {img_key}'


@torch.no_grad()
@pytest.mark.parametrize('tag', sorted(recorder.SCALES))
def test_synthesis_at_other_scales(G, fixture, tag):
    scale = recorder.SCALES[tag]
    coords_before = G.synthesis.b4.input.coords.clone()
    img = G.synthesis(torch.from_numpy(fixture['ws']), scale=scale, force_fp32=True)
    assert torch.equal(G.synthesis.b4.input.coords, coords_before), 'rendering at another scale changed the coords buffer'
    assert img.shape[-1] == int(G.img_resolution * scale)
    err = max_err(img, fixture[f'img_scale_{tag}'])
    assert err <= TOL, f'max abs error {err:.3g} against the official image at scale {scale}'


@torch.no_grad()
def test_full_generator_matches_mapping_then_synthesis(G, fixture):
    z = torch.from_numpy(fixture['z'])
    err = max_err(G(z, None, force_fp32=True), fixture['img'])
    assert err <= TOL, f'max abs error {err:.3g} against the official G(z)'
