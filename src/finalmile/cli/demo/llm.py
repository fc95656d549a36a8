"""`finalmile demo llm`: a generative model from upload to answers, logs and figures, on embedded defaults.

The model is made here — a randomly initialised GPT-2 and a byte-level BPE tokenizer trained on a few sentences,
saved as a Hugging Face directory — so nothing is downloaded; its answers are noise, but every path is the real one:
the upload, the batched decoding of concurrent calls, the guardrail, the inference log and its figures.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from finalmile.client import LocalClient

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today?",
    "finalmile serves models fast and logs every call",
    "contact me at someone@example.com or call 555 0100",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_language_models(directory: Path, context: int = 128, width: int = 32, layers: int = 2) -> tuple[Path, Path]:
    """A randomly initialised GPT-2 causal LM and a GPT-2 encoder (an embedding model) with a byte-level BPE
    tokenizer trained here, saved as Hugging Face directories: nothing is downloaded. Returns (causal, encoder)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers, n_head=4,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    saved = []
    for name, model in (("causal", GPT2LMHeadModel(config)), ("encoder", GPT2Model(config))):
        path = directory / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        saved.append(path)
    return saved[0], saved[1]


def run_llm_demo(client: LocalClient, console: Console) -> None:
    """Upload, deploy behind a guardrail, answer concurrent calls decoded together, and read the log."""
    causal, _ = tiny_language_models(client.settings.home / "demo-llm")
    version = client.upload_model("tiny-lm", causal)
    console.print(f"[bold]1. uploaded[/] tiny-lm:{version.version} ({version.framework}, {version.task})")
    pipeline = client.build_pipeline("tiny-chat").add_model_step(f"tiny-lm:{version.version}")
    pipeline.add_guardrail("pii", pii=["email", "card", "phone"], action="redact").deploy(max_batch_size=16)
    console.print("[bold]2. deployed[/] tiny-chat: the model, then a guardrail that redacts personal data")
    prompts = [f"hello world, question {i}" for i in range(16)]

    def call(prompt: str) -> pd.DataFrame:
        return pipeline.infer(pd.DataFrame({"prompt": [prompt], "max_tokens": [12], "temperature": [0.0]}))

    with ThreadPoolExecutor(len(prompts)) as pool:  # concurrent calls: the batcher decodes them together
        answers = pd.concat(list(pool.map(call, prompts)), ignore_index=True)
    table = Table(title="3. sixteen concurrent calls (a random model: its words are noise)")
    for column in ("prompt", "completion", "tokens_out", "finish_reason", "ttft_ms"):
        table.add_column(column)
    for prompt, row in list(zip(prompts, answers.itertuples(), strict=True))[:4]:
        table.add_row(prompt, repr(row.completion), str(row.tokens_out), row.finish_reason, f"{row.ttft_ms:.1f}")
    console.print(table)
    client.services.logs.flush()
    figures = client.query(
        "SELECT count(*) AS calls, sum(out_tokens_out) AS tokens_out, quantile_cont(out_ttft_ms, 0.99) AS ttft_p99_ms,"
        " median(out_tokens_per_s) AS tokens_per_s FROM logs WHERE pipeline = 'tiny-chat'"
    )
    console.print("[bold]4. every call is in the log[/], queryable with SQL:")
    console.print(figures.to_string(index=False))
    console.print(
        "Serve it with `finalmile serve` and call it with the openai client: "
        "OpenAI(base_url='http://localhost:8000/v1', api_key=<a finalmile token>), model='tiny-chat'."
    )


def gpt2_to_gguf(directory: Path, out: Path, template: str | None = None, pooling: bool = False) -> Path:
    """A GPT-2 Hugging Face directory (as `tiny_language_models` writes) as one GGUF file for llama.cpp, float32,
    with its byte-level BPE vocabulary, merges and chat template (or `template`): the GGUF path's test model, made
    offline. `pooling`: marked as an embedding model (the mean of its last hidden states)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((directory / "config.json").read_text())
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    template_file = directory / "chat_template.jinja"
    template = template or (template_file.read_text() if template_file.is_file() else CHAT_TEMPLATE)
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {a["content"] for a in tokenizer.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    eos = vocab["<eos>"]

    writer = gguf.GGUFWriter(str(out), "gpt2")
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(config["n_positions"])
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.GPT2, config["n_layer"])
    weights = load_file(str(directory / "model.safetensors"))
    for name, array in weights.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal masks, not weights
        if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            array = array.T  # GPT-2's Conv1D keeps (in, out); GGUF wants (out, in) like a linear layer
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"{name}: not a GPT-2 tensor")
        writer.add_tensor(mapped, np.ascontiguousarray(array, dtype=np.float32))
        if mapped == "token_embd.weight":  # the output layer is tied to the embeddings
            writer.add_tensor("output.weight", np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
