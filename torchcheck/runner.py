"""torchcheck.runner — runs any torch.nn.Module implementation of Mistral 4 on a golden case and
writes a candidate file (docs/CANDIDATE-LAYOUT.md) for `mistral4 conform --candidate`.

An implementation comes with a name map (NameMap): for each of our rows (the dotted names of the
layout, `{i}` = text layer) the module of *its* tree that computes it (a Tap), how HF's weights
become its state dict, and how to run it end to end. The runner

  1. loads the case's HF checkpoint (model/*.safetensors) through NameMap.weights into the module
     (load_state_dict(strict=True): every parameter of the implementation is set, none is left over);
  2. teacher-forces: for each row, one forward of the whole module on the golden inputs with a
     forward pre-hook on the row's module (every layer) that replaces its inputs by the golden's
     (`<group>/in`, and for the experts HF's routing) and a forward hook that keeps its output;
     rows marked `within` another row ride on that row's forward (the attention's stages);
  3. runs the module end to end (`model/logits`) with no hooks;
  4. writes every captured tensor as float32 / int64 in the layout's shape, with the golden's
     config_json and input ids (so conform checks the candidate ran the golden's case).

Rows without a Tap are simply absent (conform reports them NOT-IMPL).

    python -m torchcheck.runner --case golden/cases/text_tiny \
        --impl torchcheck/fixture_fused.py:make --out cand.h5
    mistral4 conform --golden golden/cases/text_tiny/text_tiny.h5 --candidate cand.h5

Runs in the generator's pinned environment (golden/requirements.txt, golden/.venv)."""

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import re
import sys
import types
from typing import Callable

import h5py
import numpy as np
import torch
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "docs" / "CANDIDATE-LAYOUT.md"


class RunnerError(Exception):
    pass


def first(output):
    """The tensor of a module's output (the first of a tuple)."""
    return output if isinstance(output, torch.Tensor) else output[0]


@dataclasses.dataclass
class Tap:
    """Where one of our rows is computed in the implementation's module tree.

    module: its module path, `{i}` = text layer index.
    feed:   golden datasets that replace the module's inputs, in argument order: positional
            arguments first, then keyword arguments in the order the caller passed them (paths
            relative to the row's golden group, e.g. ("in",) or ("in", "topk_ids", "topk_weights"));
            () = none. Each must have as many elements as the input it replaces.
    output: the module's output (or, with take="input", its first input) -> the row's tensor, or a
            tuple of tensors in the layout's dataset order (the router: logits, topk_ids, topk_weights).
    take:   "output" or "input" (the attention's attn_output is o_proj's input).
    within: the row whose forward this tap rides on (its feed makes it teacher-forced), or None.
    """
    module: str
    feed: tuple = ("in",)
    output: Callable = first
    take: str = "output"
    within: str | None = None


@dataclasses.dataclass
class NameMap:
    """An implementation's map onto our names.

    taps:    {our row name: Tap}
    weights: HF state dict (the case's safetensors, HF names) -> the implementation's state dict
    forward: (module, inputs) -> logits [B, S, V]; inputs has input_ids, attention_mask, position_ids
    """
    taps: dict
    weights: Callable
    forward: Callable


# ---- the layout (docs/CANDIDATE-LAYOUT.md, the registry's own table) -----------------------

def read_layout(path=LAYOUT):
    """{row: [(group, dataset, dtype, shape formula)]} in the layout's order."""
    rows = {}
    text = path.read_text()
    table = text.split("<!-- mistral4 conform --list-datasets -->", 1)[1]
    for m in re.finditer(r"^\| `([^`]+)` \| `([^`]+)/([^`/]+)` \| (\w+) \| \[([^\]]*)\] \| [^|]+ \|$", table, re.M):
        row, group, dataset, dtype, shape = m.groups()
        rows.setdefault(row, []).append((group, dataset, dtype, shape))
    if not rows:
        raise RunnerError(f"{path}: no dataset table found")
    return rows


def shape_of(formula, config, dims):
    """Evaluates a layout shape formula ("B * S, hidden_size") on the case."""
    text = dict(config.get("text_config", config))
    text["qk_head_dim"] = text["qk_nope_head_dim"] + text["qk_rope_head_dim"]
    names = {**text, **dims, "vision": types.SimpleNamespace(**config.get("vision_config", {}))}
    return tuple(int(x) for x in eval("(" + formula + ",)", {"__builtins__": {}}, names))  # noqa: S307


# ---- the run --------------------------------------------------------------------------------

def _instances(pattern, layers):
    return [(i, pattern.replace("{i}", str(i))) for i in range(layers)] if "{i}" in pattern else [(None, pattern)]


def _module(root, path):
    try:
        return root.get_submodule(path)
    except AttributeError as e:
        raise RunnerError(f"the name map names module \"{path}\", which the implementation does not have") from e


def _replace_inputs(args, kwargs, values):
    """args/kwargs with the first len(values) inputs replaced (positional first, then keyword in order)."""
    args, kwargs = list(args), dict(kwargs)
    keys = list(kwargs)
    for k, value in enumerate(values):
        old = args[k] if k < len(args) else kwargs[keys[k - len(args)]]
        if old.numel() != value.numel():
            raise RunnerError(f"golden input of {value.numel()} elements for a module input of shape {tuple(old.shape)}")
        value = value.reshape(old.shape).to(old.dtype)
        if k < len(args):
            args[k] = value
        else:
            kwargs[keys[k - len(args)]] = value
    return tuple(args), kwargs


