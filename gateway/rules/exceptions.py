"""Rules errors: invalid SQL or templates (SqlParseException, with a caret under the offending token) and what a
rule cannot evaluate here. They are defined beside the token positions they point into (gateway.rules.tokens)."""

from __future__ import annotations

from gateway.rules.tokens import SqlEvaluationError, SqlOutputError, SqlParseError

__all__ = ["SqlEvaluationError", "SqlOutputError", "SqlParseError"]
