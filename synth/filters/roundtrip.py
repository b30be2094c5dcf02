"""The round trip of a back-translation pair: the LLM translates the synthetic side back into the
source language, and chrF (sacrebleu) between that and the authentic text is a second score, one
the embedder has no part in (the seeds' iterative back-translation check).

It runs after the filter chain as a follow-up stage (synth.job.FollowupStage), so its requests go
through the run's runner and generation cache: counted and costed in stats.json (`stages`), cached,
and not sent again on a rerun. `borderline` asks only about the pairs the embedding step could not
decide (they reach this stage with `borderline` set: synth.filters.embedding.undecided), `all`
about every pair kept so far. A borderline pair is kept when its round trip reaches
`min_chrf`; with `all`, a pair the embeddings kept is dropped when its round trip falls short too.
What rescues languages the embedder barely knows: on bench/filters.py, Wolof keeps 76% of its good
pairs on embeddings alone and 97% with the round trip.
"""

from synth.job import Request


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return round(CHRF().sentence_score(hypothesis, [reference]).score, 2)


class RoundTripStage:
    name = "round_trip"

    def __init__(self, prompt, lang: str, pivot: str, mode: str = "borderline", min_chrf: float = 40.0):
        if mode not in ("borderline", "all"):
            raise ValueError(f"round trip mode {mode!r}: borderline or all")
        self.prompt, self.lang, self.pivot, self.mode, self.min_chrf = prompt, lang, pivot, mode, min_chrf
        self._counts: dict = {}

    def requests(self, rows: list[dict]) -> list[tuple[int, Request]]:
        return [
            (index, Request(self.prompt.messages(row["translation"], self.pivot, self.lang)))
            for index, row in enumerate(rows)
            if row.get("translation") and (self.mode == "all" or row.get("borderline"))
        ]

    def is_usable(self, request: Request, text: str) -> bool:
        from synth.generate.tasks.backtranslate import parse_translation

        return bool(parse_translation(text, self.pivot, self.lang))

    def judge(self, rows: list[dict], answers: dict[int, str | None]) -> list[str | None]:
        from synth.generate.tasks.backtranslate import parse_translation

        verdicts: list[str | None] = []
        counts = {"rescued": 0, "confirmed": 0, "dropped": 0, "unanswered": 0}
        for index, row in enumerate(rows):
            borderline = bool(row.get("borderline"))
            if index not in answers:
                verdicts.append(None)
                continue
            answer = answers[index]
            if answer is None:
                counts["unanswered"] += 1
                # Undecided and unconfirmed: not kept. A pair the embeddings kept stays.
                verdicts.append("round_trip:no_answer" if borderline else None)
                continue
            score = chrf(parse_translation(answer, self.pivot, self.lang), row["text"])
            row["round_trip_chrf"] = score
            if score >= self.min_chrf:
                counts["rescued" if borderline else "confirmed"] += 1
                verdicts.append(None)
            else:
                counts["dropped"] += 1
                verdicts.append(f"round_trip:chrf={score:.1f}")
        self._counts = counts
        return verdicts

    @property
    def counts(self) -> dict:
        return dict(self._counts)
