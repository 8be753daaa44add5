"""The service's page in a real headless browser (Debian's chromium): skipped where none is installed (CI)."""
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from tests.test_serving import MM, _mm, planted_mm  # noqa: F401  (planted_mm: the module fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium binary (apt install chromium)")


def serve(recommender):
    """(base URL, stop) of the app under uvicorn on a free local port, in a thread."""
    import uvicorn

    from mmrecbole.serving.http import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(recommender), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", lambda: (setattr(server, "should_exit", True), thread.join())


def rendered_dom(url: str, screenshot: str = None) -> str:
    """The page's DOM after its scripts ran (chromium --headless --dump-dom)."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
             "--window-size=1400,1100"]
    if screenshot:
        subprocess.run(flags + [f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run(flags + ["--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout


def test_the_page_shows_a_users_history_and_recommendations(planted_mm, tmp_path):  # noqa: F811
    from mmrecbole.serving import Recommender

    recommender = Recommender.load(_mm(planted_mm, "MMSASRec", **MM)["bundle"])
    base, stop = serve(recommender)
    try:
        dom = rendered_dom(f"{base}/?user=7", screenshot=str(tmp_path / "page.png"))
    finally:
        stop()
    expected = recommender.recommend(["7"], k=10)[0].items
    dom = dom.split("<script>")[0]  # what the page rendered, not its script's text
    assert "User 7: the 10 most recent of 8 items" in dom
    assert dom.count('class="tile"') == 8 + 10
    assert f"1. {expected[0].item_id}" in dom  # the planted items have no titles: their ids are shown
    assert 'class="bar"' in dom and '<div id="error" class="error"></div>' in dom
    assert os.path.getsize(tmp_path / "page.png") > 10_000
