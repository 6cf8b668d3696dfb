"""One prompt format for every dataset, so that the embedded task and user files train alike.

A record is reduced to (instruction, context, response). The model sees ``format_prompt(...)``
and is trained to continue it with ``response`` followed by the tokenizer's EOS token; the loss
covers the response (and EOS) only.
"""

from __future__ import annotations

PROMPT_WITH_CONTEXT = "Q: {instruction}\n{context}\nA: "
PROMPT_NO_CONTEXT = "Q: {instruction}\nA: "


def format_prompt(instruction: str, context: str = "") -> str:
    """The text the model is conditioned on; the answer follows it directly."""
    if context:
        return PROMPT_WITH_CONTEXT.format(instruction=instruction, context=context)
    return PROMPT_NO_CONTEXT.format(instruction=instruction)
