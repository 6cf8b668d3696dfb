"""The embedded default task: a generated instruction dataset that needs no download.

Design
------
The package ships a tiny character-level Llama base model (``ecolora/assets/embedded_base``,
built by ``scripts/build_embedded_base.py``) and this generator of instruction records. The two
are made for each other so that federated LoRA fine-tuning on a laptop CPU shows a real learning
curve within the default budget:

* The base model was pretrained on a generated *corpus* of plain statements that teach it the
  underlying **skills and facts**: "The capital of Zorbia is Quelt.", "3 plus 4 is 7.",
  "The letter after c is d.", "The number 7 is spelled seven.", "The word hello has 5
  letters." and so on, in several surface forms, some with the operand on its own line (like
  a record's context), and also the instruction phrasings answered in prose ("Which letter
  comes after c? The answer is d."). It never saw the ``Q: ...\\nA: `` prompt format (see
  :mod:`ecolora.data.prompt`), nor an answer that is followed directly by EOS (every corpus
  statement ends with a full stop; EOS only ends a document).
* Therefore the base scores (close to) zero exact match on these records: after ``A:`` it does
  not know that it must answer at once, answer *only* and stop with EOS. LoRA has to learn
  that mapping from the prompt format onto the skills the base already has, and to make the
  skills reliable in that new context: tens to a few hundred small steps of work, not
  thousands, which is what makes the methods' differences (communication compression,
  aggregation) visible in a short run.

Categories (answers are short and scored by exact match):

``lookup``      facts about made-up countries from a fixed table (``FACTS``, seed 1234):
                capital and language.
``arithmetic``  addition and subtraction of digits 0..9 (results >= 0).
``alphabet``    the letter after / before a given letter.
``numbers``     number words <-> digits for 0..20.
``count``       the number of letters of a random lowercase string of 2-9 letters.

Why mostly memorised skills: a few-million-parameter character-level model pretrained for a
quarter of an hour on 2 CPU cores reliably learns facts and counting, but not copying or
reversing arbitrary strings or two-digit arithmetic (tried: the base stayed near zero on
those and LoRA could not get them close to the calibration target), so the categories are
the skills it does learn.

Records for a given ``(n, seed)`` are deterministic; categories are balanced (round robin over
a seeded shuffle). ``count`` uses random strings from a huge space, so its train (``seed``)
and eval (``seed + 10_000``) records rarely overlap; the other categories draw from small
fixed tables (40 countries x 2 facts, 155 digit sums/differences, 50 alphabet neighbours,
42 number conversions, each in two phrasings), so train and eval necessarily share them: there
the base already knows the answers and LoRA has to route the new prompt format to them.
"""

from __future__ import annotations

import random
from pathlib import Path

EMBEDDED_BASE_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "embedded_base"

CATEGORIES: tuple[str, ...] = ("lookup", "arithmetic", "alphabet", "numbers", "count")

FACT_SEED = 1234
N_COUNTRIES = 40
ARITH_MAX = 9  # operands in 0..ARITH_MAX

LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: Number words 0..20 (the ``numbers`` category).
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)
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


def _alphabet(rng: random.Random) -> dict[str, str]:
    i = rng.randrange(25)
    if rng.random() < 0.5:
        c, ans = LETTERS[i], LETTERS[i + 1]
        if rng.random() < 0.5:
            return {"instruction": f"Which letter comes after {c}?", "context": "",
                    "response": ans}
        return {"instruction": "Give the next letter of the alphabet.", "context": c,
                "response": ans}
    c, ans = LETTERS[i + 1], LETTERS[i]
    if rng.random() < 0.5:
        return {"instruction": f"Which letter comes before {c}?", "context": "", "response": ans}
    return {"instruction": "Give the previous letter of the alphabet.", "context": c,
            "response": ans}


def _numbers(rng: random.Random) -> dict[str, str]:
    k = rng.randrange(len(NUMBER_WORDS))
    w = NUMBER_WORDS[k]
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            return {"instruction": f"Write {w} as digits.", "context": "", "response": str(k)}
        return {"instruction": "Convert this number word to digits.", "context": w,
                "response": str(k)}
    if rng.random() < 0.5:
        return {"instruction": f"Write {k} in words.", "context": "", "response": w}
    return {"instruction": "Spell this number in words.", "context": str(k), "response": w}


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
    "alphabet": _alphabet,
    "numbers": _numbers,
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
