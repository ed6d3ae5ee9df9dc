"""The visualizer page (viz/static) in a real browser: headless Chromium driven by selenium.

The page is loaded from a server on the loopback (viz_helpers.serving) and used the way a person
uses it: its sliders are moved with real mouse and keyboard input. Each frame the page shows is read
back from the browser (window.vizState.blob) and compared with the network's own output for the
settings the page sent, computed here from G.mapping and G.synthesis, not through viz/. The second
test checks that the page shows the controls each network declares (training.capabilities) and no
others.

Needs selenium (requirements.txt) and Debian's chromium and chromium-driver (scripts/install_browser.sh,
run by `make test` as root); without them the tests skip and say which is missing. VIZ_BROWSER and
VIZ_CHROMEDRIVER override the two paths; VIZ_SCREENSHOT_DIR, when set, receives the screenshots too.
"""

import base64
import io
import math
import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from training import cameras, capabilities, generation, snapshots as training_snapshots
from viz_helpers import serving

CHROMIUM = os.environ.get('VIZ_BROWSER', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('VIZ_CHROMEDRIVER', '/usr/bin/chromedriver')
TIMEOUT = 20  # seconds for any one wait on the page
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _missing():
    """None, or why the browser cannot run here and how to get it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -r requirements.txt, or make install)'
    for path, package in ((CHROMIUM, 'chromium'), (CHROMEDRIVER, 'chromium-driver')):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return (f'{path} is missing (Debian package {package}): run scripts/install_browser.sh as root '
                    f'(make browser), or point VIZ_BROWSER / VIZ_CHROMEDRIVER at Chromium and its chromedriver')
    return None


@pytest.fixture(scope='module')
def driver():
    """One headless Chromium for the module's tests, reaching nothing but 127.0.0.1."""
    reason = _missing()
    if reason:
        pytest.skip(f'browser test: {reason}')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1100,800',
                     '--no-proxy-server', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
                     '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--disable-sync',
                     '--disable-background-networking', '--disable-component-update', '--disable-default-apps',
                     '--hide-scrollbars', '--force-device-scale-factor=1'):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(TIMEOUT)
        browser.set_script_timeout(TIMEOUT)
        yield browser
    finally:
        browser.quit()


# ------------------------------------------------------------------------------------------------
# The page.

PAGE_STATE = """
const s = window.vizState, box = document.getElementById('error');
return {state: document.body.dataset.state, frameSeq: Number(document.body.dataset.frameSeq || 0),
        hasBlob: !!(s && s.blob), error: box.hidden ? '' : box.textContent};
"""

READ_FRAME = """
const done = arguments[arguments.length - 1];
const s = window.vizState, seq = s.shownSeq, settings = s.shownSettings;
const reader = new FileReader();
reader.onload = () => done({url: reader.result, seq, settings});
reader.onerror = () => done({error: String(reader.error)});
reader.readAsDataURL(s.blob);
"""


