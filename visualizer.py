"""The web visualizer's command: `python visualizer.py --help` (the server, renderer and page live in viz/)."""

import secrets
import sys

import click

from training import generation
from viz.catalogue import Catalogue, CatalogueError
from viz.server import LOOPBACK_HOSTS, VisualizerApp, make_server


class CommandError(click.ClickException):
    """One sentence on stderr, exit code 1, no traceback."""


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.argument('networks', nargs=-1, required=True, metavar='PKL_OR_RUN_DIR...')
@click.option('--device', help='Torch device (default: cuda when available, else cpu)', type=click.Choice(['cpu', 'cuda']))
@click.option('--port', help='Port to listen on (0: any free port)', type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option('--host', help='Address to listen on; anything but the loopback requires the printed token', default='127.0.0.1',
              show_default=True)
@click.option('--trust-code', help='Execute code embedded in the pickles (only for files you trust)', is_flag=True)
def main(networks, device, port, host, trust_code):
    """Serve the web visualizer for network pickles and run directories; open the URL it prints.

    The page shows only the networks named here (a run directory lists its snapshots, refreshed as
    training writes them), each with the controls it declares: seed, truncation, class, noise, a blend
    towards a second seed, the camera of camera-conditioned networks, StyleGAN3's translate and rotate,
    CREPS's scale, translate and zoom, 3D image modes and render options, and any layer's feature maps.
    Pickles load without running code unless --trust-code. It listens on 127.0.0.1; with --host it
    listens there and every request needs the token it prints.

    \b
    Examples:
      python visualizer.py training-runs/00003-stylegan3-r-afhq-512 stylegan3-r-afhqv2-512x512.pkl
      # On a remote GPU box, then tunnel from the laptop and open http://127.0.0.1:8765 there:
      python visualizer.py training-runs/00003-stylegan3-r-afhq-512 --port=8765
      ssh -N -L 8765:127.0.0.1:8765 user@gpu-box
    """
    try:
        device = generation.choose_device(device)
        catalogue = Catalogue(networks, device=device, trust_code=trust_code)
    except (generation.GenerationError, CatalogueError) as error:
        raise CommandError(str(error)) from None
    token = None if host in LOOPBACK_HOSTS else secrets.token_urlsafe(16)
    try:
        server = make_server(VisualizerApp(catalogue, token=token), host, port)
    except OSError as error:
        raise CommandError(f'Cannot listen on {host}:{port} ({error.strerror or error}); pass another --port.') from None
    shown = host if ':' not in host else f'[{host}]'
    url = f'http://{shown}:{server.server_address[1]}/' + (f'?token={token}' if token else '')
    print(f'Visualizer for {len(catalogue.entries)} network(s) on {device}: {url}', flush=True)
    if token:
        print('Anyone with this URL (it holds the token) can use the visualizer; keep it private.', flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print('Stopped.', file=sys.stderr)
    finally:
        server.server_close()


if __name__ == '__main__':
    main()
