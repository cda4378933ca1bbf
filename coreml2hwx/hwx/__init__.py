"""ANE program containers: Apple's `.hwx` (Mach-O variant) and the Asahi driver's `.anec`.

Reading is exact - `read_hwx(data).to_bytes() == data`, `read_anec(data).to_bytes() == data` - and
malformed input raises one `ProgramFormatError` naming the file, the byte offset and the rule.

    read_hwx(data, file=None) -> HwxFile       .to_bytes(), .cpusubtype, .target, .text, .constants,
                                               .program_descriptor, .tensor_descriptors,
                                               .load_commands, .segments, .symbols, .relocations
    read_anec(data, file=None, *, early_header=None) -> AnecFile
    hwx_to_anec(hwx, header_size=0x1000) -> bytes
    load_program(path, *, raw_target=None) -> Program   (.hwx / .anec by content, raw stream)
    program_from_hwx(hwx), program_from_anec(anec), program_from_bytes(data, ...)
    write_hwx(program) -> bytes                H13, laid out as Apple's macOS-12 compiler does
    write_anec(program, header_size=0x1000) -> bytes
"""

from coreml2hwx.hwx.anec import AnecFile, hwx_to_anec, read_anec, write_anec
from coreml2hwx.hwx.hwxfile import HwxFile, read_hwx
from coreml2hwx.hwx.programs import (load_program, program_from_anec, program_from_bytes,
                                     program_from_hwx)
from coreml2hwx.hwx.writer import write_hwx

__all__ = ["AnecFile", "HwxFile", "hwx_to_anec", "load_program", "program_from_anec",
           "program_from_bytes", "program_from_hwx", "read_anec", "read_hwx", "write_anec",
           "write_hwx"]
