#!/usr/bin/env python3
"""A golden case's HF checkpoint (golden/cases/<case>/model/) to an F32 GGUF, with the
convert_hf_to_gguf.py of the pinned llama.cpp (scripts/check-llama-cpp):

    convert.py LLAMA_CPP_SRC CHECKPOINT_DIR OUT.gguf [--add-llama4-scaling]

llama.cpp's own Mistral 4 conversion is used unchanged (conversion/mistral3.py, class
Mistral3Model.Mistral4Model: DeepSeek-V2's MLA + MoE tensors, architecture "mistral4"). Two
things are added, both outside the model's function:
  - the converter registers Mistral 4 only under Mistral3ForConditionalGeneration (the published
    multimodal checkpoint, whose text_config has model_type "mistral4"); the golden text cases
    are the bare Mistral4ForCausalLM, registered here to that same class;
  - the golden checkpoints have no tokenizer: the vocabulary written is a placeholder list of
    vocab_size tokens (<unk>, <s>, </s>, the 256 byte tokens llama.cpp looks up at load, then
    <tN>). Token ids go to llama.cpp as ids (tools/llama-cpp/dump.c), so the text is never used.
--add-llama4-scaling is an experiment, not llama.cpp's conversion: this HF path writes no
attention temperature, so llama.cpp leaves out Mistral 4's Llama-4 query scaling; the flag writes
the two keys its graph reads (attention.temperature_scale = llama_4_scaling_beta,
attention.temperature_length = original_max_position_embeddings), as the converter's own
Mistral-format path (conversion/mistral.py, MistralMoeModel) does.
"""

import sys
from pathlib import Path


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[4:] not in ([], ["--add-llama4-scaling"]):
        sys.exit(__doc__.split("\n\n")[1])
    src, ckpt, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    add_llama4_scaling = len(sys.argv) == 5
    sys.path.insert(0, str(src / "gguf-py"))
    sys.path.insert(0, str(src))
    import gguf
    import convert_hf_to_gguf as conv
    from placeholder_vocab import write_placeholder_vocab
    import conversion
    from conversion.mistral3 import Mistral3Model

    def placeholder_vocab(self):
        write_placeholder_vocab(self.gguf_writer, gguf, self.hparams)

    llama_cpp_parameters = Mistral3Model.Mistral4Model.set_gguf_parameters

    def parameters_with_llama4_scaling(self):
        llama_cpp_parameters(self)
        rope = self.hparams["rope_parameters"]
        self.gguf_writer.add_attn_temperature_scale(rope["llama_4_scaling_beta"])
        self.gguf_writer.add_attn_temperature_length(rope["original_max_position_embeddings"])

    Mistral3Model.Mistral4Model.set_vocab = placeholder_vocab
    if add_llama4_scaling:
        Mistral3Model.Mistral4Model.set_gguf_parameters = parameters_with_llama4_scaling
    conv.ModelBase.register("Mistral4ForCausalLM")(Mistral3Model)
    conversion.TEXT_MODEL_MAP["Mistral4ForCausalLM"] = "mistral3"
    sys.argv = ["convert_hf_to_gguf.py", "--outtype", "f32", "--outfile", out, ckpt]
    conv.main()


if __name__ == "__main__":
    main()
