#!/usr/bin/env python3
"""Converts the peer benchmark's synthetic Mistral 4 checkpoint (make_checkpoint.py, its bf16/
folder) to GGUF with llama.cpp's own converter (convert_hf_to_gguf.py, as vendored in the
llama-cpp-python sdist), for llama-bench:

    convert_to_gguf.py LLAMA_CPP_SRC CHECKPOINT_DIR OUT.gguf bf16|q8_0|q8_0-bf16-head

q8_0-bf16-head is q8_0 with the output matrix (lm_head) kept bf16, as the published FP8 checkpoint
keeps it (quantization_config.modules_to_not_convert: lm_head): the peer that reads the same
bytes per token as our fp8/ checkpoint. The converter's own q8_0 quantises the lm_head too, which
halves the largest read of a decode step (1.07 GB → 0.57 GB at vocab 131072).

The converter does not know the bare text model Mistral4ForCausalLM, so this registers it as its
DeepSeek-V2/V3 model (the same MLA + MoE layer: q_a/q_b LoRA, kv_a with the shared rope key,
kv_b split into k_b/v_b for the absorbed attention, 128 experts + 1 shared) with four
adaptations, all in the class below:
  - Mistral 4's routing is a softmax over the experts, without a correction bias
    (scoring_func "softmax"), and its YaRN settings are under rope_parameters (copied to
    rope_scaling, which the converter reads);
  - the routed experts are stored stacked, mlp.experts.gate_up_proj [E, 2F, D] (gate rows first)
    and mlp.experts.down_proj [E, D, F], where the converter expects one tensor per expert: they
    are split into the converter's merged gate/up/down stacks directly;
  - the synthetic checkpoint has no tokenizer: the vocabulary written is a placeholder
    SentencePiece-style list of vocab_size tokens (<unk>, <s>, </s>, the 256 byte tokens
    llama.cpp looks up at load, then <tN>), enough for llama-bench, which feeds random token ids;
  - Llama-4 query scaling (llama_4_scaling_beta) has no GGUF key in this llama.cpp and is left
    out: a per-position multiply of the query, nothing that changes the timing.
The GGUF therefore holds the same weights (bf16 as they are; q8_0 quantised by the converter) in
the same shapes, but llama.cpp does not compute Mistral 4's exact function: it is a timing peer
only.
"""

import re
import sys
from pathlib import Path


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("bf16", "q8_0", "q8_0-bf16-head"):
        sys.exit(__doc__.split("\n\n")[1])
    src, ckpt, out, outtype = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    bf16_head = outtype == "q8_0-bf16-head"
    sys.path.insert(0, str(src / "gguf-py"))
    sys.path.insert(0, str(src))
    import gguf
    import convert_hf_to_gguf as conv
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tools" / "llama-cpp"))
    from placeholder_vocab import write_placeholder_vocab

    @conv.ModelBase.register("Mistral4ForCausalLM")
    class Mistral4TextModel(conv.DeepseekV2Model):
        model_arch = gguf.MODEL_ARCH.DEEPSEEK2

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            h = self.hparams
            h["scoring_func"] = "softmax"
            h["rope_scaling"] = dict(h["rope_parameters"])
            h["rope_theta"] = h["rope_parameters"]["rope_theta"]

        def set_vocab(self):
            write_placeholder_vocab(self.gguf_writer, gguf, self.hparams)

        def tensor_force_quant(self, name, new_name, bid, n_dims):
            if bf16_head and new_name == self.format_tensor_name(gguf.MODEL_TENSOR.OUTPUT):
                return gguf.GGMLQuantizationType.BF16
            return super().tensor_force_quant(name, new_name, bid, n_dims)

        def modify_tensors(self, data_torch, name, bid):
            m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)", name)
            if not m:
                return super().modify_tensors(data_torch, name, bid)
            F = self.hparams["moe_intermediate_size"]
            stack = f"model.layers.{m[1]}.mlp.experts.%s.weight"
            if m[2] == "down_proj":                                  # [E, D, F]
                return [(self.map_tensor_name(stack % "down_proj"), data_torch)]
            return [(self.map_tensor_name(stack % "gate_proj"), data_torch[:, :F, :]),   # [E, F, D]
                    (self.map_tensor_name(stack % "up_proj"), data_torch[:, F:, :])]

    sys.argv = ["convert_hf_to_gguf.py", "--outtype", "q8_0" if bf16_head else outtype, "--outfile", out, ckpt]
    conv.main()


if __name__ == "__main__":
    main()
