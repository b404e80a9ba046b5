"""A question in the library's words: the loaded model's short draft answer, searched for beside the question.

A worried person asks in their own words ("the star doesn't pick up files whose names start with a dot"); the page
that answers uses the manual's ("dotglob"). Neither MiniLM's cosine nor BM25 bridges that when the two share no
words. The chat model, already loaded to answer, often knows the manual's words: asked for a few lines a manual
would write, it names the command, setting or term. kb.search then ranks with the mean of both vectors and BM25
over both texts (the relevance floor stays on the question's own cosine), as in HyDE (Gao et al., 2022,
"Precise Zero-Shot Dense Retrieval without Relevance Labels").

The draft is never shown as an answer or quoted: it only chooses passages. It is kept with the answer
(`searched_with` in --json) so a person can see why a page was found. What it costs and buys is measured by
scripts/eval_answers and scripts/eval_kb --expand (scripts/eval/unseen/RESULTS.md).
"""

from __future__ import annotations

import re
import time
from typing import Any

from appliance.sanitize import clean

EXPAND = False  # draft before searching when a model is loaded (quote-only answers never load one)
MAX_TOKENS = 48  # about two sentences: enough for the names a page would use, about 1 s at 44 tokens/s
INSTRUCTION = "You are an expert. Answer in one or two short sentences."
_SPACE = re.compile(r"\s+")


def draft(loaded: Any, question: str, timings: dict | None = None) -> str:
    """The model's short draft answer to `question` (greedy, MAX_TOKENS at most), one line; "" when the model
    gave nothing. `loaded` is an engine.client.LoadedModel."""
    started = time.perf_counter()
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": question}]
    generation = loaded.generate(messages, MAX_TOKENS, temperature=0.0)
    text = "".join(generation.tokens())
    if timings is not None:
        timings["expand_s"] = round(time.perf_counter() - started, 3)
        timings["expand_tokens"] = generation.timings.tokens
    return _SPACE.sub(" ", clean(text)).strip()
