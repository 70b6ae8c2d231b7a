"""The whole-system tests share `tickstream dev`'s topology (tests/support/stack.py)."""

from tests.support.stack import whole_stack

__all__ = ["whole_stack"]