def wait_for_frame(browser, after_seq=0):
    """The page's state once it is idle and shows a frame newer than request `after_seq`."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    seen = {}

    def ready(d):
        seen.update(d.execute_script(PAGE_STATE))
        return seen if seen['state'] == 'idle' and seen['hasBlob'] and seen['frameSeq'] > after_seq else False
    try:
        return WebDriverWait(browser, TIMEOUT, poll_frequency=0.05).until(ready)
    except TimeoutException:
        raise AssertionError(f'no new frame after request {after_seq} within {TIMEOUT} s; the page: {seen}') from None


def shown_frame(browser):
    """(uint8 pixels [H, W, 3], request number, settings sent) of the frame the page shows."""
    frame = browser.execute_async_script(READ_FRAME)
    assert 'error' not in frame, frame
    header, data = frame['url'].split(',', 1)
    assert header == 'data:image/png;base64', header
    png = base64.b64decode(data)
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(PIL.Image.open(io.BytesIO(png)).convert('RGB')), frame['seq'], frame['settings']


def save_screenshot(browser, tmp_path, name):
    """Screenshot of the window in tmp_path (and VIZ_SCREENSHOT_DIR when set), checked to be a PNG."""
    path = tmp_path / f'{name}.png'
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)
    assert min(PIL.Image.open(path).size) > 0
    folder = os.environ.get('VIZ_SCREENSHOT_DIR')
    if folder:
        os.makedirs(folder, exist_ok=True)
        shutil.copyfile(path, os.path.join(folder, f'{name}.png'))
    return path


# ------------------------------------------------------------------------------------------------
# The network's own output, without viz/.

def network_frame(G, settings):
    """uint8 [H, W, 3] of G for the settings a camera-conditioned network's page sent."""
    assert not settings.get('blend') and settings.get('layer') is None
    z = torch.from_numpy(np.random.RandomState(settings['seed']).randn(1, G.z_dim).astype(np.float32))
    camera = settings['camera']
    # The page sends no pivot: the camera looks at the network's default one (for Ray Conditioning FFHQ's,
    # (0, 0, 0.2), as gen_images.py --pivot).
    pivot = generation.default_camera(G)['pivot']
    c = cameras.lookat_labels([math.radians(camera['yaw'])], [math.radians(camera['pitch'])], radius=camera['radius'],
                              pivot=pivot, focal=cameras.fov_to_focal(camera['fov']))
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=settings['psi'], truncation_cutoff=settings.get('cutoff'))
        img = G.synthesis(ws, c=c, noise_mode=settings.get('noise_mode', 'const'))
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def assert_matches_network(G, pixels, settings):
    expected = network_frame(G, settings)
    assert pixels.shape == expected.shape, (pixels.shape, expected.shape)
    difference = np.abs(pixels.astype(np.int16) - expected.astype(np.int16)).max()
    assert difference <= 1, f'the page shows a frame {difference} levels off the network output for {settings}'


# ------------------------------------------------------------------------------------------------

def test_sliders_render_the_network_output(driver, snapshots, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    path = snapshots['raycond2']
    G = training_snapshots.open_network_pkl(path)['G_ema'].eval()
    assert capabilities.label_kind(G) == 'camera'
    with serving([path]) as (base, _app):
        driver.get(base + '/')
        page = wait_for_frame(driver)
        assert not page['error'], page
        first, seq, settings = shown_frame(driver)
        assert seq == page['frameSeq']
        assert settings['seed'] == 0 and settings['camera']['yaw'] == 0
        assert_matches_network(G, first, settings)

        # The seed slider: a click on it (the value jumps to the pointer), then the arrow keys.
        seed = driver.find_element(By.ID, 'seed')
        ActionChains(driver).click(seed).send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT).perform()
        chosen = int(seed.get_property('value'))
        assert chosen > 0
        page = wait_for_frame(driver, seq)
        assert not page['error'], page
        second, seq, settings = shown_frame(driver)
        assert settings['seed'] == chosen and settings['camera']['yaw'] == 0
        assert driver.find_element(By.ID, 'seed-value').get_property('value') == str(chosen)
        assert not np.array_equal(second, first)
        assert_matches_network(G, second, settings)

        # The yaw slider: a click a quarter of its width right of its centre, then the left arrow.
        yaw = driver.find_element(By.ID, 'yaw')
        ActionChains(driver).move_to_element_with_offset(yaw, yaw.size['width'] // 4, 0).click() \
            .send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT).perform()
        angle = float(yaw.get_property('value'))
        assert 10 <= angle <= 80, angle
        page = wait_for_frame(driver, seq)
        assert not page['error'], page
        third, seq, settings = shown_frame(driver)
        assert settings['seed'] == chosen and settings['camera']['yaw'] == angle
        assert float(driver.find_element(By.ID, 'yaw-value').get_property('value')) == angle
        assert not np.array_equal(third, second)
        assert_matches_network(G, third, settings)

        save_screenshot(driver, tmp_path, 'raycond2-moved')


