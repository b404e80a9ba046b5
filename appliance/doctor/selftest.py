"""The flow `appliance doctor` watches from outside: `python -m appliance.doctor.selftest` loads the default model,
retrieves from the knowledge base (embedding a question: onnxruntime runs), and generates a few tokens; then
prints one JSON line of what it did. The parent (airgap.watched_selftest) records its system calls.

APPLIANCE_SELFTEST_PLUGIN=module:function (test-only) calls that function after the flow, inside the watched
process: the tests use it to make a deliberate connect attempt and check that doctor reports it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

PLUGIN_ENV = "APPLIANCE_SELFTEST_PLUGIN"
QUESTION = "How do I purify water?"


def run() -> dict:
    from appliance.services import Services

    services = Services.create()
    done: dict = {}
    loaded = services.engine.load()
    done["model"] = loaded.entry.name
    kb_file = services.paths.kb / "text.sqlite"
    if kb_file.exists():
        hits = services.knowledge.open().search(QUESTION, k=3)
        done["retrieval"] = f"{len(hits)} passage(s)"
    else:  # no library yet: still run the embedder, the part with native telemetry
        from appliance.models import packs
        from kb.embedder import Embedder

        embedder = Embedder(packs.EMBEDDER_ONNX.locate(), packs.EMBEDDER_TOKENIZER.locate())
        done["retrieval"] = f"embedded the question ({embedder.embed_query(QUESTION).shape[-1]} dimensions)"
    generation = loaded.generate([{"role": "user", "content": QUESTION}], 4, temperature=0.0)
    done["tokens"] = len(list(generation.tokens()))
    plugin = os.environ.get(PLUGIN_ENV)
    if plugin:
        module, _, function = plugin.partition(":")
        getattr(importlib.import_module(module), function)()
        done["plugin"] = plugin
    services.engine.unload()
    return done


def main() -> int:
    try:
        done = run()
    except Exception as exc:  # noqa: BLE001 - the parent reports it in one line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
        return 1
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
