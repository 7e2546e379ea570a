"""Activity names, shared by the workflow (which must not import the implementations)."""


class Activity:
    append_event = "append_event"
    record_phase = "record_phase"
    check_approval = "check_approval"
    snapshot_audience = "snapshot_audience"
    send_notices = "send_notices"
    read_totals = "read_totals"
    record_objection = "record_objection"
    resolve_objection = "resolve_objection"
    record_opt_in = "record_opt_in"
    mail_change = "mail_change"
    resend_notice = "resend_notice"
    activate_due = "activate_due"
    send_reminders = "send_reminders"
    process_intake = "process_intake"
    settle_receipt = "settle_receipt"
