"""`noticeflow web`: customer action pages, the ops dashboard, the JSON API, /metrics and /healthz.

FastAPI + Jinja2, served by uvicorn. It reads the read models and the records, never workflow
queries, so it works while no worker runs; every action it takes is an intake receipt first
(``noticeflow.control.receive``), exactly as the CLI's.
"""
