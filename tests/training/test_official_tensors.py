"""Our networks hold exactly the tensors of the official releases (names, shapes, dtypes, order).

The expected values are recorded in tests/data/spec/ (see its README.md for how):
stylegan_official_tensors.json, built with the classes of the official StyleGAN3 repository, and
raycond_official_tensors.json, with those of the official Ray Conditioning release, and
creps_official_tensors.json (the CREPS generator, and the StyleGAN2 discriminator it trains with),
and eg3d_official_tensors.json (EG3D's TriPlaneGenerator and DualDiscriminator, in our
training/networks_triplane.py), and gram_official_tensors.json (GRAM's GramGenerator and
GramDiscriminator, in our training/networks_gram.py; with their `state_dict` keys, the `.pth`
format), and epigraf_official_tensors.json (EpiGRAF's Generator and Discriminator, default and
pose-conditioned, in our training/networks_epigraf.py). Official weights transfer by name only if
this holds.
"""

import importlib
import json
import pathlib
import re

import pytest
import torch

SPEC_DIR = pathlib.Path(__file__).resolve().parents[1] / 'data' / 'spec'

# Entries per spec file: the four 3D-aware files as the spec README's headings state them, the two
# older files (which the README does not count) as counted in them.
EXPECTED_ENTRIES = {
    'stylegan_official_tensors.json': 6,
    'raycond_official_tensors.json': 3,
    'eg3d_official_tensors.json': 3,
    'creps_official_tensors.json': 4,
    'epigraf_official_tensors.json': 4,
    'gram_official_tensors.json': 6,
}
# The files whose networks this project builds; every entry of them is built and compared below.
BUILT_SPECS = ('stylegan_official_tensors.json', 'raycond_official_tensors.json', 'creps_official_tensors.json',
               'eg3d_official_tensors.json', 'gram_official_tensors.json', 'epigraf_official_tensors.json')
# Official files whose classes live in one of our modules under another name.
OUR_MODULES = {'eg3d/training/triplane.py': 'training.networks_triplane',
               'eg3d/training/dual_discriminator.py': 'training.networks_triplane',
               'generators/generators.py': 'training.networks_gram',
               'discriminators/discriminators.py': 'training.networks_gram',
               'src/training/networks_epigraf.py': 'training.networks_epigraf',
               'src/training/networks_discriminator.py': 'training.networks_epigraf'}
# The older spec files, whose entries the spec README does not count.
UNCOUNTED_SPECS = ('stylegan_official_tensors.json', 'raycond_official_tensors.json')
ENTRY_FIELDS = ('module', 'cls', 'kwargs', 'parameters', 'buffers')
ATTRIBUTES = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'num_ws')


def _load_spec(name):
    """The entries of one spec file; a missing, unreadable or empty file is an error, never a skip."""
    path = SPEC_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f'missing spec file {path}')
    entries = json.loads(path.read_text())
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'spec file {path} is not a non-empty JSON list')
    return entries


# Loaded at import, so that a missing or empty file is a collection error instead of an empty
# parametrisation.
ENTRIES = [entry for name in BUILT_SPECS for entry in _load_spec(name)]
assert len(ENTRIES) == sum(EXPECTED_ENTRIES[name] for name in BUILT_SPECS), len(ENTRIES)


def _entry_id(entry):
    kw = entry['kwargs']
    if 'name' in entry and entry['repo'] in ('microsoft/GRAM', 'universome/epigraf'):
        return entry['name'].split(' (')[0].replace(' ', '-') + '-' + entry['role']
    extra = '-R' if kw.get('use_radial_filters') else ''
    return f"{pathlib.Path(entry['module']).stem}.{entry['cls']}-{kw['img_resolution']}-c{kw['c_dim']}{extra}"


def test_spec_dir_holds_exactly_the_expected_files():
    # fid_inception_state_dict.json has another format; tests/metrics/test_detectors.py checks it.
    found = sorted(path.name for path in SPEC_DIR.iterdir())
    assert found == sorted([*EXPECTED_ENTRIES, 'fid_inception_state_dict.json', 'README.md'])


@pytest.mark.parametrize('name', sorted(EXPECTED_ENTRIES))
def test_spec_file_is_a_non_empty_list_of_complete_entries(name):
    entries = _load_spec(name)
    assert len(entries) == EXPECTED_ENTRIES[name]
    for i, entry in enumerate(entries):
        assert isinstance(entry, dict), (name, i)
        missing = [field for field in ENTRY_FIELDS if field not in entry]
        assert not missing, (name, i, missing)
        assert isinstance(entry['module'], str) and entry['module'].endswith('.py'), (name, i)
        assert isinstance(entry['cls'], str) and isinstance(entry['kwargs'], dict), (name, i)
        assert entry['parameters'] and all(len(p) == 2 and isinstance(p[0], str) for p in entry['parameters']), (name, i)
        assert all(len(b) == 3 and isinstance(b[0], str) for b in entry['buffers']), (name, i)


def test_entry_counts_match_the_spec_readme():
    readme = (SPEC_DIR / 'README.md').read_text()
    stated = {name: int(count) for name, count in re.findall(r'^## (\S+\.json) .*? (\d+) entries$', readme, re.M)}
    assert stated == {name: count for name, count in EXPECTED_ENTRIES.items() if name not in UNCOUNTED_SPECS}


