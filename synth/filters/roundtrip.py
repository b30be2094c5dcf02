"""The round trip of a back-translation pair: the LLM translates the synthetic side back into the
source language, and chrF (sacrebleu) between that and the authentic text is a second score, one
the embedder has no part in (the seeds' iterative back-translation check).

It runs after the filter chain as a follow-up stage (synth.job.FollowupStage), so its requests go
through the run's runner and generation cache: counted and costed in stats.json (`stages`), cached,
and not sent again on a rerun. `borderline` asks only about the pairs the embedding step could not
decide (they reach this stage with `borderline` set: synth.filters.embedding.undecided), `all`
about every pair kept so far. A borderline pair is kept when its round trip reaches `min_chrf`
and matches its own text better than any other text of the chunk (a fluent answer about another
article comes back as that article: chrF between two articles of one language reaches 40-50, so
the absolute score alone cannot tell); with `all`, a pair the embeddings kept is dropped when its
round trip fails either test too.
What rescues languages the embedder barely knows: on bench/filters.py, Wolof keeps 82% of its good
article pairs and 67% of its good sentence pairs on embeddings alone, 100% and 94.5% with the round
trip (answered by an oracle there: an upper bound).
"""

from synth.generate.request import Request
from synth.generate.tasks.backtranslate import BacktranslateTask


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return round(CHRF().sentence_score(hypothesis, [reference]).score, 2)


# The other texts a round trip is compared with: at most this many of the chunk's, evenly spread
# (chrF is ~0.1 ms a pair; with --round-trip all every kept pair is asked).
MAX_RIVALS = 64


def _others(texts: list[str], own: str) -> list[str]:
    others = [text for text in texts if text != own]
    step = max(1, len(others) // MAX_RIVALS)
    return others[::step][:MAX_RIVALS]


class RoundTripStage:
    name = "round_trip"

    def __init__(self, prompt, lang: str, pivot: str, mode: str = "borderline", min_chrf: float = 40.0):
        if mode not in ("borderline", "all"):
            raise ValueError(f"round trip mode {mode!r}: borderline or all")
        self.prompt, self.lang, self.pivot, self.mode, self.min_chrf = prompt, lang, pivot, mode, min_chrf
        # The back-translation task the other way: the synthetic `pivot` side back into `lang`.
        self.task = BacktranslateTask(prompt, pivot, lang)
        self._counts: dict = {}

    def requests(self, rows: list[dict]) -> list[tuple[int, Request]]:
        return [
            (index, self.task.request(row["translation"]))
            for index, row in enumerate(rows)
            if row.get("translation") and (self.mode == "all" or row.get("borderline"))
        ]

    def parse(self, request: Request, text: str) -> str:
        """The translation back; unusable ("") when the answer holds none."""
        return self.task.parse(request, text)

    def judge(self, rows: list[dict], answers: dict[int, str | None], dropped: list[dict] = ()) -> list[str | None]:
        """`answers`: row index -> `parse`'s translation back, None where no attempt was answered."""
        # The chunk's authentic texts, the dropped rows' too: a round trip that matches another
        # text better than its own says the translation belongs to that other text (an answer
        # about something else comes back as that something else).
        texts = list(dict.fromkeys(row["text"] for row in (*rows, *dropped) if row.get("text")))
        verdicts: list[str | None] = []
        counts = {"rescued": 0, "confirmed": 0, "dropped": 0, "unanswered": 0}
        for index, row in enumerate(rows):
            borderline = bool(row.get("borderline"))
            if index not in answers:
                verdicts.append(None)
                continue
            back = answers[index]
            if back is None:
                counts["unanswered"] += 1
                # Undecided and unconfirmed: not kept. A pair the embeddings kept stays.
                verdicts.append("round_trip:no_answer" if borderline else None)
                continue
            score = chrf(back, row["text"])
            row["round_trip_chrf"] = score
            rival = max((chrf(back, text) for text in _others(texts, row["text"])), default=0.0)
            if score < self.min_chrf:
                counts["dropped"] += 1
                verdicts.append(f"round_trip:chrf={score:.1f}")
            elif rival >= score:
                counts["dropped"] += 1
                verdicts.append(f"round_trip:closer_to_another_text={rival:.1f}>={score:.1f}")
            else:
                counts["rescued" if borderline else "confirmed"] += 1
                verdicts.append(None)
        self._counts = counts
        return verdicts

    @property
    def counts(self) -> dict:
        return dict(self._counts)
