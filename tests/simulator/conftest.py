"""The simulator fixture for the simulator's own tests."""

from tests.support.simulator import simulator  # noqa: F401
