"""The application layer: services that own the SQL, the events and the mail of each step of a
notice (sending, intake, lifecycle, reminders, the notice's own events).

The activities (``activities/``) are thin adapters over these services: they take the Temporal
payload, call one service method and handle what only Temporal knows (heartbeats, the attempt's
details, non-retryable failures, the hand-over when a worker shuts down). Nothing here imports
Temporal (an import-linter contract in pyproject.toml checks it): a long loop reports its
progress through a callback (:class:`~noticeflow.application.deps.Progress`), and a failure no
retry could mend is an exception the adapter maps to a non-retryable one (an event no model
accepts, ``events.EventError``; an event id stored with other content, ``EventIdConflict``).
"""
