"""Test helpers: a real OpenAI-compatible server process with an oracle and fault injection."""
