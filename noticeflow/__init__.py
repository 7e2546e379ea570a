"""noticeflow: an event-sourced objection-window workflow engine for sub-processor notices."""

__version__ = "0.1.0"
