"""`up --demo` then plain `up` on the same data dir: the reply address is recorded in the data dir
(mails already sent carry Reply-To addresses at it), so the plain `up` keeps the reply endpoint."""

from __future__ import annotations

import stat
from pathlib import Path

from noticeflow.stack import DEMO_REPLY_ADDRESS, REPLY_ADDRESS_FILE, recorded_reply_address


def test_a_plain_up_after_up_demo_keeps_the_reply_address(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    assert recorded_reply_address(data, None, demo=False) is None  # never configured: off
    assert not (data / REPLY_ADDRESS_FILE).exists()
    assert recorded_reply_address(data, None, demo=True) == DEMO_REPLY_ADDRESS
    path = data / REPLY_ADDRESS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # plain `up` on the same data dir: the endpoint stays on, at the same address
    assert recorded_reply_address(data, None, demo=False) == DEMO_REPLY_ADDRESS
    # a configured address wins, and is the one recorded from then on
    assert recorded_reply_address(data, "reply@replies.vendor.example", demo=False) == (
        "reply@replies.vendor.example"
    )
    assert recorded_reply_address(data, None, demo=True) == "reply@replies.vendor.example"
    path.unlink()  # deleted: replies off again for a plain `up`
    assert recorded_reply_address(data, None, demo=False) is None
