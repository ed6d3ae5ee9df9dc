"""A trusted load runs the module source embedded in a pickle; nothing it runs may change later no-exec loads.

Our module sources register their classes with the no-exec loader (`register_no_exec_module`) and
install import hooks when they are imported. An edited copy of such a source, executed by
`trust_code=True`, re-runs those calls with its edited classes; they must be ignored.
"""

import io
import pickle

import torch

from torch_utils import persistence
from training import networks_raycond2, networks_stylegan2, snapshots

_EDIT = '''

# --- appended by the test: every Generator built from this source draws a constant image ---
def _edited_forward(self, z, c, *args, **kwargs):
    return torch.full([z.shape[0], self.img_channels, self.img_resolution, self.img_resolution], 0.125)
Generator.forward = _edited_forward
'''


class _EditingPickler(pickle.Pickler):
    """Pickles persistent objects of one module with an edited copy of that module's source."""

    def __init__(self, file, module, suffix):
        super().__init__(file)
        self.source = persistence._module_to_src(module)
        self.edited = self.source + suffix

    def reducer_override(self, obj):
        if isinstance(obj, type) or not persistence.is_persistent(obj):
            return NotImplemented
        function, (meta,) = obj.__reduce__()[:2]
        if meta['module_src'] == self.source:
            meta = dict(meta, module_src=self.edited)
        return function, (meta,)


def _edited_pickle(obj, module, suffix=_EDIT):
    buffer = io.BytesIO()
    _EditingPickler(buffer, module, suffix).dump(obj)
    return buffer.getvalue()


def _tiny_sg2(seed):
    torch.manual_seed(seed)
    return networks_stylegan2.Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
                                        channel_base=32, channel_max=8, mapping_kwargs=dict(num_layers=1))


def _image(G):
    torch.manual_seed(1)
    with torch.no_grad():
        return G(torch.randn([2, G.z_dim]), torch.zeros([2, 0]), noise_mode='const')


def test_a_trusted_load_of_an_edited_source_does_not_change_later_default_loads():
    edited_G = persistence.load(io.BytesIO(_edited_pickle(_tiny_sg2(0), networks_stylegan2)), trust_code=True)
    # The trusted load really ran the edited source...
    assert type(edited_G) is not networks_stylegan2.Generator
    assert torch.equal(_image(edited_G), torch.full([2, 3, 8, 8], 0.125))

    # ...and a later default load of an unrelated snapshot is built from our class, computing our function.
    G = _tiny_sg2(1)
    loaded = persistence.load(io.BytesIO(pickle.dumps(G)))
    assert type(loaded) is networks_stylegan2.Generator
    assert torch.equal(_image(loaded), _image(G))
    assert not torch.equal(_image(loaded), torch.full([2, 3, 8, 8], 0.125))


def test_a_trusted_load_adds_no_import_hook_and_no_registry_entry():
    hooks = list(persistence._import_hooks)
    registry = dict(persistence._no_exec_modules)
    torch.manual_seed(0)
    G = networks_raycond2.Generator(z_dim=4, c_dim=25, w_dim=4, img_resolution=8, img_channels=3,
                                    channel_base=32, channel_max=8, mapping_kwargs=dict(num_layers=1))
    # Executing this copy of networks_raycond2 re-runs its register_no_exec_module and import_hook calls.
    persistence.load(io.BytesIO(_edited_pickle(G, networks_raycond2, '\n# edited\n')), trust_code=True)
    assert persistence._import_hooks == hooks
    assert persistence._no_exec_modules == registry


def test_a_trusted_snapshot_load_then_a_default_snapshot_load_through_the_scripts_loader():
    G = _tiny_sg2(0)
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=32, channel_max=8)
    edited = _edited_pickle(dict(G=G, D=D, G_ema=G), networks_stylegan2)
    trusted = snapshots.load_network_pkl(io.BytesIO(edited), trust_code=True)
    assert torch.equal(_image(trusted['G_ema']), torch.full([2, 3, 8, 8], 0.125))
    normal = snapshots.load_network_pkl(io.BytesIO(pickle.dumps(dict(G=G, D=D, G_ema=G))))
    assert type(normal['G_ema']) is networks_stylegan2.Generator
    assert torch.equal(_image(normal['G_ema']), _image(G))
