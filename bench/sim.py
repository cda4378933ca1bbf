"""Simulator speed against torch on the same math: `python bench/sim.py [--repeat N]`.

Programs timed (each must compile with our H13 compiler, `coreml2hwx.target.h13.lower`; a model
the compiler refuses is reported and skipped):
* a 1x1-conv-heavy program: conv 256 -> 256 on 1x256x32x32 (67 M multiply-adds);
* single-op programs: conv 64 -> 64 on 1x64x56x56, a 3x3 depthwise-free conv, an element-wise
  add and a matmul;
* a whole model (`--model`, default mobilenet_v2 at 224x224 from tests/models/zoo.py, converted by
  coremltools to .mlmodel): compiled by `compiler.compile_model`, run by `execute.run_compiled`
  (ANE segments in the simulator, host segments in the reference evaluator), against the torch
  module's own forward pass on the CPU; `--model none` skips it.  Like the torch module, the
  folder is loaded once (`execute.CompiledModel`: .hwx files decoded, weights unpacked on the
  first run) and then run; the load is printed apart.  A second line splits the fastest run
  into the simulator (`Simulator.__call__`) and the rest (host ops, hand-overs).
Each is also timed in torch doing the same math on the CPU: fp16 tensors in, float32 arithmetic,
fp16 out (`op(x.float()).half()`), the same weights, one thread for both (OPENBLAS_NUM_THREADS=1
unless set).  The fastest of `--repeat` runs is used (the machine is shared; the minimum is the
least disturbed); the last line is the 1x1-conv ratio sim / torch (goal <= 2).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

# the repo on the import path in place of bench/ (bench/inspect.py would shadow the stdlib)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads its BLAS
import numpy as np  # noqa: E402


from coreml2hwx.errors import Coreml2hwxError  # noqa: E402

HEADER = struct.pack("<II", 1, 2) + bytes(56)


def blob_file(arrays) -> tuple[bytes, list[int]]:
    """A MILBlob v2 file holding fp16 arrays; the record offset of each."""
    data, offsets = bytearray(HEADER), []
    for a in arrays:
        offsets.append(len(data))
        raw = a.astype(np.float16).tobytes()
        data += struct.pack("<IIQQ", 0xDEADBEEF, 1, len(raw), len(data) + 64) + bytes(40) + raw
    return bytes(data), offsets


def mil(inputs: str, body: list[str], output: str) -> str:
    lines = "\n".join(f"    {line}" for line in body)
    return ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>({inputs}) {{\n{lines}\n  }} -> ({output});\n}}\n")


def conv_model(cin, cout, size, k, rng):
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float16)
    blob, (offset,) = blob_file([w])
    text = mil(f"tensor<fp16, [1, {cin}, {size}, {size}]> x", [
        f'tensor<fp16, [{cout}, {cin}, {k}, {k}]> w = const()[name = string("w"), '
        f'val = tensor<fp16, [{cout}, {cin}, {k}, {k}]>(BLOBFILE(path = '
        f'string("@model_path/weights.bin"), offset = uint64({offset})))];',
        f'tensor<fp16, [1, {cout}, {size}, {size}]> y = conv(x = x, weight = w, '
        f'strides = [1, 1], pad_type = "same", dilations = [1, 1], groups = 1)'
        f'[name = string("y")];'], "y")

    def torch_fn(torch, x):
        wt = torch.tensor(w.astype(np.float32))
        return lambda: torch.nn.functional.conv2d(x.float(), wt, padding=k // 2).half()
    return text, blob, {"x": (1, cin, size, size)}, torch_fn


def add_model(c, size, rng):
    shape = f"[1, {c}, {size}, {size}]"
    text = mil(f"tensor<fp16, {shape}> x, tensor<fp16, {shape}> z",
               [f'tensor<fp16, {shape}> y = add(x = x, y = z)[name = string("y")];'], "y")

    def torch_fn(torch, x, z):
        return lambda: (x.float() + z.float()).half()
    return text, b"", {"x": (1, c, size, size), "z": (1, c, size, size)}, torch_fn


def matmul_model(m, k, n, rng):
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float16)
    blob, (offset,) = blob_file([w])
    text = mil(f"tensor<fp16, [{m}, {k}]> x", [
        'bool f = const()[name = string("f"), val = bool(false)];',
        'bool t = const()[name = string("t"), val = bool(true)];',
        f'tensor<fp16, [{n}, {k}]> w = const()[name = string("w"), val = tensor<fp16, '
        f'[{n}, {k}]>(BLOBFILE(path = string("@model_path/weights.bin"), '
        f'offset = uint64({offset})))];',
        f'tensor<fp16, [{m}, {n}]> y = matmul(transpose_x = f, transpose_y = t, x = x, '
        f'y = w)[name = string("y")];'], "y")

    def torch_fn(torch, x):
        wt = torch.tensor(w.astype(np.float32))
        return lambda: (x.float().reshape(m, k) @ wt.T).half()
    return text, blob, {"x": (1, 1, m, k)}, torch_fn


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(name, model, repeat, torch):
    from coreml2hwx.frontend import parse_mil_text
    from coreml2hwx.sim import Simulator
    from coreml2hwx.target.h13 import lower

    text, blob, shapes, torch_fn = model
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "weights.bin").write_bytes(blob)
        try:
            program = lower(parse_mil_text(text, tmp))
        except Coreml2hwxError as err:
            print(f"{name}: not compiled ({err.line()})")
            return None
    rng = np.random.default_rng(1)
    by_name = {t.name: t.shape for t in program.inputs}
    inputs = {n: rng.standard_normal(by_name[n]).astype(np.float16) for n in shapes}
    simulator = Simulator(program)
    sim = best_time(lambda: simulator(inputs), repeat)
    tensors = [torch.tensor(inputs[n]).reshape(shapes[n]) for n in shapes]
    ref = best_time(torch_fn(torch, *tensors), repeat)
    print(f"{name}: {len(program.tasks)} task(s), sim {sim * 1e3:.2f} ms, "
          f"torch {ref * 1e3:.2f} ms, ratio {sim / ref:.2f}")
    return sim / ref


def bench_model(name: str, size: int, repeat: int, torch):
    """Whole model: simulated compiled output folder vs torch's forward, both on this CPU."""
    from coreml2hwx.compiler import compile_model, write_outputs
    from coreml2hwx.execute import CompiledModel
    from tests.models.zoo import Zoo

    with tempfile.TemporaryDirectory() as tmp:
        zoo = Zoo(Path(tmp) / "zoo")
        try:
            compiled = compile_model(zoo.path(name, "mlmodel", size=size))
        except Coreml2hwxError as err:
            print(f"{name} {size}x{size}: not compiled ({err.line()})")
            return None
        out = Path(tmp) / "out"
        write_outputs(compiled, out)
        module, inputs = zoo.torch_model(name, size)
        load = best_time(lambda: CompiledModel(out), max(1, repeat // 5))
        model = CompiledModel(out)
        sim = best_time(lambda: model(inputs), repeat)
        parts = _split(model, inputs, repeat)
        x = [torch.from_numpy(v) for v in inputs.values()]
        with torch.no_grad():
            ref = best_time(lambda: module(*x), repeat)
    ane = [s for s in compiled.segments if s.device == "ane"]
    tasks = sum(len(s.program.tasks) for s in ane)
    host = sum(len(s.ops) for s in compiled.segments if s.device == "host")
    print(f"{name} {size}x{size}: {len(ane)} ANE program(s), {tasks} task(s), {host} host op(s); "
          f"load once {load * 1e3:.1f} ms; run {sim * 1e3:.1f} ms, torch {ref * 1e3:.1f} ms, "
          f"ratio {sim / ref:.1f}")
    split = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in parts.items())
    print(f"{name} {size}x{size} run split: {split}; simulator alone / torch "
          f"{parts['simulator'] / ref:.1f}")
    floor, elements = _conversion_floor(model, inputs, repeat)
    print(f"{name} {size}x{size} fp16 storage alone: numpy's fp16 casts of every task result "
          f"({elements / 1e6:.1f} M values) to fp16 and back take {floor * 1e3:.1f} ms = "
          f"{floor / ref:.1f} x torch")
    return sim / ref


def _conversion_floor(model, inputs, repeat: int) -> tuple[float, int]:
    """A lower bound no numpy simulator of fp16 storage escapes: each task's result is rounded to
    fp16 once (float32 -> float16) and read back by the next task (float16 -> float32).  Timed
    here on one array as long as all task results of a run together."""
    from coreml2hwx.sim import Simulator

    sizes = []
    call = Simulator.__call__
    Simulator.__call__ = lambda self, feed, trace=None: call(
        self, feed, lambda index, result: sizes.append(result.size))
    try:
        model(inputs)
    finally:
        Simulator.__call__ = call
    values = np.random.default_rng(0).standard_normal(sum(sizes)).astype(np.float32)
    return best_time(lambda: values.astype(np.float16).astype(np.float32), repeat), sum(sizes)


def _split(model, inputs, repeat: int) -> dict[str, float]:
    """Where a whole-model run goes (fastest run): the simulator itself (`Simulator.__call__`)
    and the rest (host ops in the evaluator, hand-overs)."""
    from coreml2hwx.sim import Simulator

    spent = [0.0]
    call = Simulator.__call__

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return call(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    Simulator.__call__ = timed
    try:
        best = None
        for _ in range(repeat):
            spent[0] = 0.0
            start = time.perf_counter()
            model(inputs)
            total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, spent[0])
    finally:
        Simulator.__call__ = call
    total, simulator = best
    return {"simulator": simulator, "host ops and hand-overs": total - simulator}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--model", default="mobilenet_v2", help="zoo model, or none")
    parser.add_argument("--size", type=int, default=224, help="the model's input side")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    conv_ratio = bench("1x1 conv 256->256 @32x32", conv_model(256, 256, 32, 1, rng), args.repeat,
                       torch)
    bench("1x1 conv 64->64 @56x56", conv_model(64, 64, 56, 1, rng), args.repeat, torch)
    bench("3x3 conv 64->64 @16x16", conv_model(64, 64, 16, 3, rng), args.repeat, torch)
    bench("add 1x256x32x32", add_model(256, 32, rng), args.repeat, torch)
    bench("matmul 8x512 @ 512x1024", matmul_model(8, 512, 1024, rng), args.repeat, torch)
    if args.model != "none":
        bench_model(args.model, args.size, args.repeat, torch)
    if conv_ratio is None:
        print("sim 1x1-conv ratio to torch: n/a (the compiler refused the model)")
    else:
        print(f"sim 1x1-conv ratio to torch: {conv_ratio:.2f}x")


if __name__ == "__main__":
    main()
