"""The one small error hierarchy of the project.

Nothing below `cli.py` prints or exits: code raises one of these, carrying the file, the location
(a layer name or a byte offset) and the rule that was broken.  The CLI turns it into one line and a
non-zero exit code.
"""


class Coreml2hwxError(Exception):
    """Base class: `str(err)` is the single line shown to the user."""

    def __init__(self, message, *, file=None, where=None):
        self.message = message
        self.file = None if file is None else str(file)
        self.where = where
        super().__init__(self.line())

    def line(self):
        parts = [p for p in (self.file, self.where) if p not in (None, "")]
        prefix = ": ".join(str(p) for p in parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def with_file(self, file):
        """Return the same error with `file` filled in when it was not known where it was raised."""
        if self.file is None:
            self.file = str(file)
            self.args = (self.line(),)
        return self


class ProgramFormatError(Coreml2hwxError):
    """A program file (.hwx, .anec, raw task stream) is malformed. `where` is a byte offset."""

    def __init__(self, message, *, file=None, offset=None):
        where = None if offset is None else f"offset {offset:#x}"
        self.offset = offset
        super().__init__(message, file=file, where=where)


class ModelError(Coreml2hwxError):
    """A Core ML model file is corrupt or inconsistent. `where` names the layer."""


class UnsupportedError(Coreml2hwxError):
    """A layer, op, shape or field that we do not (or the hardware cannot) handle."""


class SimulationError(Coreml2hwxError):
    """The simulator met a register value it has no evidence for, or bad inputs."""


class UsageError(Coreml2hwxError):
    """Bad command-line arguments or input files given to a command."""
