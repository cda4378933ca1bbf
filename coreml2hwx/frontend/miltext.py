"""Textual MIL: the `model.mil` of a compiled .mlmodelc, and what Apple's compiler consumes.

Both spellings are read: the iOS 15-17 one (`tensor<string, []>("x")`, `tensor<int32, []>(1)`, op
parameters inside `[...]`) and the iOS 18 one (`string("x")`, `int32(1)`, `fp16(0x1p-1)`).
`BLOBFILE(path = "@model_path/...", offset = N)` constants become `BlobRef`s pointing into `base_dir`
(what `@model_path` stands for: the folder holding the .mil file); the translation to IR reads them
when the file exists and otherwise leaves them unresolved, so MIL text parses without its weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend.mil import MilFunction, MilOp, MilProgram, MilVar, Ref
from coreml2hwx.frontend.milblob import blob_ref
from coreml2hwx.ir.dtypes import MIL_TO_NUMPY, numpy_dtype

_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]*(?:\.[0-9a-fA-F]*)?(?:[pP][-+]?[0-9]+)?
                    |(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?))
  | (?P<name>[A-Za-z_@][A-Za-z0-9_@]*)
  | (?P<punct>[()\[\]{}<>,=;:?\-])
""", re.VERBOSE)

DTYPES = set(MIL_TO_NUMPY) | {"bf16"}
_COMPOUND = {"tensor", "list", "tuple", "dict", "state"}


class _Tokens:
    def __init__(self, text: str, file):
        self.file = file
        self.items: list[tuple[str, str, int]] = []
        line, pos = 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ModelError(f"MIL text is corrupt: unexpected character {text[pos]!r}",
                                 file=file, where=f"line {line}")
            kind = m.lastgroup
            if kind != "space":
                self.items.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.items.append(("end", "", line))
        self.i = 0

    def peek(self, ahead=0):
        return self.items[min(self.i + ahead, len(self.items) - 1)]

    @property
    def line(self):
        return self.peek()[2]

    def error(self, rule):
        kind, text, line = self.peek()
        found = "end of text" if kind == "end" else repr(text)
        return ModelError(f"MIL text is corrupt: {rule}, found {found}", file=self.file,
                          where=f"line {line}")

    def take(self, text=None, kind=None):
        tok = self.peek()
        if (text is not None and tok[1] != text) or (kind is not None and tok[0] != kind):
            raise self.error(f"expected {text or kind}")
        self.i += 1
        return tok[1]

    def accept(self, text):
        if self.peek()[1] == text and self.peek()[0] != "string":
            self.i += 1
            return True
        return False


def _number(text: str):
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body[:2].lower() == "0x":
        if "." in body or "p" in body.lower():
            return sign * float.fromhex(body)
        return sign * int(body, 16)
    if any(c in body for c in ".eE"):
        return float(text)
    return int(text)


