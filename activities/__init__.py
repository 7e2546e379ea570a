"""Activities: every side effect of a notice (mail, records, events)."""
