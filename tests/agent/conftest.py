"""Fixtures shared by the agent's unit tests."""

import logging

import pytest


@pytest.fixture
def records():
    """What the agent logs under "vipmgr" (independent of its logging set-up)."""
    out: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = out.append
    logger = logging.getLogger("vipmgr")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)
