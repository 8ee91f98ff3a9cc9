"""Random-looking, unique Stripe-style identifiers."""

from __future__ import annotations

import random
import string

_ALPHABET = string.ascii_letters + string.digits


class SeededRandom(random.Random):
    """Reproducible randomness for ids and chaos decisions (a simulation, not cryptography)."""


class IdFactory:
    """Makes ids like ``sub_1Pgc6rB7WZ01zgkWNy0Cn5nw``; never the same one twice."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def new(self, prefix: str, length: int = 24) -> str:
        while True:
            body = "1" + "".join(self._rng.choices(_ALPHABET, k=length - 1))
            ident = f"{prefix}_{body}"
            if ident not in self._seen:
                self._seen.add(ident)
                return ident
