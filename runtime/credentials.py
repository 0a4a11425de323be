"""Secrets read from files or environment variables, for the signal sources' clients.

Error messages name the file or variable, never the secret itself.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(ValueError):
    """Raised when a configured secret file or environment variable cannot be read."""


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """Read a secret from a file or an environment variable, or return None when neither is set."""
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read the {what} file {str(file)!r} ({exc.strerror}); check the path and its permissions") from None
        if not value:
            raise SecretError(f"the {what} file {str(file)!r} is empty; write the {what} into it")
        return value
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise SecretError(f"environment variable {env!r} for the {what} is unset or empty; set it before starting the daemon")
        return value
    return None
