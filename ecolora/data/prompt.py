"""Prompt text for a record: the tokenizer's chat template when it has one, else one plain format.

A record is reduced to (history, instruction, context, response). The model sees the prompt and
is trained to continue it with ``response`` followed by the tokenizer's EOS token; the loss
covers the response (and EOS) only. Tokenizers without a chat template (base models, the
embedded one) get ``Q: ...\\nA: `` so that the embedded task and user files train alike; chat
models get the format they were tuned on, which is what makes their zero-shot scores meaningful.
"""

from __future__ import annotations

from typing import Any

from ecolora.errors import DataError

PROMPT_WITH_CONTEXT = "Q: {instruction}\n{context}\nA: "
PROMPT_NO_CONTEXT = "Q: {instruction}\nA: "
_PLAIN_ROLE = {"user": "Q: ", "assistant": "A: ", "system": ""}


def format_prompt(instruction: str, context: str = "") -> str:
    """The text the model is conditioned on; the answer follows it directly."""
    if context:
        return PROMPT_WITH_CONTEXT.format(instruction=instruction, context=context)
    return PROMPT_NO_CONTEXT.format(instruction=instruction)


def prompt_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """Earlier turns plus the user turn (instruction, then the context after a blank line)."""
    user = record["instruction"]
    if record.get("context"):
        user = f"{user}\n\n{record['context']}"
    return [*record.get("history", ()), {"role": "user", "content": user}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(record: dict[str, Any], tokenizer: Any) -> str:
    """The prompt text. With a chat template it already holds the special tokens it needs."""
    if has_chat_template(tokenizer):
        try:
            return tokenizer.apply_chat_template(prompt_messages(record), tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as exc:  # jinja TemplateError and friends: the template rejects the turns
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"the tokenizer's chat template rejects a record: {reason}") from None
    turns = record.get("history", ())
    history = "".join(f"{_PLAIN_ROLE[m['role']]}{m['content']}\n" for m in turns)
    return history + format_prompt(record["instruction"], record.get("context", ""))
