"""An actor for tests/test_attach.py: what ``CurrentMessage`` says inside the task's process."""

from __future__ import annotations

import os

from dramatiq.middleware import CurrentMessage

from jwql_dramatiq.registry import actor


@actor
def current_message_id() -> dict:
    """The message id ``CurrentMessage.get_current_message()`` gives inside the task, and the task's pid."""
    message = CurrentMessage.get_current_message()
    return {"message_id": None if message is None else message.message_id, "pid": os.getpid()}
