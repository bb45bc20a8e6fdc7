"""The event-loop intake (design B): framing, connection policy, and the worker's socket loop."""

from app.intake.worker import IntakeWorker

__all__ = ["IntakeWorker"]
