"""The exceptions cfrec raises: one base class, each error names what was wrong."""

from __future__ import annotations

from os import PathLike


class CfrecError(Exception):
    """Base class of every error cfrec raises on purpose."""


class DataFormatError(CfrecError, ValueError):
    """A data file is malformed; the message names the file and, where known, the line."""

    def __init__(self, message: str, *, path: str | PathLike | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = self.path or "<data>"
        if line is not None:
            where = f"{where}, line {line}"
        super().__init__(f"{where}: {message}")


class UnknownIdError(CfrecError, KeyError):
    """A raw user or item id that the model or data set has never seen."""

    def __init__(self, kind: str, raw_id: object, n_unknown: int = 1, hint: str = ""):
        self.kind = kind
        self.raw_id = raw_id
        more = f" (and {n_unknown - 1} more unknown)" if n_unknown > 1 else ""
        super().__init__(f"unknown {kind} id {raw_id!r}{more}{f'; {hint}' if hint else ''}")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class ConfigError(CfrecError, ValueError):
    """An option has an invalid value; the message names the key."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key nested under ``prefix`` (``k`` → ``model.k``)."""
        return ConfigError(f"{prefix}.{self.key}", self.message)


class DownloadError(CfrecError, OSError):
    """A data set could not be fetched or verified."""


class CheckpointError(CfrecError):
    """A checkpoint or run folder is missing, truncated, tampered with or of the wrong version."""


class TrainingDiverged(CfrecError, FloatingPointError):
    """The training loss became NaN or infinite."""


class RunStopped(CfrecError):
    """A run stopped early on purpose: Ctrl-C (exit code 130) or divergence (1); the message says
    what was kept and how to go on. Not a `SystemExit`, so a sweep records it and runs its other jobs."""

    def __init__(self, message: str, code: int = 1):
        self.code = code
        super().__init__(message)
