"""One module per generation task, curator-style: its prompt (the template and how it is filled:
`requests`), its parser (`parse`: what an answer holds, raising synth.generate.request.Unusable
for an answer to retry) and its rows (`rows`), side by side. The jobs (synth.backtranslate,
synth.queries) keep the job's plumbing (filters, card, views) and hand these to the task."""
