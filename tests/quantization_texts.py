"""Varied English sentences for the int8 accuracy tests, generated from word lists (seeded): different subjects,
verbs, objects, places, times, questions, negations, numbers, long and short ones, a few with unicode."""
from __future__ import annotations

import random

SUBJECTS = ["The old fisherman", "A young doctor", "My neighbour's cat", "The city council", "Our team",
            "A group of students", "The pilot", "Grandma", "The new manager", "A stray dog", "The orchestra",
            "Scientists at the lab", "The farmer", "Two children", "The government", "A famous chef"]
VERBS = ["repaired", "painted", "sold", "discovered", "cooked", "ignored", "celebrated", "photographed",
         "borrowed", "cancelled", "described", "delivered", "tested", "carried", "cleaned", "announced"]
OBJECTS = ["the broken bicycle", "a huge chocolate cake", "the quarterly report", "an ancient map",
           "the red umbrella", "three wooden chairs", "the election results", "a tiny robot", "the vaccine trial",
           "the wedding dress", "an unpaid invoice", "the football match", "a bag of apples", "the train schedule"]
PLACES = ["in the harbour", "at the hospital", "near the river", "in a small village", "on the rooftop",
          "at the airport", "behind the school", "in Paris", "under the bridge", "at the stadium"]
TIMES = ["yesterday", "last winter", "this morning", "after midnight", "in 1998", "every Sunday", "before lunch",
         "during the storm", "two weeks ago", "at dawn"]
QUESTIONS = ["Why did {s} say that {o} was missing?", "Where can I buy {o} {t}?", "Has anyone seen {o} {p}?",
             "How much does {o} cost?", "Who {v} {o} {t}?"]
EXTRAS = ["The weather is terrible today.", "I love this song!", "Stock prices fell 3.5% on Monday.",
          "Please restart the server before 10 pm.", "Café au lait, s'il vous plaît.", "東京 is a huge city.",
          "It was not the best idea, honestly.", "Error 404: page not found.", "The quick brown fox jumps.",
          "She said no.", "Quantum computers may break RSA encryption within decades."]


def varied_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences (statements, negations, questions, long compound ones and the fixed EXTRAS)."""
    rng = random.Random(seed)
    texts = list(EXTRAS)
    while len(texts) < count:
        s, v, o, p, t = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, PLACES, TIMES))
        kind = rng.randrange(5)
        if kind == 0:
            texts.append(f"{s} {v} {o} {p} {t}.")
        elif kind == 1:
            texts.append(f"{s} never {v} {o}, although everyone expected it {t}.")
        elif kind == 2:
            texts.append(rng.choice(QUESTIONS).format(s=s.lower(), v=v, o=o, p=p, t=t))
        elif kind == 3:
            s2, v2, o2 = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS))
            texts.append(f"{t.capitalize()}, {s.lower()} {v} {o} {p}, and then {s2.lower()} {v2} {o2} while "
                         f"{rng.randint(2, 999)} people watched from {rng.choice(PLACES).split(' ', 1)[1]}.")
        else:
            texts.append(f"{o.capitalize()} was {v} {p}.")
    return texts[:count]


def sentence_pairs(texts: list[str], count: int, seed: int = 1) -> list[tuple[int, int]]:
    """``count`` distinct index pairs (i < j) of ``texts``."""
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < count:
        i, j = sorted(rng.sample(range(len(texts)), 2))
        pairs.add((i, j))
    return sorted(pairs)
