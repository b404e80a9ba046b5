"""A served answer from a ZIM archive: the phone can read the whole article its passage came from, as text (no
script, no markup), named by the answer's own source, never by a path from the request."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import appliance_cmd
from tests.kb.fixtures import make_zim
from tests.serve.conftest import serve_env, start_server, web
from tests.serve.test_serve_http import ask_events

pytestmark = pytest.mark.slow


def test_the_whole_article_behind_a_zim_source(tmp_path):
    zim = make_zim(tmp_path / "water.zim", {"purify.html": ("Water purification", [
        ("Boiling", "Boil water at a rolling boil for one minute to kill germs."
                    "<script>document.title = 'pwned'</script>"),
        ("Storage", "Keep boiled water in clean covered containers.")])})
    home = tmp_path / "home"
    home.mkdir()
    added = subprocess.run(appliance_cmd() + ["kb", "add", str(zim)], env=serve_env(home), capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert added.returncode == 0, added.stderr
    served = start_server(home, library=False)
    try:
        key, other = served.key("reader"), served.key("other")
        events = ask_events(served, key, "how long do I boil water to kill germs")
        done = dict(events)["done"]
        articles = [s for s in done["sources"] if s.get("article")]
        assert articles, done["sources"]
        number, source = done["conversation_id"], articles[0]["number"]
        url = f"{served.url}/api/conversations/{number}/answers/1/sources/{source}/article"
        got = web.get(url, headers={"Authorization": f"Bearer {key}"})
        assert got.status_code == 200
        article = got.json()
        text = json.dumps(article)
        assert article["title"] == "Water purification" and "rolling boil for one minute" in text
        assert "Keep boiled water" in text and "pwned" not in text and "<script" not in text
        assert web.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
        assert web.get(url.replace("/answers/1/", "/answers/2/"),
                         headers={"Authorization": f"Bearer {key}"}).status_code == 404
        assert web.get(url.replace(f"/sources/{source}/", "/sources/99/"),
                         headers={"Authorization": f"Bearer {key}"}).status_code == 404
    finally:
        served.stop()
