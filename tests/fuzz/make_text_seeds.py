#!/usr/bin/env python3
"""Seeds for fuzz_tokenizer and fuzz_image (scripts/fuzz --seeds runs it; standard library only).

fuzz_tokenizer: mode byte 0 + text (the first cases of tests/fixtures/tokenizer/corpus.json, some
invalid UTF-8), mode byte 1 + a tiny tekken.json (256 byte tokens, a few merges, v7 and v15
spellings). fuzz_image: the small committed PNG/JPEG test images, as they are."""
import base64, json, os, shutil, sys

root, corpus = sys.argv[1], sys.argv[2]
tok_dir, img_dir = os.path.join(corpus, "fuzz_tokenizer"), os.path.join(corpus, "fuzz_image")
for d in (tok_dir, img_dir):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)

def put(name, mode, data):
    with open(os.path.join(tok_dir, name), "wb") as f:
        f.write(bytes([mode]) + data)

cases = json.load(open(os.path.join(root, "tests/fixtures/tokenizer/corpus.json")))
for i, (text, _ids) in enumerate(cases["cases"][:12]):
    put(f"text_{i:02d}", 0, text.encode("utf-8", "surrogatepass"))
for i, (hexbytes, _why) in enumerate(cases["invalid_utf8"][:4]):
    put(f"invalid_{i}", 0, bytes.fromhex(hexbytes))

pattern = json.load(open(os.path.join(root, "tests/fixtures/tokenizer/tekken_v15_synthetic.json")))["config"]["pattern"]
merges = [b"ab", b"he", b"ll", b"hell", b"hello", b"  ", b"\n\n", b"th", b"the", b" the"]
vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode()} for i in range(256)]
vocab += [{"rank": 256 + i, "token_bytes": base64.b64encode(m).decode()} for i, m in enumerate(merges)]
for version, n_special in (("v7", 20), ("v15", 24)):
    doc = {"config": {"pattern": pattern, "num_vocab_tokens": len(vocab),
                      "default_vocab_size": len(vocab) + n_special - 2,
                      "default_num_special_tokens": n_special, "version": version},
           "vocab": vocab}
    if version == "v15":
        doc["special_tokens"] = [{"rank": i, "token_str": s, "is_control": True} for i, s in
                                 enumerate(["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]"] +
                                           [f"<SPECIAL_{k}>" for k in range(6, n_special)])]
    put(f"tekken_{version}.json", 1, json.dumps(doc, separators=(",", ":")).encode())

for rel in ("golden/cases/preprocess/pre3_tiny_5x7.png", "golden/cases/preprocess/pre0_rgb_45x31.png",
            "golden/cases/preprocess/pre4_gray_83x50.jpg", "golden/cases/multimodal/image0_rgb_30x19.png",
            "golden/cases/multimodal/image1_rgba_22x40.png"):
    shutil.copy(os.path.join(root, rel), img_dir)
