"""What the visualizer tests share: tiny generators of each family, and a server on the loopback."""

import contextlib
import threading

import torch

import tiny_networks
from viz.catalogue import Catalogue
from viz.server import VisualizerApp, make_server


def tiny_raycond2(seed=0):
    from training import networks_raycond2
    torch.manual_seed(seed)
    return networks_raycond2.Generator(z_dim=8, c_dim=25, w_dim=8, img_resolution=16, img_channels=3,
                                       mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8).eval()


FAMILIES = {
    'stylegan2': lambda: tiny_networks.stylegan2_generator(resolution=16),
    'stylegan2-class': lambda: tiny_networks.stylegan2_generator(c_dim=4, resolution=16),
    'stylegan3': lambda: tiny_networks.stylegan3_generator(),
    'creps': lambda: tiny_networks.creps_generator(),
    'eg3d': lambda: tiny_networks.triplane_generator(),
    'raycond2': tiny_raycond2,
}


@contextlib.contextmanager
def serving(paths, token=None, trust_code=False, **app_kwargs):
    """A visualizer for `paths` on 127.0.0.1 (a free port) in a thread: yields (base URL, app); stops at exit."""
    app = VisualizerApp(Catalogue(paths, device='cpu', trust_code=trust_code), token=token, **app_kwargs)
    server = make_server(app, '127.0.0.1', 0)
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}', app
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
