"""Named-field access to the register state one task runs with.

The simulator reads every register through the generation's register map
(`coreml2hwx.target.maps.<gen>`: `REGISTERS`, `HEADER`), the same map the inspector prints, so a
field means the same thing in both.  Address and stride fields are returned in bytes
(`dram`, `l2`): the map keeps them as the raw field bits (a `[31:6]` stride field holds bytes / 64).
"""

from __future__ import annotations

from functools import lru_cache

from coreml2hwx.errors import SimulationError, UnsupportedError
from coreml2hwx.program import Task
from coreml2hwx.target import generation


class TaskFields:
    """The register state and header of task `index`, read by field path."""

    def __init__(self, index: int, task: Task, state: dict[int, int], target: str):
        self.index = index
        self.task = task
        self.state = state
        self.maps = generation(target).maps
        self.header_words = list(task.header) + list(task.extension)
        self.checked = False  # the state passed the evidence check (machine.run_task)
        self.memo: dict = {}  # what the engines derive from constants alone (weights, tables)
        self._values: dict[str, object] = {}

    @property
    def where(self) -> str:
        return f"task {self.index}"

    def fail(self, message: str) -> SimulationError:
        return SimulationError(message, where=self.where)

    def _word(self, path: str):
        address, field = _field(self.maps.REGISTERS, path)
        if address not in self.state:
            raise self.fail(f"{path}: register {address:#07x} was never written")
        return self.state[address], field

    def get(self, path: str):
        """A register field's value (`common.InDim.Win`); never-written registers stop the run."""
        if path not in self._values:
            word, field = self._word(path)
            self._values[path] = field.value(field.bits(word))
        return self._values[path]

    def bytes(self, path: str) -> int:
        """An address/stride field in bytes: the field's bits left in place."""
        word, field = self._word(path)
        return word & field.mask

    def header(self, name: str):
        index, field = _header_field(self.maps.HEADER, name)
        return field.value(field.bits(self.header_words[index]))

    def word(self, register_path: str) -> int:
        """The whole word of a register (`pe.Cfg`); 0 when never written."""
        return self.state.get(_address(self.maps.REGISTERS, register_path), 0)


@lru_cache(maxsize=1024)
def _address(registers, register_path: str) -> int:
    block, _, name = register_path.partition(".")
    found = registers.block(block)
    return found.base + found.register(name).offset


@lru_cache(maxsize=4096)
def _field(registers, path: str):
    try:
        return registers.field(path)
    except UnsupportedError as err:
        raise SimulationError(f"{path}: {err.message}") from None


@lru_cache(maxsize=256)
def _header_field(header, name: str):
    return header.field(name)


def header_fields(header, words: tuple) -> list:
    """(path, value) of every field of a task header, named and unnamed bits."""
    try:
        return [(f"header.{f.name}", value) for _, f, value in header.decode(list(words))]
    except UnsupportedError as err:
        raise SimulationError(f"task header: {err.message}") from None


def register_fields(registers, address: int, word: int) -> list:
    """(path, value) of every field of one register word, named and unnamed bits."""
    found = registers.lookup(address)
    if found is None:
        return [(f"register {address:#07x}", word)]
    block, register = found
    return [(f"{block.name}.{register.name}.{f.name}", value) for f, value in register.decode(word)]
