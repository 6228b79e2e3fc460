"""The vocabulary llama.cpp's converters write for a checkpoint without a tokenizer (the golden
cases, the peer benchmark's synthetic model): a placeholder list of vocab_size tokens — <unk>, <s>,
</s>, the 256 byte tokens llama.cpp looks up at load, then <tN> — enough for a run that feeds
token ids, never text (tools/llama-cpp/convert.py, bench/peer/convert_to_gguf.py)."""


def write_placeholder_vocab(writer, gguf, hparams):
    """Writes the placeholder vocabulary with gguf's writer; hparams holds vocab_size and the
    bos/eos token ids of the checkpoint's config."""
    n = hparams["vocab_size"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256
    tokens += [f"<t{i}>" for i in range(len(tokens), n)]
    types += [gguf.TokenType.NORMAL] * (n - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(hparams["bos_token_id"])
    writer.add_eos_token_id(hparams["eos_token_id"])
    writer.add_add_bos_token(False)
