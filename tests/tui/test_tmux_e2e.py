"""End to end: the real installed `appliance` (no arguments) in a detached tmux session at 80x24, the real
default model, a document added through `appliance kb add`; a question typed in, the streamed answer and its
source read back from the screen."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid

import pytest

from appliance.records.history import History
from tests.conftest import appliance_cmd, require_tool, run_appliance

QUESTION = "How long should I boil water to purify it?"


@pytest.mark.slow
def test_real_appliance_in_tmux_answers_with_a_source(tmp_path, appliance_home):
    tmux = require_tool("tmux")
    doc = tmp_path / "water.md"
    doc.write_text("# Water\n\n## Purifying water\n\nTo purify water, bring it to a rolling boil for one minute. "
                   "At altitudes above 2000 metres, boil it for three minutes. Store it in a covered container.\n")
    added = run_appliance("kb", "add", str(doc))
    assert added.returncode == 0, added.stderr
    socket = f"appliance-test-{uuid.uuid4().hex[:8]}"  # a private tmux server: nobody else's sessions are touched
    env = {"APPLIANCE_HOME": str(appliance_home), "APPLIANCE_MODEL_MAX_TOKENS": "48", "TERM": "xterm-256color",
           "PATH": os.environ.get("PATH", "")}
    command = " ".join(["env"] + [f"{k}={v}" for k, v in env.items()] + appliance_cmd())

    def tmux_cmd(*args: str, check: bool = True) -> str:
        return subprocess.run([tmux, "-L", socket, *args], capture_output=True, text=True, check=check,
                              timeout=30).stdout

    def screen() -> str:
        return tmux_cmd("capture-pane", "-p", "-t", "app")

    def wait_screen(predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{text}")

    tmux_cmd("-f", "/dev/null", "new-session", "-d", "-s", "app", "-x", "80", "-y", "24", command)
    try:
        first = wait_screen(lambda s: "Ask a question" in s and "offline" in s, 60, "the first paint")
        assert "Traceback" not in first
        ready = wait_screen(lambda s: "Apache-2.0" in s and "KB 1 doc" in s, 180, "the model and the library")
        assert "llama_" not in ready and "ggml" not in ready  # llama.cpp's log did not garble the screen
        tmux_cmd("send-keys", "-t", "app", "-l", QUESTION)
        tmux_cmd("send-keys", "-t", "app", "Enter")
        done = wait_screen(lambda s: re.search(r"smollm2-135m-instruct · \d+ tokens", s) is not None, 180,
                           "the answer")
        assert QUESTION in done
        assert "[1] water.md · Water > Purifying water" in done
        assert "llama_" not in done and "Traceback" not in done
    finally:
        tmux_cmd("kill-server", check=False)
    # The answer on the screen is the one saved in the shared history.
    history = History(appliance_home / "history.sqlite")
    conversation = history.conversations()[0]
    answer = history.messages(conversation["id"])[1]["content"]
    assert conversation["title"] == QUESTION and answer.strip()
    words = re.findall(r"[A-Za-z]{3,}", answer)[:5]  # words, not Markdown marks (rendered away on screen)
    assert words and all(word in done for word in words), f"{words} not on the screen:\n{done}"
    assert history.messages(conversation["id"])[1]["sources"][0]["path"] == str(doc)
