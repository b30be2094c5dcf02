"""Exact deduplication that stays small: 8-byte digests instead of whole sentences."""

import hashlib


class ExactDedup:
    """Remembers texts by a 64-bit BLAKE2b digest (80 to 100 bytes per text, set included).

    Texts should already be normalised. A false "seen" needs a 64-bit collision: about one
    chance in 37 million after a million texts, one in 3,700 after 100 million.
    """

    def __init__(self) -> None:
        self._digests: set[bytes] = set()

    def seen(self, text: str) -> bool:
        """True if `text` was seen before; otherwise remember it and return False."""
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        if digest in self._digests:
            return True
        self._digests.add(digest)
        return False

    def __len__(self) -> int:
        return len(self._digests)
