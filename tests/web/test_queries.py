"""The customer table's paging (noticeflow/web/queries.py) against the plain query it replaces:
every sort, direction, filter and page size, first, middle, last and past-the-end pages. A page in
the second half is read from the other end of the sort's index, so it must still be exactly the
page that ``ORDER BY ... OFFSET`` gives (ties broken by customer id, NULLs last ascending)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from noticeflow.web.queries import SHOWS, SORTS, TableQuery, customer_page

N = 23  # a few pages at every size, with ties and NULLs in every sorted column


async def _seed(pool) -> dict[str, int]:
    rng = random.Random(7)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    await pool.execute(
        "INSERT INTO rm_notices (notice_id, title, subprocessor, opt_in, author, text_sha256,"
        " phase, effective_at, created_at, updated_at) VALUES ('q', 't', 's', true, 'a', 'h',"
        " 'window_open', $1, $1, $1)",
        now,
    )
    rows = []
    for i in range(N):
        delivery = rng.choice(["pending", "delivered", "delivered", "undelivered"])
        status = rng.choice([None, None, "open", "withdrawn", "excluded"])
        rows.append(
            (
                f"c{i:02d}",
                delivery,
                rng.choice([None, now + timedelta(days=rng.randint(1, 4))]),
                status,
                None if status is None else rng.choice([True, False]),
                1 if status == "open" else 0,
                rng.random() < 0.4,
                rng.random() < 0.3,
                rng.choice([None, "activated", "held", "excluded"]),
                rng.random() < 0.5,
            )
        )
    await pool.executemany(
        "INSERT INTO rm_notice_customers (notice_id, customer_id, delivery, deadline,"
        " objection_status, objection_timely, open_objections, opted_in, activated, verdict,"
        " settled) VALUES ('q', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        rows,
    )
    return {
        "customers": N,
        "delivered": sum(r[1] == "delivered" for r in rows),
        "undelivered": sum(r[1] == "undelivered" for r in rows),
        "settled": sum(r[9] for r in rows),
        "opted_in": sum(r[6] for r in rows),
        "activated": sum(r[7] for r in rows),
        "open_objections": sum(r[5] for r in rows),
    }


async def test_every_page_equals_the_plain_query(pool):
    counts = await _seed(pool)
    checked = 0
    for sort, expression in SORTS.items():
        for descending in (False, True):
            for show, condition in SHOWS.items():
                order = "DESC" if descending else "ASC"
                nulls = "NULLS FIRST" if descending else "NULLS LAST"
                expected_all = [
                    r["customer_id"]
                    for r in await pool.fetch(
                        f"SELECT customer_id FROM rm_notice_customers WHERE notice_id = 'q'"
                        f" AND {condition} ORDER BY {expression} {order} {nulls},"
                        f" customer_id {order}"
                    )
                ]
                for size in (1, 4, 7, 50):
                    pages = len(expected_all) // size + 2  # past the end too
                    for page in range(1, pages + 1):
                        view = TableQuery(
                            sort=sort, descending=descending, show=show, page=page, size=size
                        )
                        rows, total = await customer_page(pool, "q", view, counts)
                        assert total == len(expected_all), (sort, show)
                        got = [r["customer_id"] for r in rows]
                        want = expected_all[(page - 1) * size : page * size]
                        assert got == want, (sort, descending, show, size, page)
                        checked += 1
    assert checked > 1000