class _Parser:
    def __init__(self, text, file, base_dir):
        self.t = _Tokens(text, file)
        self.file = file
        self.base_dir = None if base_dir is None else Path(base_dir)

    def separator(self, close):
        """After a list item: a comma, or the closing token (left for the caller to take)."""
        if not self.t.accept(",") and self.t.peek()[1] != close:
            raise self.t.error(f"expected ',' or {close!r}")

    # -- types ------------------------------------------------------------------------------------
    def type_(self):
        name = self.t.take(kind="name")
        if name == "tensor":
            self.t.take("<")
            dtype = self.dtype()
            self.t.take(",")
            shape = self.dims()
            self.t.take(">")
            return dtype, shape, "tensor"
        if name in _COMPOUND:
            self.skip_angle()
            return "", (), name
        if name not in DTYPES:
            raise ModelError(f"MIL text is corrupt: unknown type {name!r}", file=self.file,
                             where=f"line {self.t.line}")
        return name, (), "tensor"

    def dtype(self):
        name = self.t.take(kind="name")
        if name not in DTYPES:
            raise ModelError(f"MIL text is corrupt: unknown element type {name!r}", file=self.file,
                             where=f"line {self.t.line}")
        return name

    def dims(self):
        self.t.take("[")
        dims = []
        while not self.t.accept("]"):
            kind, text, _ = self.t.peek()
            if kind == "number":
                dims.append(int(_number(self.t.take())))
            elif kind == "name" or text == "?":
                dims.append(self.t.take())  # symbolic
            else:
                raise self.t.error("expected a dimension")
            self.separator("]")
        return tuple(dims)

    def skip_angle(self):
        self.skip("<", ">")

    # -- values -----------------------------------------------------------------------------------
    def value(self):
        kind, text, _ = self.t.peek()
        if kind == "string":
            return self.string()
        if kind == "number":
            return np.array(_number(self.t.take()))
        if text == "[":
            return np.array(self.bare_list())
        if text == "(":
            self.t.take("(")
            items = []
            while not self.t.accept(")"):
                items.append(self.value())
                self.separator(")")
            return items
        if text == "-":
            self.t.take("-")
            return -self.value()
        if kind != "name":
            raise self.t.error("expected a value")
        if text in ("true", "false"):
            self.t.take()
            return np.array(text == "true")
        if text in ("inf", "nan"):
            self.t.take()
            return np.array(float(text))
        if self.t.peek(1)[1] in ("<", "(") and (text in DTYPES or text in _COMPOUND):
            return self.typed_literal()
        return Ref(self.t.take())

    def string(self):
        raw = self.t.take(kind="string")
        return raw[1:-1].encode().decode("unicode_escape")

    def bare_list(self):
        self.t.take("[")
        items = []
        while not self.t.accept("]"):
            kind, text, _ = self.t.peek()
            if text == "[":
                items.append(self.bare_list())
            else:
                items.append(self.scalar())
            self.separator("]")
        return items

    def scalar(self):
        kind, text, _ = self.t.peek()
        if kind == "number":
            return _number(self.t.take())
        if kind == "string":
            return self.string()
        if text == "-":
            self.t.take("-")
            return -self.scalar()
        if text in ("true", "false"):
            self.t.take()
            return text == "true"
        if text in ("inf", "nan"):
            self.t.take()
            return float(text)
        if text in DTYPES and self.t.peek(1)[1] == "(":  # a typed element: fp16(0x1p-1)
            self.t.take()
            self.t.take("(")
            value = self.scalar()
            self.t.take(")")
            return value
        raise self.t.error("expected a literal")

    def typed_literal(self):
        line = self.t.line
        dtype, shape, kind = self.type_()
        if kind != "tensor":
            self.skip_parens()
            return None
        self.t.take("(")
        if self.t.peek()[1] == "BLOBFILE":
            value = self.blobfile(dtype, shape, line)
        elif self.t.peek()[1] == "[":
            value = self.typed_array(self.bare_list(), dtype, shape, line)
        else:
            value = self.typed_array(self.scalar(), dtype, shape, line)
        self.t.take(")")
        return value

    def typed_array(self, items, dtype, shape, line):
        if any(isinstance(d, str) for d in shape):
            raise UnsupportedError(f"constant with symbolic shape {list(shape)}", file=self.file,
                                   where=f"line {line}")
        if dtype == "string":
            return items if not isinstance(items, list) else np.array(items, dtype=object)
        try:
            array = np.array(items, dtype=np.float64 if dtype.startswith(("fp", "bf")) else None)
            array = array.astype(numpy_dtype(dtype))
            return array.reshape(shape)
        except (ValueError, TypeError, OverflowError) as err:
            raise ModelError(f"MIL text is corrupt: literal does not fit {dtype}{list(shape)}: {err}",
                             file=self.file, where=f"line {line}") from None

    def blobfile(self, dtype, shape, line):
        self.t.take("BLOBFILE")
        self.t.take("(")
        fields = {}
        while not self.t.accept(")"):
            key = self.t.take(kind="name")
            self.t.take("=")
            fields[key] = self.value()
            self.separator(")")
        if "path" not in fields or "offset" not in fields:
            raise ModelError("MIL text is corrupt: BLOBFILE needs path and offset", file=self.file,
                             where=f"line {line}")
        path = str(fields["path"])
        if path.startswith("@model_path"):
            rel = path[len("@model_path"):].lstrip("/")
            path = str(self.base_dir / rel) if self.base_dir is not None else path
        return blob_ref(path, int(fields["offset"]), dtype, shape)

    def skip_parens(self):
        self.skip("(", ")")

    def skip(self, open_, close):
        """Skip a balanced `open_ ... close` group (types or blocks we do not interpret)."""
        self.t.take(open_)
        depth = 1
        while depth:
            if self.t.peek()[0] == "end":
                raise self.t.error(f"expected {close!r}")
            kind, text, _ = self.t.peek()
            self.t.i += 1
            if kind != "string":
                depth += {open_: 1, close: -1}.get(text, 0)

    # -- program structure ------------------------------------------------------------------------
    def attributes(self):
        """`[key = value, ...]`; a value we cannot use (e.g. a dict literal) is None."""
        out = {}
        if not self.t.accept("["):
            return out
        while not self.t.accept("]"):
            key = self.t.take(kind="name")
            self.t.take("=")
            out[key] = self.value()
            self.separator("]")
        return out

    def program(self):
        self.t.take("program")
        self.t.take("(")
        version = self.t.take(kind="number")
        self.t.take(")")
        self.attributes()
        self.t.take("{")
        prog = MilProgram(version)
        while not self.t.accept("}"):
            fn = self.function()
            prog.functions[fn.name] = fn
        if self.t.peek()[0] != "end":
            raise self.t.error("expected the end of the program")
        if not prog.functions:
            raise ModelError("MIL text has no function", file=self.file)
        return prog

    def function(self):
        self.t.take("func")
        name = self.t.take(kind="name")
        opset = ""
        if self.t.accept("<"):
            opset = self.t.take(kind="name")
            self.t.take(">")
        self.t.take("(")
        inputs = []
        while not self.t.accept(")"):
            dtype, shape, kind = self.type_()
            inputs.append(MilVar(self.t.take(kind="name"), dtype, shape, kind))
            self.separator(")")
        self.attributes()
        ops = self.block_body()
        self.t.take("->")
        self.t.take("(")
        outputs = []
        while not self.t.accept(")"):
            outputs.append(self.t.take(kind="name"))
            self.separator(")")
        self.t.take(";")
        return MilFunction(name, opset, inputs, ops, outputs)

    def block_body(self):
        self.t.take("{")
        ops = []
        while not self.t.accept("}"):
            ops.append(self.statement())
        return ops

    def statement(self):
        line = self.t.line
        outputs = []
        paren = self.t.accept("(")
        while True:
            dtype, shape, kind = self.type_()
            outputs.append(MilVar(self.t.take(kind="name"), dtype, shape, kind))
            if not self.t.accept(","):
                break
        if paren:
            self.t.take(")")
        self.t.take("=")
        op_type = self.t.take(kind="name")
        params = {}
        self.t.take("(")
        while not self.t.accept(")"):
            key = self.t.take(kind="name")
            self.t.take("=")
            params[key] = self.value()
            self.separator(")")
        params.update(self.attributes())
        blocks = 0
        while self.t.peek()[1] == "{":
            self.skip_braces()
            blocks += 1
        self.t.take(";")
        name = params.pop("name", None)
        name = str(name) if isinstance(name, str) else outputs[0].name
        return MilOp(op_type, outputs, params, name, line, blocks)

    def skip_braces(self):
        self.skip("{", "}")


def parse_program(text: str, base_dir=None, file=None) -> MilProgram:
    """Parse MIL text into a `MilProgram` (see `coreml2hwx.frontend.mil`)."""
    parser = _Parser(text, file, base_dir)
    try:
        return parser.program()
    except (ValueError, TypeError, OverflowError, ZeroDivisionError) as err:  # a malformed literal
        raise ModelError(f"MIL text is corrupt: {err}", file=file,
                         where=f"line {parser.t.line}") from err
