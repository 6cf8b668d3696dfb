"""The embedded default task: a generated instruction dataset that needs no download.

Design
------
The package ships a tiny character-level Llama base model (``ecolora/assets/embedded_base``,
built by ``scripts/build_embedded_base.py``) and this generator of instruction records. The two
are made for each other so that federated LoRA fine-tuning on a laptop CPU shows a real learning
curve within the default budget:

* The base model was pretrained on a generated *corpus* of plain statements that teach it the
  underlying **skills and facts**: "The capital of Zorbia is Quelt.", "12 plus 7 is 19.",
  "The word abcd starts with a and ends with d.", "In capitals, hello is HELLO.", "The word
  hello has 5 letters." and so on, in several surface forms, some with the operand on its own
  line (like a record's context), and also the instruction phrasings answered in prose
  ("What is 3 plus 4? The answer is 7."). It never saw the ``Q: ...\\nA: `` prompt format
  (see :mod:`ecolora.data.prompt`), nor an answer that is followed directly by EOS (every
  corpus statement ends with a full stop; EOS only ends a document).
* Therefore the base scores (close to) zero exact match on these records: after ``A:`` it does
  not know that it must answer at once, answer *only* and stop with EOS. LoRA has to learn
  that mapping from the prompt format onto the skills the base already has, and to make the
  skills reliable in that new context: tens to a few hundred small steps of work, not
  thousands, which is what makes the methods' differences (communication compression,
  aggregation) visible in a short run.

Categories (answers are short and scored by exact match):

``lookup``      facts about made-up countries from a fixed table (``FACTS``, seed 1234):
                capital and language. Train and eval necessarily share the table.
``arithmetic``  addition and subtraction of numbers in 0..19 (results >= 0).
``letter``      the first or the last letter of a random lowercase string of 3-7 letters.
``uppercase``   write a random lowercase string of 3-6 letters in capitals.
``count``       number of letters of a random lowercase string of 2-9 letters.

Records for a given ``(n, seed)`` are deterministic; categories are balanced (round robin over
a seeded shuffle). Random strings come from a huge space, so train (``seed``) and eval
(``seed + 10_000``) rarely overlap, except for ``lookup`` (the shared fact table) and
``arithmetic`` (only 20 x 20 operand pairs per operation: there the base must already know the
sums, LoRA only has to route the question to them).
"""

from __future__ import annotations

import random
from pathlib import Path

EMBEDDED_BASE_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "embedded_base"

CATEGORIES: tuple[str, ...] = ("lookup", "arithmetic", "letter", "uppercase", "count")

FACT_SEED = 1234
N_COUNTRIES = 40
ARITH_MAX = 19  # operands in 0..ARITH_MAX

LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CONS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"


def _name(rng: random.Random, syllables: int) -> str:
    s = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(syllables))
    if rng.random() < 0.5:
        s += rng.choice("lnrst")
    return s.capitalize()


def _make_facts() -> list[dict[str, str]]:
    """A fixed table of made-up countries with a capital and a language (unique names)."""
    rng = random.Random(FACT_SEED)
    used: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            s = _name(rng, syllables)
            if s not in used:
                used.add(s)
                return s

    facts = []
    for _ in range(N_COUNTRIES):
        country = fresh(rng.choice((2, 3)))
        capital = fresh(2)
        language = fresh(2)
        facts.append({"country": country, "capital": capital, "language": language})
    return facts


#: The fixed fact table shared by the corpus (base model) and the ``lookup`` records.
FACTS: list[dict[str, str]] = _make_facts()


def random_word(rng: random.Random, lo: int, hi: int) -> str:
    """A random lowercase string with length in ``[lo, hi]``."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def _lookup(rng: random.Random) -> dict[str, str]:
    f = rng.choice(FACTS)
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            return {"instruction": f"What is the capital of {f['country']}?", "context": "",
                    "response": f["capital"]}
        return {"instruction": "Name the capital of this country.", "context": f["country"],
                "response": f["capital"]}
    if rng.random() < 0.5:
        return {"instruction": f"Which language is spoken in {f['country']}?", "context": "",
                "response": f["language"]}
    return {"instruction": "Name the language of this country.", "context": f["country"],
            "response": f["language"]}


def _arithmetic(rng: random.Random) -> dict[str, str]:
    a, b = rng.randint(0, ARITH_MAX), rng.randint(0, ARITH_MAX)
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            return {"instruction": f"What is {a} plus {b}?", "context": "",
                    "response": str(a + b)}
        return {"instruction": "Add the two numbers.", "context": f"{a} and {b}",
                "response": str(a + b)}
    a, b = max(a, b), min(a, b)
    if rng.random() < 0.5:
        return {"instruction": f"What is {a} minus {b}?", "context": "", "response": str(a - b)}
    return {"instruction": "Subtract the second number from the first.",
            "context": f"{a} and {b}", "response": str(a - b)}


def _letter(rng: random.Random) -> dict[str, str]:
    w = random_word(rng, 3, 7)
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            return {"instruction": f"What is the first letter of {w}?", "context": "",
                    "response": w[0]}
        return {"instruction": "Give the first letter of this word.", "context": w,
                "response": w[0]}
    if rng.random() < 0.5:
        return {"instruction": f"What is the last letter of {w}?", "context": "",
                "response": w[-1]}
    return {"instruction": "Give the last letter of this word.", "context": w, "response": w[-1]}


def _uppercase(rng: random.Random) -> dict[str, str]:
    w = random_word(rng, 3, 6)
    if rng.random() < 0.5:
        return {"instruction": f"Write {w} in capital letters.", "context": "",
                "response": w.upper()}
    return {"instruction": "Convert this word to upper case.", "context": w,
            "response": w.upper()}


def _count(rng: random.Random) -> dict[str, str]:
    w = random_word(rng, 2, 9)
    if rng.random() < 0.5:
        return {"instruction": f"How many letters are in {w}?", "context": "",
                "response": str(len(w))}
    return {"instruction": "Count the letters of this word.", "context": w,
            "response": str(len(w))}


_MAKERS = {
    "lookup": _lookup,
    "arithmetic": _arithmetic,
    "letter": _letter,
    "uppercase": _uppercase,
    "count": _count,
}


def make_records(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` instruction records, deterministic in ``(n, seed)``, categories balanced.

    Each record is ``{"instruction", "context", "response", "category"}`` (context may be "").
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"ecolora-embedded-{seed}")
    k = len(CATEGORIES)
    cats = [CATEGORIES[i % k] for i in range(n)]
    rng.shuffle(cats)
    out = []
    for cat in cats:
        rec = _MAKERS[cat](rng)
        rec["category"] = cat
        out.append(rec)
    return out
