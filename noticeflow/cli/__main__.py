"""`python -m noticeflow.cli`: the same as the `noticeflow` command."""

from noticeflow.cli import main

main()