CONTROLS = """
return [...document.querySelectorAll('[data-needs]')].map((el) => {
  const chain = [];
  for (let e = el; e; e = e.parentElement) if (e.dataset && e.dataset.needs) chain.push(e.dataset.needs.split(' '));
  const control = el.querySelector('input, select');
  const title = el.querySelector('h2');
  return {name: control ? '#' + control.id : (title ? title.textContent : el.outerHTML.slice(0, 60)), chain,
          shown: el.checkVisibility()};
});
"""


@pytest.mark.parametrize('family', ['stylegan3', 'creps', 'eg3d', 'raycond2', 'stylegan2-class'])
def test_page_shows_the_declared_controls(driver, snapshots, tmp_path, family):
    from selenium.webdriver.common.by import By
    path = snapshots[family]
    G = training_snapshots.open_network_pkl(path)['G_ema']
    accepts = lambda option: capabilities.accepts(G, option)  # noqa: E731
    modes = list(capabilities.image_modes(G))
    declared = {
        'camera': accepts('camera'), 'transform': accepts('transform'), 'scale': accepts('scale'), 'view': accepts('view'),
        'noise_mode': accepts('noise_mode'), 'class': capabilities.label_kind(G) == 'class' and G.c_dim > 0,
        'image_modes': len(modes) > 1, 'nrr': accepts('render'),
        'sample_mult': accepts('render') or accepts('ray_step_multiplier'), 'resolution': accepts('resolution'),
    }
    # The declarations of the tiny networks, as the families are known to make them.
    assert declared['camera'] == (family in ('eg3d', 'raycond2'))
    assert declared['transform'] == (family == 'stylegan3')
    assert declared['scale'] == declared['view'] == (family == 'creps')
    assert declared['image_modes'] == (family == 'eg3d') and (len(modes) == 3 if family == 'eg3d' else True)
    assert declared['class'] == (family == 'stylegan2-class')

    with serving([path]) as (base, _app):
        driver.get(base + '/')
        page = wait_for_frame(driver)
        assert not page['error'], page
        controls = driver.execute_script(CONTROLS)
        assert controls
        for control in controls:
            unknown = {name for needs in control['chain'] for name in needs} - declared.keys()
            assert not unknown, f'{control["name"]} needs {unknown}, which no declaration gives'
            expected = all(any(declared[name] for name in needs) for needs in control['chain'])
            assert control['shown'] == expected, f'{family}: {control["name"]} shown={control["shown"]}, declared {expected}'

        def shown(selector):
            return driver.find_element(By.CSS_SELECTOR, selector).is_displayed()
        assert shown('section[data-needs=camera]') == declared['camera']
        assert shown('#yaw') == shown('#pitch') == declared['camera']
        assert shown('#rotate') == declared['transform']
        assert shown('#scale') == declared['scale'] and shown('#zoom') == declared['view']
        assert shown('#tx') == (declared['transform'] or declared['view'])
        assert shown('#class') == declared['class']
        assert shown('#image_mode') == declared['image_modes']
        if declared['image_modes']:
            options = [o.get_property('value') for o in driver.find_elements(By.CSS_SELECTOR, '#image_mode option')]
            assert options == modes
        if declared['class']:
            assert driver.find_element(By.ID, 'class').get_property('max') == str(G.c_dim - 1)
        # The inputs offer only what the server accepts (viz.renderer's bounds, sent with the controls).
        from viz import renderer as viz_renderer
        assert driver.find_element(By.ID, 'resolution').get_property('max') == str(viz_renderer.MAX_SIDE)
        assert driver.find_element(By.ID, 'nrr').get_property('max') == str(viz_renderer.MAX_NRR)
        # The frame is the network's own size (no view setting changed it).
        width = driver.execute_script("return document.getElementById('frame').naturalWidth")
        assert width == G.img_resolution
        save_screenshot(driver, tmp_path, f'controls-{family}')
