"""Our EpiGRAF networks (training/networks_epigraf.py) compute the official functions: outputs recorded from the official code.

How the fixture was recorded. tests/data/epigraf_official_outputs.npz was written by
tests/data/record_epigraf_official_outputs.py from the OFFICIAL universome/epigraf code
(src/training/networks_epigraf.py, layers.py, rendering.py, networks_discriminator.py,
networks_stylegan2.py, training_utils.py; run from a copy outside this repository, whose licence does not
allow copying it, against our torch_utils and dnnlib, with OmegaConf configs). It built tiny official
Generators (tri-planes 16 x 16 x 3 x 4 from channel_base 256 / channel_max 32, an 8-wide MLP, 6 + 6 ray
steps, 16 x 16 images and 8 x 8 patches), without and with pose conditioning (GPC, mean_camera_pose),
and patch Discriminators (patch_params_cond, hyper_mod, one leading stride-1 block), without and with
camera conditioning; their weights are the official seeded initialisation with perturbed biases, stored
in the npz except the few large D tensors, which are the recorder's `fill_values` (imported here; the
test needs no official code). The official render ran in its deterministic variant
(transform_points(perturb=False), sample_pdf(det=True)), exactly our `jitter=False, det=True`, in eval
mode (no density noise), the tri-plane backbone with noise_mode='const'.

Our networks take the same constructor kwargs (cfg as plain nested dicts) with `legacy_rays=True`
(EpiGRAF's ray grid), load the official state_dicts with strict=True, and are called the official way
(G(z, c, camera_angles=...), G.synthesis(ws, camera_angles=..., patch_params=...), D(img, c,
patch_params=..., camera_angles=...)). Bound: 1e-4 max abs (float32).
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

from training import networks_epigraf as ne

DATA = pathlib.Path(__file__).resolve().parents[1] / 'data'
FIXTURE = DATA / 'epigraf_official_outputs.npz'
ATOL = 1e-4
RENDER = dict(jitter=False, det=True)


def _recorder():
    spec = importlib.util.spec_from_file_location('record_epigraf_official_outputs',
                                                  DATA / 'record_epigraf_official_outputs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDER = _recorder()
with np.load(FIXTURE) as _f:
    RECORDED = {k: _f[k] for k in _f.files}
CONFIG = json.loads(str(RECORDED.pop('config')))
NOISE_MODE = CONFIG['noise_mode']


def _t(key):
    return torch.from_numpy(RECORDED[key])


def official_state(net):
    """The official state_dict of `net`: its stored tensors, those shared with its base network, the filled ones."""
    base = RECORDER.BASE.get(net)
    state = {}
    for name in CONFIG['names'][net]:
        if f'{net}/{name}' in RECORDED:
            state[name] = _t(f'{net}/{name}')
        elif base is not None and f'{base}/{name}' in RECORDED:
            state[name] = _t(f'{base}/{name}')
        else:
            assert name in CONFIG['filled'][net], name
            state[name] = torch.from_numpy(RECORDER.fill_values(name, RECORDER_SHAPES[net][name]))
    return state


def _ours(net):
    if net.startswith('G'):
        return ne.Generator(**RECORDER.torch_kwargs(CONFIG['G_kwargs'][net]), legacy_rays=True)
    return ne.Discriminator(**RECORDER.torch_kwargs(CONFIG['D_kwargs'][net]))


RECORDER_SHAPES = {}


def network(net):
    torch.manual_seed(0)
    module = _ours(net)
    RECORDER_SHAPES[net] = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    module.load_state_dict(official_state(net), strict=True)
    return module.eval()


@pytest.fixture(scope='module', params=RECORDER.GENERATORS)
def generator(request):
    return request.param, network(request.param)


def _close(ours, key):
    official = RECORDED[key]
    ours = ours.detach().numpy()
    assert ours.shape == official.shape, (key, ours.shape, official.shape)
    err = float(np.abs(ours - official).max())
    assert err <= ATOL, f'{key}: max abs error {err:.3g} (official magnitude {np.abs(official).max():.3g})'
    return err


def test_fixture_matches_the_recorder_and_the_spec():
    for net in RECORDER.GENERATORS:
        assert CONFIG['G_kwargs'][net] == json.loads(json.dumps(RECORDER.g_kwargs(net)))
    for net in RECORDER.DISCRIMINATORS:
        assert CONFIG['D_kwargs'][net] == json.loads(json.dumps(RECORDER.d_kwargs(net)))

    def keys(tree, prefix=''):
        return {prefix + k for k in tree} | {x for k, v in tree.items() if isinstance(v, dict)
                                             for x in keys(v, f'{prefix}{k}.')}
    # The tiny configs keep every key of the spec's official configs.
    assert keys(CONFIG['G_kwargs']['G']['cfg']) == keys(RECORDER.spec_kwargs(RECORDER.SPEC_G)['cfg'])
    assert keys(CONFIG['D_kwargs']['D']['cfg']) == keys(RECORDER.spec_kwargs(RECORDER.SPEC_D)['cfg'])
    # Renders with structure: the comparison is not one of near-constants.
    for net in RECORDER.GENERATORS:
        assert RECORDED[f'{net}_image'].std() > 0.1 and RECORDED[f'{net}_depth'].std() > 1e-3


def test_mapping_equals_the_official(generator):
    net, G = generator
    c = torch.zeros([len(_t('z')), 0])
    with torch.no_grad():
        _close(G.mapping(_t('z'), c), f'{net}_ws')
        if net == 'G_gpc':
            _close(G.mapping(_t('z'), c, camera_angles=_t('camera_angles')), 'G_gpc_cond_ws')


@pytest.mark.parametrize('depth', [False, True], ids=['image', 'depth'])
def test_whole_image_equals_the_official(generator, depth):
    net, G = generator
    c = torch.zeros([len(_t('z')), 0])
    with torch.no_grad():
        out = G(_t('z'), c, camera_angles=_t('camera_angles'), noise_mode=NOISE_MODE, return_depth=depth, **RENDER)
    _close(out, f'{net}_depth' if depth else f'{net}_image')


def test_pose_conditioned_image_equals_the_official():
    G = network('G_gpc')
    c = torch.zeros([len(_t('z')), 0])
    with torch.no_grad():
        out = G(_t('z'), c, camera_angles=_t('camera_angles'), camera_angles_cond=_t('camera_angles'),
                noise_mode=NOISE_MODE, **RENDER)
    _close(out, 'G_gpc_cond_image')


@pytest.mark.parametrize('depth', [False, True], ids=['image', 'depth'])
def test_patch_equals_the_official(generator, depth):
    net, G = generator
    patch_params = {'scales': _t('patch_scales'), 'offsets': _t('patch_offsets')}
    assert G.synthesis.train_resolution == CONFIG['patch_test_resolution']
    with torch.no_grad():
        out = G.synthesis(_t(f'{net}_ws'), camera_angles=_t('camera_angles'), patch_params=patch_params,
                          noise_mode=NOISE_MODE, return_depth=depth, **RENDER)
    _close(out, f'{net}_patch_depth' if depth else f'{net}_patch')


@pytest.mark.parametrize('net', RECORDER.DISCRIMINATORS)
def test_discriminator_equals_the_official(net):
    D = network(net)
    patch_params = {'scales': _t('patch_scales'), 'offsets': _t('patch_offsets')}
    img = _t('G_patch')
    with torch.no_grad():
        logits = D(img, torch.zeros([len(img), 0]), patch_params=patch_params, camera_angles=_t('camera_angles'))
    assert logits.shape == (len(img), 1)  # official: [N]
    _close(logits[:, 0], f'{net}_logits')


def test_sphere_background_alone_equals_the_official():
    G = network('G_sphere')
    with torch.no_grad():
        out = G(_t('z'), torch.zeros([len(_t('z')), 0]), camera_angles=_t('camera_angles'), noise_mode=NOISE_MODE,
                bg_only=True, **RENDER)
    assert RECORDED['G_sphere_bg'].std() > 0.1
    _close(out, 'G_sphere_bg')


def test_sphere_background_holds_the_official_tensors_at_full_size():
    """The official default FFHQ-512 Generator with bg_model.type 'sphere' (recorded names and shapes, in order)."""
    kwargs = RECORDER.spec_kwargs(RECORDER.SPEC_G)
    kwargs['mapping_kwargs']['mean_camera_pose'] = list(RECORDER.MEAN_CAMERA_POSE)
    kwargs['cfg']['bg_model']['type'] = 'sphere'
    G = ne.Generator(**RECORDER.torch_kwargs(kwargs))
    ours = [[name, list(value.shape)] for name, value in G.state_dict().items() if name.startswith('synthesis.bg_model.')]
    assert ours == CONFIG['sphere_spec']
    assert [G.num_ws, G.synthesis.bg_model.num_ws] == CONFIG['sphere_num_ws'] == [20, 4]
