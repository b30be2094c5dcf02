"""vLLM in this process (`--backend vllm --model PATH_OR_NAME`): offline batch generation on a GPU
machine with `vllm.LLM`, no server in between.

The same prompts, parser, cache and outputs as the served path: the runner hands requests to
`complete` one by one as with any backend, and they are gathered into one `LLM.chat` call per batch
(vLLM then schedules the whole batch itself, which is where its throughput comes from). The
sampling parameters keep their OpenAI names, which are also `vllm.SamplingParams`'s. vllm is
imported on the worker thread, when the model loads: `import synth` never needs it.

vLLM and Prefect cannot share a venv (their fastapi pins exclude each other), so this backend runs
in a venv of its own that holds vLLM and synth's library (scripts/vllm_env.sh, docs/vllm.md).
"""

import importlib.util

from synth.generate.backends import Completion, FatalError, MicroBatchedBackend

INSTALL_HINT = (
    "make a venv with vLLM and synth (VLLM_PACKAGE=vllm==0.32.0 scripts/vllm_env.sh, see docs/vllm.md) on a machine "
    "with an NVIDIA GPU, or serve the model with `vllm serve` and pass --base-url"
)


class VLLMBackend(MicroBatchedBackend):
    """`engine_args` go to `vllm.LLM` as they are (tensor_parallel_size, max_model_len, dtype, ...)."""

    def __init__(self, model: str, engine_args: dict | None = None, batch_size: int = 4096, gather_seconds: float = 0.05):
        if importlib.util.find_spec("vllm") is None:
            raise FatalError(f"--backend vllm needs the vllm package, which is not installed: {INSTALL_HINT}")
        self.model = model
        self.engine_args = dict(engine_args or {})
        super().__init__(batch_size, gather_seconds)

    def _load(self):
        import vllm
        from vllm.platforms import current_platform

        # The CUDA build imports fine on a machine without a GPU and only fails deep in engine start.
        if current_platform.is_unspecified():
            raise FatalError(f"--backend vllm found no GPU that vLLM can use on this machine: {INSTALL_HINT}")
        try:
            return vllm.LLM(model=self.model, **self.engine_args)
        except Exception as error:
            raise FatalError(f"vLLM could not load {self.model!r}: {type(error).__name__}: {error}") from error

    def _generate(self, llm, batch) -> list[Completion]:
        import vllm

        sampling = vllm.SamplingParams(**batch[0][1])
        outputs = llm.chat([messages for messages, _, _ in batch], sampling, use_tqdm=False)
        completions = []
        for output in outputs:
            answer = output.outputs[0]
            completions.append(Completion(answer.text, len(output.prompt_token_ids or ()), len(answer.token_ids), answer.finish_reason))
        return completions
