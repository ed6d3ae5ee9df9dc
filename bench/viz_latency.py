"""How fast the visualizer answers a slider move: a 64x64 StyleGAN2 snapshot on the CPU, through real HTTP.

The snapshots are the generators `train.py --cfg=stylegan2` builds for 64x64 data (z and w 512, an
8-layer mapping, channel_max 512; float32 on the CPU), freshly initialised (the time does not depend
on the weights), at channel_base 8192 (`--cbase=8192`: the 64x64 StyleGAN2 of bench/generator_cpu.py's
published comparison, about 5.6 img/s for the official code on 2 cores) and at train.py's default
32768 (every layer 512 wide: one synthesis alone then takes about 0.4 s on 2 cores). The server runs in this process on 127.0.0.1, as
`visualizer.py` serves it; the client is `requests` over the loopback, so each figure includes the
HTTP round trip and the PNG encoding.

Records (one JSON object per line):
- `request`: one frame per request, one at a time, for a move of each kind: a new seed (a mapping
  cache miss), a truncation change (a miss), a noise-mode change and a repeated frame (cache hits);
  median and max milliseconds, and the server's own X-Render-Ms. `move_p95_ms` is the 95th percentile
  over all of them: the answer to a slider move; `target_s` 0.3 is the issue's bound and
  `meets_target` whether that percentile is within it.
- `drag`: a slider dragged for `--drag-s` seconds at 60 input events per second, the client
  behaving as the page does (one request in flight; inputs made meanwhile are sent together when it
  returns). For each input, the time until a frame that includes it (or a later input) arrives:
  median, 95th percentile and max. An input waits for the frame in flight and then its own, so this
  is up to twice a frame's time; `within_target` says whether its 95th percentile is within 0.3 s.

    python bench/viz_latency.py            # the 64x64 figures (about two minutes on 2 cores)
    python bench/viz_latency.py --quick    # a 16x16 network, seconds (the test's smoke run)
"""

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import threading
import time

import requests
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training import networks_stylegan2  # noqa: E402
from viz.catalogue import Catalogue  # noqa: E402
from viz.server import VisualizerApp, make_server  # noqa: E402

TARGET_S = 0.3


def build_snapshot(path, quick, channel_base):
    torch.manual_seed(0)
    if quick:
        kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                      channel_base=64, channel_max=8)
    else:  # train.py --cfg=stylegan2 at 64x64 (its G_kwargs; fp16 layers run in float32 on the CPU)
        kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
                      mapping_kwargs=dict(num_layers=8), channel_base=channel_base, channel_max=512, num_fp16_res=4,
                      conv_clamp=256)
    G = networks_stylegan2.Generator(**kwargs).eval()
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=32, channel_max=4)
    with open(path, 'wb') as f:  # a snapshot's layout; the visualizer shows G_ema (D is a small stand-in)
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return kwargs


class Client:
    def __init__(self, base):
        self.base = base
        self.http = requests.Session()
        self.http.trust_env = False
        self.seq = 0

    def frame(self, **settings):
        self.seq += 1
        start = time.perf_counter()
        answer = self.http.post(f'{self.base}/api/render', json=dict(settings, network='0', client='bench', seq=self.seq),
                                timeout=60)
        elapsed = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f'render failed: {answer.status_code} {answer.text}')
        return elapsed, float(answer.headers['X-Render-Ms'])


def request_record(client, repeats):
    kinds = {
        'new_seed': lambda i: dict(seed=1000 + i),
        'truncation': lambda i: dict(seed=1, psi=0.5 + 0.01 * i),
        'noise_mode': lambda i: dict(seed=1, noise_mode=('const', 'random')[i % 2]),
        'same_frame': lambda i: dict(seed=1),
    }
    client.frame(seed=1)  # warm-up
    record = {'record': 'request'}
    moves = []
    for name, settings in kinds.items():
        times = [client.frame(**settings(i)) for i in range(repeats)]
        moves += [t for t, _ in times]
        record[name] = {'median_ms': round(1000 * statistics.median(t for t, _ in times), 1),
                        'max_ms': round(1000 * max(t for t, _ in times), 1),
                        'server_render_median_ms': round(statistics.median(r for _, r in times), 1)}
    moves.sort()
    p95 = moves[int(0.95 * (len(moves) - 1))]
    record.update(move_p95_ms=round(1000 * p95, 1), target_s=TARGET_S, meets_target=p95 <= TARGET_S)
    return record


def drag_record(client, seconds, rate=60.0):
    """Inputs at `rate` per second; the page's coalescing: one request in flight, the newest input sent next."""
    events = []           # input times
    latest = {'index': -1}
    lock = threading.Condition()
    done = threading.Event()
    answered = []         # (index of the newest input the frame includes, arrival time)

    def sender():
        sent = -1
        while True:
            with lock:
                while latest['index'] == sent and not done.is_set():
                    lock.wait(0.5)
                if latest['index'] == sent and done.is_set():
                    return
                sent = latest['index']
            client.frame(seed=2000 + sent)
            answered.append((sent, time.perf_counter()))
    thread = threading.Thread(target=sender)
    thread.start()
    start = time.perf_counter()
    count = int(seconds * rate)
    for index in range(count):
        target = start + index / rate
        time.sleep(max(0.0, target - time.perf_counter()))
        with lock:
            events.append(time.perf_counter())
            latest['index'] = index
            lock.notify()
    done.set()
    with lock:
        lock.notify()
    thread.join(120)
    latencies = []
    for index, moment in enumerate(events):
        arrival = next(t for shown, t in answered if shown >= index)
        latencies.append(arrival - moment)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    return {'record': 'drag', 'inputs': count, 'frames': len(answered), 'input_rate_hz': rate,
            'median_ms': round(1000 * statistics.median(latencies), 1), 'p95_ms': round(1000 * p95, 1),
            'max_ms': round(1000 * latencies[-1], 1), 'within_target': p95 <= TARGET_S}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='a 16x16 network and short runs (smoke test)')
    parser.add_argument('--repeats', type=int, default=None, help='requests per kind (default 20; quick 3)')
    parser.add_argument('--drag-s', type=float, default=None, help='seconds of slider dragging (default 5; quick 0.5)')
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 20)
    drag_s = args.drag_s or (0.5 if args.quick else 5.0)
    for channel_base in ([64] if args.quick else [8192, 32768]):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'network-snapshot-000000.pkl')
            kwargs = build_snapshot(path, args.quick, channel_base)
            app = VisualizerApp(Catalogue([path], device='cpu'), rate=1000.0)
            server = make_server(app, '127.0.0.1', 0)
            thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
            thread.start()
            try:
                client = Client(f'http://127.0.0.1:{server.server_address[1]}')
                load_start = time.perf_counter()
                client.http.get(f'{client.base}/api/network?id=0', timeout=120).raise_for_status()
                common = {'resolution': kwargs['img_resolution'], 'channel_base': kwargs['channel_base'],
                          'torch_threads': torch.get_num_threads(), 'device': 'cpu',
                          'load_s': round(time.perf_counter() - load_start, 2),
                          'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY')}
                print(json.dumps(dict(request_record(client, repeats), **common)), flush=True)
                print(json.dumps(dict(drag_record(client, drag_s), **common)), flush=True)
            finally:
                server.shutdown()
                server.server_close()


if __name__ == '__main__':
    main()
