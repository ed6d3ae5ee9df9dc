"""Our networks hold exactly the tensors of the official releases (names, shapes, dtypes, order).

The expected values come from ../shared/spec/stylegan_official_tensors.json, recorded from the
official StyleGAN3 repository's classes, and ../shared/spec/raycond_official_tensors.json, from the
official Ray Conditioning release's; official weights transfer by name only if this holds.
"""

import importlib
import json
import pathlib

import pytest
import torch

SPEC_DIR = pathlib.Path(__file__).resolve().parents[3] / 'shared' / 'spec'
SPECS = [SPEC_DIR / 'stylegan_official_tensors.json', SPEC_DIR / 'raycond_official_tensors.json']
ENTRIES = [entry for spec in SPECS if spec.is_file() for entry in json.loads(spec.read_text())]
ATTRIBUTES = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'num_ws')


def _entry_id(entry):
    kw = entry['kwargs']
    extra = '-R' if kw.get('use_radial_filters') else ''
    return f"{pathlib.Path(entry['module']).stem}.{entry['cls']}-{kw['img_resolution']}-c{kw['c_dim']}{extra}"


@pytest.mark.parametrize('spec', SPECS, ids=[spec.stem for spec in SPECS])
def test_spec_file_is_present(spec):
    assert spec.is_file() and json.loads(spec.read_text()), f'missing or empty spec file {spec}'


@pytest.fixture(scope='module', params=ENTRIES, ids=[_entry_id(e) for e in ENTRIES])
def built(request):
    entry = request.param
    module = importlib.import_module(entry['module'].removesuffix('.py').replace('/', '.'))
    torch.manual_seed(0)
    return entry, getattr(module, entry['cls'])(**entry['kwargs'])


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
            assert getattr(net, attr) == entry[attr], attr
    if 'block_resolutions' in entry:
        assert net.synthesis.block_resolutions == entry['block_resolutions']
    if 'layer_names' in entry:
        assert net.synthesis.layer_names == entry['layer_names']
