"""`coreml2hwx reference MODEL [--input NAME=x.npy ...] --output-dir DIR [--fp16] [--seed N]`

Evaluates the model with the numpy reference evaluator and writes one `<output>.npy` per model
output into DIR.  Inputs not given are made by `coreml2hwx.ir.random_inputs` from the declared
shapes (numpy default_rng(seed) standard normal, in the model's input order); they are written too,
as `DIR/inputs/<input>.npy`, so a run can be repeated elsewhere.  A classifier's class label is
written as `<label output>.npy` holding the label of the most probable class.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from coreml2hwx.errors import UsageError


def add_arguments(parser):
    parser.add_argument("model", help=".mlmodel, .mlpackage, .mlmodelc or .mil")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="value of one model input (repeat for several inputs)")
    parser.add_argument("--output-dir", required=True, help="folder for <output>.npy files")
    parser.add_argument("--fp16", action="store_true",
                        help="round like Core ML on the ANE (fp16 storage between ops)")
    parser.add_argument("--seed", type=int, default=0, help="seed for inputs not given (default 0)")


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", name) or "_"


def _read_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    values = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input {spec!r}: expected NAME=FILE.npy")
        try:
            values[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UsageError(f"--input {name}: cannot read {file}: {err}") from None
    return values


def run(args) -> int:
    from coreml2hwx.frontend import load
    from coreml2hwx.ir import evaluate, random_inputs

    given = _read_inputs(args.input)
    graph = load(args.model)
    unknown = sorted(set(given) - set(graph.input_names))
    if unknown:
        raise UsageError(f"--input {unknown[0]}: the model has no such input (inputs: "
                         f"{', '.join(graph.input_names)})")
    inputs = {**random_inputs(graph, args.seed), **given}
    outputs = evaluate(graph, {n: inputs[n] for n in graph.input_names}, fp16=args.fp16)
    out_dir = Path(args.output_dir)
    (out_dir / "inputs").mkdir(parents=True, exist_ok=True)
    for name in graph.input_names:
        np.save(out_dir / "inputs" / f"{_file_name(name)}.npy", np.asarray(inputs[name]))
    declared = graph.metadata.get("declared_output_shapes", {})
    for name, value in outputs.items():
        shape = declared.get(name)
        if shape is not None and int(np.prod(shape)) == value.size:
            value = value.reshape(shape)  # legacy rank-5 models declare [C] for a [1, C, 1, 1] result
        np.save(out_dir / f"{_file_name(name)}.npy", value)
    classifier = graph.metadata.get("classifier")
    if classifier and classifier.get("label_output"):
        probs = outputs[classifier["probabilities"]].reshape(-1)
        label = classifier["labels"][int(np.argmax(probs))] if classifier["labels"] else int(np.argmax(probs))
        np.save(out_dir / f"{_file_name(classifier['label_output'])}.npy", np.asarray(label))
    return 0
