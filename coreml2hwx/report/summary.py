"""A task in plain words: engine, operation, dims, kernel, formats, strides, buffers.

Read through the named fields of the generation's register map from the full register state the
task runs with.  Only generations whose maps name these fields get a summary (H13 first); for the
others the listing shows the fields alone.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError


def _reader(gen, task, state):
    regs, header = gen.maps.REGISTERS, gen.maps.HEADER
    words = task.header + task.extension
    # H14 tasks leave registers at their reset values out (maps.h14.RESET) and inherit nothing
    # from the task before (sim/h14.py): read a task as its writes over those values
    if hasattr(gen.maps, "reset_words"):
        state = {**gen.maps.reset_words(), **task.writes()}

    def reg(path):
        """A field by `block.Register.Field`, or by `block.Register` for its first named field;
        None when this generation's map has no such field or the task never set it."""
        try:
            if path.count(".") == 1:
                block, name = path.split(".")
                register = regs.block(block).register(name)
                named = [f for f in register.fields if f.grade != "-"]
                path = f"{path}.{named[0].name}"
            return regs.get(state, path, default=None)
        except UnsupportedError:
            return None

    def hdr(name):
        try:
            return header.get(words, name)
        except UnsupportedError:
            return None

    return reg, hdr


def _dims(reg):
    def dim(path):  # "?" for a register the task leaves at a default the map does not know
        value = reg(path)
        return "?" if value is None else value

    src = f"{dim('common.Cin.Cin')}x{dim('common.InDim.Hin')}x{dim('common.InDim.Win')}"
    dst = f"{dim('common.Cout.Cout')}x{dim('common.OutDim.Hout')}x{dim('common.OutDim.Wout')}"
    groups = reg("common.GroupConvCfg.NumGroups")
    return f"{src} -> {dst} (CxHxW)" + (f", {groups} groups" if groups and groups > 1 else "")


def _fmt(code):
    return {2: "fp16"}.get(code, f"format {code}")


def _ne_op(reg):
    op = reg("ne.MACCfg.OpMode")
    nl = {0: "", 1: " + relu", 2: " + lookup table"}.get(reg("ne.MACCfg.NonlinearMode"), " + ?")
    if op == 0:
        k = f"{reg('common.ConvCfg.Kh')}x{reg('common.ConvCfg.Kw')}"
        s = f"{reg('common.ConvCfg.Sy')}x{reg('common.ConvCfg.Sx')}"
        p = f"{reg('common.ConvCfg.Py')},{reg('common.ConvCfg.Px')}"
        bias = " + bias" if reg("ne.MACCfg.BiasMode") else ""
        return f"NE convolution {k} stride {s} pad top,left {p}{bias}{nl}"
    if op == 4:
        post = reg("ne.PostScale.PostScale")
        scale = f" x{post:g}" if post not in (None, 1.0) else ""
        return f"NE bypass{scale}{nl}"
    return f"NE op mode {op}{nl}"


def _pe_op(reg):
    kind = reg("common.Cfg.Bits6_4")
    pool = reg("pe.Cfg.PoolMode")
    ops = {0: "add", 1: "multiply", 2: "maximum", 3: "minimum"}
    op = ops.get(reg("pe.Cfg.OpMode"), "op ?")
    if reg("pe.Cfg.SecSrc") == 3 and op == "add":
        op = "subtract"
    if kind == 5:
        what = {2: "max"}.get(pool, "sum")
        text = f"PE reduction ({what}) over W"
    elif kind in (3, 4):
        text = f"PE {op} of two operands"
    elif reg("pe.Cfg.Cond"):
        text = "PE absolute value"
    else:
        text = "PE scale/bias pass"
    extras = []
    for name, path in (("scale", "pe.BiasScale.Scale"), ("bias", "pe.BiasScale.Bias"),
                       ("prescale", "pe.PreScale.PreScale")):
        value = reg(path)
        neutral = 0.0 if name == "bias" else 1.0
        if value is not None and value not in (neutral, 0.0 if name != "bias" else None):
            extras.append(f"{name} {value:g}")
    final = reg("pe.FinalScale.FinalScale")
    if final not in (None, 1.0, 0.0):
        extras.append(f"final scale {final:g}")
    if reg("pe.Cfg.ReluEn"):
        extras.append("relu")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _tagged_slots(gen, task):
    """H14+: the BAR slot of each buffer-address record (dense-record tag 0x100 + 4 x slot,
    h14-register-census §3), by the block it writes."""
    slots = {}
    for rec in task.records:
        if rec.mask is None and rec.tag >> 8 == 1:
            found = gen.maps.REGISTERS.lookup(rec.address)
            if found:
                slots.setdefault(found[0].name, []).append((rec.tag & 0xFF) // 4)
    return slots


def _buffers_tagged(slots):
    reads = slots.get("tile_dma_src", [])
    parts = [("reads slot " + " and slot ".join(map(str, reads))) if reads else "reads L2"]
    writes = slots.get("tile_dma_dst", [])
    parts.append(f"writes slot {writes[0]}" if writes else "result stays in L2")
    if slots.get("kernel_dma_src"):
        parts.append(f"coefficients from slot {slots['kernel_dma_src'][0]}")
    return ", ".join(parts)


def _buffers(reg, hdr):
    parts = []
    if hdr("RBE0"):
        parts.append(f"reads slot {hdr('RBase0')}")
    if hdr("RBE1"):
        parts.append(f"and slot {hdr('RBase1')}")
    if not hdr("RBE0") and not hdr("RBE1"):
        parts.append("reads L2")
    parts.append(f"writes slot {hdr('WBase')}" if hdr("WBE") else "result stays in L2")
    if hdr("KBE0"):
        parts.append(f"coefficients from slot {hdr('KBase0')}")
    return ", ".join(parts)


def _strides(reg, hdr):
    out = []
    if hdr("RBE0"):
        out.append(f"src row {reg('tile_dma_src.RowStride') * 64} plane "
                   f"{reg('tile_dma_src.PlaneStride') * 64}")
    if hdr("WBE"):
        out.append(f"dst row {reg('tile_dma_dst.RowStride') * 64} plane "
                   f"{reg('tile_dma_dst.PlaneStride') * 64}")
    return "; ".join(out)


def describe(gen, task, state) -> list[str]:
    """Plain-words lines for one task, from the H13 register names (which H14 keeps)."""
    if gen.name not in ("h13", "h14"):
        raise UnsupportedError(f"no plain-words summary for {gen.name} (its map is grade C)")
    reg, hdr = _reader(gen, task, state)
    engine = _ne_op(reg) if hdr("ENE") else _pe_op(reg)
    fmt = ""
    if reg("common.ChCfg.InFmt") is not None:
        fmt = f"; {_fmt(reg('common.ChCfg.InFmt'))} -> {_fmt(reg('common.ChCfg.OutFmt'))}"
    lines = [f"{engine}; {_dims(reg)}{fmt}; tile height {reg('common.TileCfg.TileHeight')}"]
    if hdr("RBE0") is not None:
        lines.append(_buffers(reg, hdr))
        strides = _strides(reg, hdr)
        if strides:
            lines.append(f"DMA strides (bytes): {strides}")
    else:
        lines.append(_buffers_tagged(_tagged_slots(gen, task)))
    return lines
