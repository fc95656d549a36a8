"""Generative serving: output tokens/s of finalmile's OpenAI-compatible endpoint at concurrency 1, 4 and 16, against
the same engine called one request at a time in-process and against the engine's own library (transformers'
`pipeline`; llama-cpp-python's `Llama.create_completion`), side by side, for both engines: transformers on the Hugging
Face directory and llama.cpp on the same model written as GGUF (float32).

    .venv/bin/python bench/generation.py [--requests 48] [--max-tokens 32] [--layers 6] [--width 512]

The model is a randomly initialised GPT-2 (made here, nothing downloaded: 6 layers of width 512, 19M parameters,
76 MB as float32 — more than the CPU's caches hold, as every real model's weights are; a 400-token BPE vocabulary
trained on a few sentences, 512 positions) decoding greedily; on a model that fits in cache (`--layers 4 --width
256`) a token's decoding is so short that a call's HTTP, batcher and log work decide the figures, and llama.cpp's
batching shows little; every call asks for `--max-tokens` tokens,
and the figure counts the tokens really returned (a random model may stop early at its end-of-text token). The
served figures go through real HTTP (`finalmile serve`, a token checked on every call, every call logged) with the
calls of each client sent back to back; the batcher decodes the prompts that wait together.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from serving import _server  # noqa: E402
from tests.fixtures import gpt2_to_gguf, tiny_language_models  # noqa: E402

from finalmile import Client  # noqa: E402
from finalmile.runtimes.generation import prompt_table  # noqa: E402

WORDS = "the quick brown fox jumps over the lazy dog hello world how are you today".split()


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(4 + i % 5)) for i in range(n)]


def alone(model: Path, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """The same engine (finalmile's runtime for the model: transformers or llama.cpp) one request after another,
    in-process."""
    if model.suffix == ".gguf":
        from finalmile.runtimes.gguf import GGUFRuntime

        runtime: Any = GGUFRuntime.from_file(model)
    else:
        from finalmile.runtimes.transformers import TransformersRuntime

        runtime = TransformersRuntime.from_directory(model, "text-generation")
    tokens, started = 0, time.perf_counter()
    for text in texts:
        out = runtime.predict(prompt_table(prompt=[text], max_tokens=[max_tokens], temperature=[0.0]))
        tokens += int(out.column("tokens_out")[0].as_py())
    return tokens / (time.perf_counter() - started), tokens


def hf_pipeline(directory: Path, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """transformers' own text-generation pipeline, one prompt at a time."""
    from transformers import pipeline
    from transformers.utils import logging

    logging.disable_progress_bar()
    generate = pipeline("text-generation", model=str(directory), device="cpu")
    tokenizer = generate.tokenizer
    tokens, started = 0, time.perf_counter()
    for text in texts:
        out = generate(text, max_new_tokens=max_tokens, do_sample=False, return_tensors=True)
        tokens += len(out[0]["generated_token_ids"]) - len(tokenizer(text)["input_ids"])
    return tokens / (time.perf_counter() - started), tokens


def hf_continuous(directory: Path, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """transformers' own continuous batching (`generate_batch`: its `ContinuousBatchingManager`, paged attention),
    every prompt handed in at once, after a warm-up call that sizes its cache (greedy, no end-of-text stop)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    ids = [tokenizer(text)["input_ids"] for text in texts]
    model.generate_batch(inputs=ids[:4], generation_config=config, progress_bar=False)
    started = time.perf_counter()
    out = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    tokens = sum(len(o.generated_tokens) for o in out.values())
    return tokens / (time.perf_counter() - started), tokens


def llama_cpp_alone(gguf: Path, texts: list[str], max_tokens: int) -> tuple[float, int]:
    """llama-cpp-python's own completion call, one prompt at a time (greedy)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=512, verbose=False)
    tokens, started = 0, time.perf_counter()
    for text in texts:
        out = llm.create_completion(text, max_tokens=max_tokens, temperature=0.0)
        tokens += int(out["usage"]["completion_tokens"])  # type: ignore[index]
    return tokens / (time.perf_counter() - started), tokens


async def served(
    url: str, token: str, texts: list[str], concurrency: int, max_tokens: int, model: str = "lm"
) -> dict[str, float]:
    """`concurrency` clients, each sending its share of `texts` back to back to /v1/completions."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            text = queue.get_nowait()
            body = {"model": model, "prompt": text, "max_tokens": max_tokens, "temperature": 0}
            sent = time.perf_counter()
            answer = await http.post(f"{url}/v1/completions", json=body)
            answer.raise_for_status()
            latencies.append(time.perf_counter() - sent)
            tokens += int(answer.json()["usage"]["completion_tokens"])

    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"tokens_s": tokens / wall, "tokens": tokens, "p50_s": statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    console = Console(width=150)
    texts = prompts(args.requests)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        causal, _ = tiny_language_models(work / "models", context=512, width=args.width, layers=args.layers)
        gguf = gpt2_to_gguf(causal, work / "models" / "lm.gguf")
        tokens: dict[str, str] = {}
        for model, source in (("lm", causal), ("lm-gguf", gguf)):  # a server each: torch and llama.cpp in one
            with Client(home=work / model) as client:  # process slow llama.cpp 2-4x (two OpenMP runtimes' threads)
                client.upload_model(model, source)
                workers = 4 if model == "lm-gguf" else 1  # llama.cpp: calls join the rows decoding (see gguf.py)
                client.build_pipeline(model).add_model_step(f"{model}:1").deploy(max_batch_size=16, max_delay_ms=5,
                                                                                  workers=workers)  # fmt: skip
                tokens[model] = client.services.init_access("bench")[1]
        sections: dict[str, list[tuple[str, float, int]]] = {"transformers": [], "llama.cpp (GGUF)": []}
        # llama.cpp in a fresh process: where torch has run on another thread (making the models above), llama.cpp
        # decodes 2-4x slower (OpenMP thread pools of both on the same cores); the servers below are a process each.
        with console.status("the engines, one request at a time, in-process"):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
                ours = fresh.submit(alone, gguf, texts, args.max_tokens).result()
                theirs = fresh.submit(llama_cpp_alone, gguf, texts, args.max_tokens).result()
            sections["llama.cpp (GGUF)"].append(("finalmile's engine in-process, one at a time", *ours))
            sections["llama.cpp (GGUF)"].append(("llama-cpp-python create_completion(), one at a time", *theirs))
            sections["transformers"].append(
                ("finalmile's engine in-process, one at a time", *alone(causal, texts, args.max_tokens))
            )
            sections["transformers"].append(
                ("transformers pipeline(), one at a time", *hf_pipeline(causal, texts, args.max_tokens))
            )
            sections["transformers"].append(
                ("transformers generate_batch() (its continuous batching), all at once",
                 *hf_continuous(causal, texts, args.max_tokens))
            )  # fmt: skip
        for section, model in (("transformers", "lm"), ("llama.cpp (GGUF)", "lm-gguf")):
            token = tokens[model]
            headers = {"authorization": f"Bearer {token}"}
            with _server(sys.executable, (), work / model, headers, ready=f"/v2/models/{model}/ready") as url:
                asyncio.run(served(url, token, texts[:4], 1, args.max_tokens, model))  # warm
                for concurrency in (1, 4, 16):
                    with console.status(f"{section} served, concurrency {concurrency}"):
                        figures = asyncio.run(served(url, token, texts, concurrency, args.max_tokens, model))
                    sections[section].append((f"finalmile /v1/completions, concurrency {concurrency}",
                                              figures["tokens_s"], int(figures["tokens"])))  # fmt: skip
    table = Table(title=f"output tokens/s, {args.requests} calls of {args.max_tokens} tokens (GPT-2 "
                        f"{args.layers}x{args.width}, CPU)")  # fmt: skip
    table.add_column("engine")
    table.add_column("what")
    table.add_column("tokens/s", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("vs one at a time", justify="right")
    for section, rows in sections.items():
        base = rows[0][1]
        for name, rate, tokens in rows:
            table.add_row(section, name, f"{rate:,.0f}", str(tokens), f"{rate / base:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