def run(module, name_map, golden_path, out_path, model_dir):
    layout = read_layout()
    with h5py.File(golden_path, "r") as g:
        config_json = g.attrs["config_json"]
        config_json = config_json.decode() if isinstance(config_json, bytes) else config_json
        config = json.loads(config_json)
        inputs = {k: torch.from_numpy(g["inputs"][k][()]) for k in ("input_ids", "attention_mask", "position_ids")
                  if k in g["inputs"]}
        B, S = inputs["input_ids"].shape
        dims = {"B": B, "S": S}
        layers = config.get("text_config", config)["num_hidden_layers"]

        hf_state = {}
        for f in sorted(pathlib.Path(model_dir).glob("*.safetensors")):
            hf_state.update(load_file(str(f)))
        if not hf_state:
            raise RunnerError(f"{model_dir}: no *.safetensors checkpoint")
        state = name_map.weights(hf_state)
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise RunnerError(f"the name map's weights() do not fit the implementation: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
        module.load_state_dict(state, strict=True)
        module.eval()

        captured = {}  # (row, layer) -> tensor or tuple

        def forward_with(rows):
            handles = []
            for row in rows:
                tap = name_map.taps[row]
                for layer, _ in _instances(row, layers):
                    parent = tap.within or row
                    group = layout[parent][0][0].replace("{i}", str(layer))
                    if group not in g:
                        continue  # not in this case (a dense layer's router and experts)
                    mod = _module(module, tap.module.replace("{i}", str(layer)))
                    if tap.feed and not tap.within:
                        golden = [torch.from_numpy(g[group][name][()]) for name in tap.feed]
                        handles.append(mod.register_forward_pre_hook(
                            lambda m, a, kw, golden=golden: _replace_inputs(a, kw, golden), with_kwargs=True))
                    key = (row, layer)
                    if tap.take == "input":
                        handles.append(mod.register_forward_pre_hook(
                            lambda m, a, kw, key=key, tap=tap: captured.__setitem__(key, tap.output(
                                a[0] if a else next(iter(kw.values())))), with_kwargs=True))
                    else:
                        handles.append(mod.register_forward_hook(
                            lambda m, a, kw, out, key=key, tap=tap: captured.__setitem__(key, tap.output(out)),
                            with_kwargs=True))
            try:
                with torch.no_grad():
                    name_map.forward(module, inputs)
            finally:
                for h in handles:
                    h.remove()

        passes = {}
        for row, tap in name_map.taps.items():
            if row not in layout:
                raise RunnerError(f"the name map names row \"{row}\", which is not in {LAYOUT.name}")
            passes.setdefault(tap.within or row, []).append(row)
        for rows in passes.values():
            forward_with(rows)
        with torch.no_grad():
            logits = name_map.forward(module, inputs)

    with h5py.File(out_path, "w") as out:
        out.attrs["config_json"] = np.bytes_(config_json.encode())
        out.attrs["writer"] = np.bytes_(b"torchcheck/runner.py")
        out.create_dataset("inputs/input_ids", data=inputs["input_ids"].numpy().astype(np.int64))

        def write(row, layer, values):
            values = values if isinstance(values, tuple) else (values,)
            for (group, dataset, dtype, formula), value in zip(layout[row], values):
                array = value.detach().cpu().numpy().astype(np.int64 if dtype == "int64" else np.float32)
                shape = shape_of(formula, config, dims)
                if array.size == int(np.prod(shape)):
                    array = array.reshape(shape)  # else conform names both shapes
                out.create_dataset(f"{group.replace('{i}', str(layer))}/{dataset}", data=array)

        for (row, layer), values in captured.items():
            write(row, layer, values)
        write("model", None, logits)


def load_impl(spec, model_dir):
    """"FILE.py:FUNCTION" -> FUNCTION(model_dir) = (module, NameMap)."""
    path, _, fn = spec.partition(":")
    loader = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    if loader is None:
        raise RunnerError(f"{path}: cannot load as a Python file")
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    return getattr(mod, fn or "make")(model_dir)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m torchcheck.runner", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", help="a golden case folder: DIR/model/ and DIR/<name>.h5")
    p.add_argument("--golden", help="the golden file (with --model)")
    p.add_argument("--model", help="the HF checkpoint folder the golden was made with")
    p.add_argument("--impl", required=True, help="FILE.py:FUNCTION returning (module, NameMap) for a model folder")
    p.add_argument("--out", required=True, help="the candidate file to write")
    a = p.parse_args(argv)
    if a.case:
        case = pathlib.Path(a.case)
        h5 = sorted(case.glob("*.h5"))
        if len(h5) != 1 or not (case / "model").is_dir():
            p.error(f"{case}: not a golden case folder (expected model/ and exactly one .h5 file)")
        golden, model_dir = h5[0], case / "model"
    elif a.golden and a.model:
        golden, model_dir = pathlib.Path(a.golden), pathlib.Path(a.model)
    else:
        p.error("give --case DIR, or --golden FILE.h5 and --model DIR")
    torch.set_num_threads(1)
    try:
        module, name_map = load_impl(a.impl, model_dir)
        run(module, name_map, golden, a.out, model_dir)
    except (RunnerError, OSError, KeyError) as e:
        print(f"torchcheck: error: {e}", file=sys.stderr)
        return 1
    print(f"torchcheck: wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
