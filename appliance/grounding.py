"""Ground an answer in the knowledge base: numbered passages in the prompt, within the model's context budget.

When no passage passes the knowledge base's relevance floor, no source is returned and the Answerer tells the user
the library has nothing on it before any model text.
"""

from __future__ import annotations

from typing import Any

from appliance.answer import Source, plain_messages
from appliance.engine import LoadedModel

GROUNDED_PROMPT = (
    "You are a careful assistant running offline on the user's own computer. "
    "Answer from the numbered passages from the user's library below. Cite the passages you use like [1]. "
    "If the passages do not answer the question, say so plainly. Be clear and brief."
)

MAX_PASSAGES = 5
RESERVE_TOKENS = 64  # chat-template overhead and a safety margin


class KBRetriever:
    """Implements answer.Retriever over a kb.KnowledgeBase."""

    def __init__(self, kb: Any, max_tokens: int, k: int = MAX_PASSAGES):
        self.kb = kb
        self.max_tokens = max_tokens
        self.k = k

    def sources_for(self, question: str, model: LoadedModel) -> tuple[list[Source], list[dict]]:
        hits = self.kb.search(question, k=self.k)
        if not hits:
            return [], plain_messages(question)
        budget = model.context - min(self.max_tokens, model.context // 2) - RESERVE_TOKENS
        budget -= model.token_count(GROUNDED_PROMPT) + model.token_count(question)
        sources: list[Source] = []
        blocks: list[str] = []
        for hit in hits:
            number = len(sources) + 1
            where = ", ".join(part for part in (hit.title, hit.heading,
                                                f"page {hit.page}" if hit.page is not None else "") if part)
            block = f"[{number}] ({where})\n{hit.text.strip()}"
            cost = model.token_count(block) + 4
            if cost > budget:
                # Too long for what is left: keep the start of the passage if a useful part fits.
                words = hit.text.split()
                while words and cost > budget:
                    words = words[: int(len(words) * 0.75)]
                    block = f"[{number}] ({where})\n{' '.join(words)} ..."
                    cost = model.token_count(block) + 4
                if len(words) < 25:
                    break
            budget -= cost
            blocks.append(block)
            sources.append(Source(number=number, path=hit.path, title=hit.title, section=hit.heading, page=hit.page,
                                  snippet=hit.snippet, score=round(hit.score, 4)))
        if not sources:
            return [], plain_messages(question)
        user = "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
        return sources, [{"role": "system", "content": GROUNDED_PROMPT}, {"role": "user", "content": user}]
