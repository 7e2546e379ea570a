"""Replies to notice mails (issue 14 item 4, docs/replies.md).

* :mod:`noticeflow.replies.tokens` — each (notice, customer)'s reply address: one HMAC for the
  mailer, and the table that resolves a token back to its ids;
* :mod:`noticeflow.replies.store` — a received reply kept sealed, rejections recorded, and ops'
  classification (objection, opt-in, question) turned into an action in the intake of record
  with the mail's receipt time;
* :mod:`noticeflow.replies.inbound` — the inbound SMTP endpoint (aiosmtpd) that takes the mail.

The pure part (addresses, quoted text and signatures, exact commands) is
:mod:`noticeflow.domain.replies`.
"""