@pytest.fixture(scope='module', params=ENTRIES, ids=[_entry_id(e) for e in ENTRIES])
def built(request):
    entry = request.param
    module = importlib.import_module(OUR_MODULES.get(entry['module'],
                                                     entry['module'].removesuffix('.py').replace('/', '.')))
    torch.manual_seed(0)
    return entry, getattr(module, entry['cls'])(**_spec_kwargs(entry['kwargs']))


def _spec_kwargs(value):
    """Constructor arguments with the spec's recorded tensors ({'__tensor__': shape, ...}) as zero tensors.

    The recorder writes dataset-dependent tensors (EpiGRAF's mean_camera_pose) by shape and dtype only.
    """
    if isinstance(value, dict) and '__tensor__' in value:
        return torch.zeros(value['__tensor__'], dtype=getattr(torch, value['dtype']))
    if isinstance(value, dict):
        return {key: _spec_kwargs(item) for key, item in value.items()}
    return value


def test_parameters_in_official_order(built):
    entry, net = built
    ours = [[name, list(p.shape)] for name, p in net.named_parameters()]
    assert ours == entry['parameters']
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_buffers_in_official_order(built):
    entry, net = built
    ours = [[name, list(b.shape), str(b.dtype).removeprefix('torch.')] for name, b in net.named_buffers()]
    assert ours == entry['buffers']


def test_attributes(built):
    entry, net = built
    for attr in ATTRIBUTES:
        if attr in entry:
            # EpiGRAF's c_dim is its class label's; ours is the camera label's 25 (the class one is class_dim).
            ours = net.class_dim if attr == 'c_dim' and hasattr(net, 'class_dim') else getattr(net, attr)
            assert ours == entry[attr], attr
    if 'block_resolutions' in entry:
        assert net.synthesis.block_resolutions == entry['block_resolutions']
    if 'layer_names' in entry:
        assert net.synthesis.layer_names == entry['layer_names']


def _attribute(net, dotted):
    for part in dotted.split('.'):
        net = getattr(net, part)
    return net


@pytest.mark.parametrize('entry', [e for e in _load_spec('eg3d_official_tensors.json') if e['role'] == 'G'],
                         ids=lambda e: e['name'])
def test_triplane_generator_attributes(entry):
    # The recorded attributes of the official generator: backbone, planes, super-resolution input.
    from training import networks_triplane
    G = networks_triplane.TriPlaneGenerator(**entry['kwargs'])
    attrs = entry['attrs']
    for name in ('backbone.num_ws', 'backbone.synthesis.block_resolutions', 'backbone.synthesis.img_channels',
                 'backbone.img_resolution', 'superresolution.input_resolution', 'neural_rendering_resolution',
                 'rendering_kwargs'):
        assert _attribute(G, name) == attrs[name], name
    cls = type(G.superresolution)
    assert f'training.superresolution.{cls.__name__}' == attrs['superresolution_class']


@pytest.mark.parametrize('entry', _load_spec('gram_official_tensors.json'), ids=lambda e: e['name'])
def test_gram_state_dict_keys_and_attributes(entry):
    # An official generator.pth is a state_dict: its keys, shapes and dtypes in order, and the recorded
    # attributes of the official networks (renderer options, box warps, the manifold centre).
    from training import networks_gram
    net = getattr(networks_gram, entry['cls'])(**entry['kwargs'])
    ours = [[name, list(t.shape), str(t.dtype).removeprefix('torch.')] for name, t in net.state_dict().items()]
    assert ours == entry['state_dict']
    if 'ema_shadow_params' in entry:  # torch_ema keeps one shadow tensor per parameter, in order
        assert [list(p.shape) for p in net.parameters()] == entry['ema_shadow_params']
    for name, value in entry['attrs'].items():
        if name in ('ema', 'camera'):
            continue  # facts of the official training loop and config, not attributes of the network
        ours = _attribute(net, name)
        if isinstance(value, dict) and '__tensor__' in value:
            assert isinstance(ours, torch.Tensor) and ours.tolist() == value['values'], name
        else:
            assert ours == value, name


@pytest.mark.parametrize('entry', _load_spec('epigraf_official_tensors.json'), ids=lambda e: e['name'][:40] + e['role'])
def test_epigraf_attributes_and_output_shape(entry):
    # The recorded attributes of the official networks, and the shape of the official forward check
    # (G: camera_angles [[0, pi/2, 0]] in eval mode at test_resolution 32; D: a 64 x 64 patch).
    from training import networks_epigraf
    torch.manual_seed(0)
    net = getattr(networks_epigraf, entry['cls'])(**_spec_kwargs(entry['kwargs'])).eval()
    for name, value in entry['attrs'].items():
        ours = _attribute(net, name.removesuffix('.get_dim()'))
        assert (ours.get_dim() if name.endswith('.get_dim()') else ours) == value, name
    with torch.no_grad():
        if entry['role'] == 'G':
            net.synthesis.test_resolution = 32
            out = net(torch.randn(1, 512), torch.zeros(1, 0), camera_angles=torch.tensor([[0.0, 1.5707963, 0.0]]))
        else:
            patch = {'scales': torch.ones(1, 2), 'offsets': torch.zeros(1, 2)}
            out = net(torch.randn(1, 3, 64, 64), torch.zeros(1, 0), patch_params=patch,
                      camera_angles=torch.tensor([[0.0, 1.5707963, 0.0]])).squeeze(1)  # ours is [N, 1], the official [N]
    assert list(out.shape) == entry['forward_check']['output']
    assert torch.isfinite(out).all()
