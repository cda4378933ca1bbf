"""Drop the checks Apple's MIL front end makes that are not hardware limits.

Single-op lowering refuses what Apple's H13 compiler refuses for the same MIL text (Apple parity,
bench/parity.py).  Two of those refusals are about how the MIL is written, not what the ANE can do:

* tensor operands and biases written inline in the program text (oracle README, callback_status=1,
  e.g. upstream `linear_k256_n512`); the same values as BLOBFILE constants compile, and the tasks
  read them from the constant section either way.  coremltools writes small tensors inline (a
  U-Net head's 2-value bias), so the marks are dropped;
* `clip(x, alpha=fp32(-1), beta=fp32(1))` on an fp16 x (oracle `unary_clip_c64`): bounds of
  another dtype than x, which MIL's type rules reject; the hardware computes clip as one NE task
  with a two-line lookup table (eiln relu6 / hardtanh, lut-rules.md "two-line", 64/64 bitwise).

The pass sets `graph.metadata["apple_mil_checks"] = False`; the H13 lowering reads it.
"""

from __future__ import annotations

from coreml2hwx.passes import register


@register("mil_checks")
def mil_checks(graph):
    marked = len(graph.metadata.pop("inline_constants", ()))
    for op in graph.ops:
        if op.attrs.pop("inline", None):
            marked += 1
    graph.metadata["apple_mil_checks"] = False
    return f"{marked} inline constant(s) placed in the constant section" if marked else None
