"""The two kinds of failure a user is told about in one line (exit 2), besides config errors.

- `UsageError`: a request that cannot be done as asked (an export folder that is not empty, a prompt longer
  than the model's context, a tokenizer that is not the model's). The line says what to change.
- `MachineFault`: the machine or a service failed under a correct request (an object store, the MLflow
  store or a Ray node that cannot be reached after the retries its layer makes, a full disk). Nothing is
  wrong with the inputs: the line names the URI or path, and re-running resumes.

Anything else that escapes a command is a bug ("internal error ... please report it").
"""

from __future__ import annotations


class UsageError(ValueError):
    """A request that cannot be done as asked; its message is the one line the user sees."""


class MachineFault(RuntimeError):
    """A fault of the machine or of a service (not of the input); re-running resumes."""
