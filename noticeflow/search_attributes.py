"""The search attributes of the public contract: what the workflow publishes about a notice
(workflows/notice.py) and what noticeflow/temporal.py registers with the server."""

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("NoticePhase")
SUBPROCESSOR = SearchAttributeKey.for_keyword("NoticeSubprocessor")
EFFECTIVE_AT = SearchAttributeKey.for_datetime("NoticeEffectiveAt")
WINDOW_CLOSES_AT = SearchAttributeKey.for_datetime("NoticeWindowClosesAt")
OPEN_OBJECTIONS = SearchAttributeKey.for_int("NoticeOpenObjections")

ALL = (PHASE, SUBPROCESSOR, EFFECTIVE_AT, WINDOW_CLOSES_AT, OPEN_OBJECTIONS)
