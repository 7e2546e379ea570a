"""Evidence packs (rule 12): everything an auditor needs about one notice, checkable offline.

A pack is a directory: the notice's events as JSON lines (with their hash chain), the exact notice
text, the audience snapshot, a per-customer CSV, the delivery ledger, a readable HTML report, and a
manifest with the SHA-256 of every file. `verify_pack` re-checks all of it without a database.

Signatures (issue 10). The manifest is signed with Ed25519 under the installation's signing key
(``NOTICEFLOW_SIGNING_KEY``; the same derived key that signs stream heads, see
noticeflow/eventstore.py — a head message is a JSON array and a manifest a JSON object, so neither
can pass for the other). The pack holds:

* ``manifest.json.sig`` — the 64-byte signature over the exact bytes of ``manifest.json``;
* ``signing-key.pem`` — the public key (also in the manifest: ``signing.public_key``, hex, and
  ``signing.key_id``, ``Keyring.key_id`` of its raw 32 bytes);
* ``manifest.head`` — the stream's head as stored (version, hash, its signature and key id).

An auditor without noticeflow checks the manifest with OpenSSL 3
(``openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile
manifest.json.sig``), then each file's SHA-256, and compares the key id with the one the operator
publishes (a key shipped inside a pack proves nothing by itself: ``noticeflow evidence key-id``
prints an installation's). `verify_pack` run where the signing keys are installed accepts only the
current or a previous signing key; elsewhere it needs the signer's key id (``--key-id``) and
refuses a pack signed by any other key, or with no key id given.

An unsigned manifest or head (exported, or last appended, before signing existed — or a signature
removed) is a failure unless ``allow_unsigned`` (``evidence verify --allow-unsigned``), which
turns it into a warning line: accepting it silently would let whoever strips a signature pass.

`verify_pack` opens only files inside the pack: a manifest naming an absolute path, a ``..``
component or a symlink leading out is refused, and so is a pack holding any file or directory
that the manifest does not list (besides the manifest, its signature and the public key file it
names): nothing in a pack escapes the signature. Every CSV cell that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) is written with a leading ``'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jinja2 import Environment, PackageLoader

from noticeflow import eventstore as es
from noticeflow import keyring, repository
from noticeflow.config import make_private_dir, write_private
from noticeflow.crypto import Field, load_keys, open_sealed
from noticeflow.domain.errors import InputError
from noticeflow.domain.events import frozen_terms_row
from noticeflow.domain.verdicts import CustomerOutcome, Derivation, EventRecord, derive
from noticeflow.mail import stored_reply

MANIFEST = "manifest.json"
SIGNATURE_FILE = "manifest.json.sig"
PUBLIC_KEY_FILE = "signing-key.pem"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CUSTOMER_COLUMNS = [
    "customer_id", "delivery", "delivered_at", "message_ids", "smtp_replies", "deadline", "timezone",
    "objection_status", "objection_timely", "objection_received_at", "resolution", "resolved_by",
    "opted_in", "opted_in_at", "deemed_accepted_at", "activated", "activated_at", "verdict",
    # added with re-derived verdicts (older packs lack them; verify compares the columns present)
    "settled", "excluded_at", "ground",
]  # fmt: skip
# The auditor's documents shipped in every pack (docs/; in an installed package, package data).
AUDITOR_DOCS = ("verifying.md", "verify_pack.py", "events.md")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    # RFC 4180 line ends: a cell holding a CR or LF is then quoted, never split into two rows.
    writer = csv.DictWriter(
        buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: neutralised(_cell(row.get(k))) for k in columns})
    return buffer.getvalue()


def neutralised(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


async def export_pack(pool: asyncpg.Pool, notice_id: str, out: Path) -> dict[str, Any]:
    notice = await repository.notice_row(pool, notice_id)
    signer = es.signing_keys(es.HEAD_KEY_USE)
    if not signer:
        raise InputError("cannot sign the pack: no signing key (set NOTICEFLOW_SIGNING_KEY)")
    stream = es.notice_stream(notice_id)
    events = [e.as_json() for e in await es.read_stream(pool, stream, upcast=False)]
    problem = es.verify_chain(events) or await es.verify_stream(pool, stream)
    if problem:
        raise InputError(f"the stored events of {notice_id} fail verification: {problem}")
    # A pack is signed: never sign records that do not follow from the events.
    mismatches = await _database_outcomes(pool, notice, events, [])
    if mismatches:
        more = len(mismatches) - 3
        shown = "; ".join(mismatches[:3]) + (f"; and {more} more" if more > 0 else "")
        raise InputError(
            f"the records of {notice_id} do not follow from its events, so no pack is signed"
            f" (`noticeflow evidence verify --notice {notice_id}` lists them;"
            f" `noticeflow projections rebuild` repairs them): {shown}"
        )
    head = await es.stream_head(pool, stream)
    # A pack holds personal data: its directory 0700 and every file 0600, whatever the umask, and
    # whatever was there before (a looser directory is tightened, a file replaced by a new one).
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # A pack is exactly what its manifest lists: files left from anything else would make it
        # fail verification ("not covered by the manifest's signature").
        raise InputError(f"{out} is not an empty directory: export a pack into a new one")
    make_private_dir(out)
    files: dict[str, str] = {}

    def write(name: str, text: str) -> None:
        write_private(out / name, text.encode("utf-8"))
        files[name] = sha256_file(out / name)

    exported_at = datetime.now(UTC)
    write("events.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    write("notice.txt", notice["notice_text"])
    audience = await _audience(pool, notice_id)
    write("audience.json", json.dumps(audience, indent=2, default=_cell) + "\n")
    customers = await _customer_rows(pool, notice_id)
    # Why each customer ends where it does: derived from the events by the rules (docs/verifying.md)
    derived = derive_from_json(events, as_of=exported_at).customers
    for row in customers:
        outcome = derived.get(row["customer_id"])
        row["ground"] = outcome.ground if outcome is not None else ""
    write("customers.csv", _csv(customers, CUSTOMER_COLUMNS))
    ledger = [
        dict(r)
        for r in await pool.fetch(
            "SELECT customer_id, email, kind, message_id, status, smtp_code, smtp_status, smtp_text,"
            " smtp_reply, attempts, first_attempt_at, finished_at FROM deliveries"
            " WHERE notice_id = $1 ORDER BY customer_id, kind, email",
            notice_id,
        )
    ]
    keys = await load_keys(pool, [row["customer_id"] for row in ledger])
    for row in ledger:
        row["email"] = open_sealed(keys.get(row["customer_id"]), Field.DELIVERY_EMAIL, row["email"])
        # The reply as code, enhanced status and its text opened ([erased] once the key is gone;
        # rows from before migration 014: their unsealed reply, read the same way).
        reply = stored_reply(row, keys.get(row["customer_id"]))
        row.pop("smtp_reply")
        row.update(smtp_code=reply.code, smtp_status=reply.status, smtp_text=reply.text)
    write("deliveries.csv", _csv(ledger, list(ledger[0].keys()) if ledger else ["customer_id"]))
    spec = json.loads(notice["spec"])
    summary = {**spec, **dict(notice), "notice_id": notice_id}
    env = Environment(loader=PackageLoader("noticeflow", "templates/evidence"), autoescape=True)
    write(
        "report.html",
        env.get_template("report.html.j2").render(
            summary=summary,
            customers=customers,
            events=events,
            text_sha256=notice["text_sha256"],
            exported_at=exported_at.isoformat(),
        ),
    )
    for name, body in auditor_docs().items():
        write_private(out / name, body)
        files[name] = sha256_file(out / name)
    key_id, key = signer[0]
    public = es.public_bytes(key)
    write(
        PUBLIC_KEY_FILE,
        key.public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii"),
    )
    manifest = {
        "notice_id": notice_id,
        "exported_at": exported_at.isoformat(),
        "text_sha256": notice["text_sha256"],
        "events": len(events),
        "chain_head": events[-1]["hash"] if events else None,
        "head": head.as_json() if head else None,
        "files": files,
        "signing": {
            "algorithm": "Ed25519",
            "key_id": key_id,
            "public_key": public.hex(),
            "public_key_file": PUBLIC_KEY_FILE,
            "signature_file": SIGNATURE_FILE,
            "signed": f"the exact bytes of {MANIFEST}",
        },
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    write_private(out / MANIFEST, body)
    write_private(out / SIGNATURE_FILE, key.sign(body))
    return manifest


async def _audience(pool: asyncpg.Pool, notice_id: str) -> list[dict[str, Any]]:
    recipients = await pool.fetch(
        "SELECT customer_id, name, region, services, timezone, window_days, window_unit, country,"
        " snapshot_at FROM recipients WHERE notice_id = $1 ORDER BY customer_id",
        notice_id,
    )
    contacts = await pool.fetch(
        "SELECT customer_id, generation, position, email, snapshot_at FROM recipient_contacts"
        " WHERE notice_id = $1 ORDER BY customer_id, generation, position",
        notice_id,
    )
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for row in contacts:
        by_customer.setdefault(row["customer_id"], []).append(
            {k: row[k] for k in ("generation", "position", "email", "snapshot_at")}
        )
    keys = await load_keys(pool, [r["customer_id"] for r in recipients])

    def shown(customer_id: str, field: str, value: str) -> str:
        return open_sealed(keys.get(customer_id), field, value)

    return [
        {
            **dict(r),
            "name": shown(r["customer_id"], Field.CUSTOMER_NAME, r["name"]),
            "contacts": [
                {**c, "email": shown(r["customer_id"], Field.CONTACT_EMAIL, c["email"])}
                for c in by_customer.get(r["customer_id"], [])
            ],
        }
        for r in recipients
    ]


NOTICE_MAILINGS = "(d.kind = 'notice' OR starts_with(d.kind, 'resend-'))"


async def _customer_rows(pool: asyncpg.Pool, notice_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT r.*, o.status AS objection_status, o.timely AS objection_timely,"
        " o.received_at AS objection_received_at, o.status AS resolution, o.resolved_by,"
        # every mailing of the notice itself: the first, then each resend (kind resend-<receipt>),
        # in the order they were sent
        " (SELECT array_agg(d.message_id ORDER BY d.first_attempt_at, d.email) FROM deliveries d"
        "   WHERE d.notice_id = r.notice_id AND d.customer_id = r.customer_id"
        f"   AND {NOTICE_MAILINGS}) AS message_ids,"
        # status and reply code per contact (the reply's text, which may echo the address, is in
        # deliveries.csv, opened only while the customer's key exists)
        " (SELECT array_agg(d.status || ': ' || concat_ws(' ', d.smtp_code, d.smtp_status)"
        "   ORDER BY d.first_attempt_at, d.email)"
        "   FROM deliveries d WHERE d.notice_id = r.notice_id AND d.customer_id = r.customer_id"
        f"   AND {NOTICE_MAILINGS}) AS smtp_replies"
        " FROM recipients r LEFT JOIN LATERAL (SELECT * FROM objections o WHERE o.notice_id ="
        "   r.notice_id AND o.customer_id = r.customer_id ORDER BY o.received_at DESC LIMIT 1) o"
        "   ON true WHERE r.notice_id = $1 ORDER BY r.customer_id",
        notice_id,
    )
    # Who resolved a case is sealed with the customer's key: opened here ([erased] once it is gone).
    keys = await load_keys(pool, [row["customer_id"] for row in rows])
    return [
        {
            **dict(row),
            "resolved_by": open_sealed(
                keys.get(row["customer_id"]), Field.RESOLVED_BY, row["resolved_by"]
            ),
        }
        for row in rows
    ]


@dataclass(frozen=True)
class Verification:
    ok: bool
    problem: str | None  # the first problem (all of them: ``problems``)
    events: int
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem": self.problem,
            "problems": list(self.problems or ([self.problem] if self.problem else [])),
            "events": self.events,
            "warnings": list(self.warnings),
        }

    @classmethod
    def of(cls, problems: list[str], events: int, warnings: tuple[str, ...] = ()) -> Verification:
        return cls(
            not problems, problems[0] if problems else None, events, warnings, tuple(problems)
        )


# --- re-derived outcomes (issue 11): the events replayed through the rules, then compared ------


def auditor_docs() -> dict[str, bytes]:
    """The documents an auditor needs to verify a pack without noticeflow (docs/verifying.md,
    docs/verify_pack.py, docs/events.md): package data in an installed package
    (noticeflow/pack_docs), the repository's docs/ in a checkout. Those not found are left out."""
    from importlib import resources

    found: dict[str, bytes] = {}
    shipped = resources.files("noticeflow") / "pack_docs"
    checkout = Path(__file__).resolve().parents[1] / "docs"
    for name in AUDITOR_DOCS:
        resource = shipped / name
        if resource.is_file():
            found[name] = resource.read_bytes()
        elif (checkout / name).is_file():
            found[name] = (checkout / name).read_bytes()
    return found


def derive_from_json(
    events: list[dict[str, Any]],
    as_of: datetime | None = None,
    terms: Any = None,
) -> Derivation:
    """The events in their stored JSON form, replayed through the rules (domain/verdicts.py)."""
    return derive([EventRecord.from_json(e) for e in events], as_of=as_of, terms=terms)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if value is None:
        return "none"
    return str(getattr(value, "value", value))


def _mismatch(customer_id: str, name: str, recorded: Any, derived: Any, why: str = "") -> str:
    tail = f" ({why})" if why else ""
    return (
        f"customer {customer_id}: {name} is {_shown(recorded)} in the records, the events say"
        f" {_shown(derived)}{tail}"
    )


def _verdict_known(outcome: CustomerOutcome) -> str | None:
    """The verdict the records must hold, when the events fix it: a settled customer's, or
    ``activate`` for one switched on (an unsettled customer's pending verdict is no event)."""
    if outcome.settled:
        return outcome.verdict
    open_timely = any(c.status.value == "open" and c.timely for c in outcome.cases)
    if outcome.activated and not open_timely:
        return "activate"
    return None


RECIPIENT_FIELDS = (
    "delivery", "delivered_at", "deadline", "opted_in", "opted_in_at", "excluded_at",
    "activated", "activated_at", "deemed_accepted_at", "settled",
)  # fmt: skip


def record_problems(
    derivation: Derivation,
    recipients: list[Mapping[str, Any]],
    objections: list[Mapping[str, Any]],
    enablements: list[Mapping[str, Any]],
    notice_id: str,
    switched_elsewhere: frozenset[str] = frozenset(),
) -> list[str]:
    """Each customer's derived outcome against the records (``recipients``, ``objections``,
    ``subprocessor_enablements``): one line per field that differs, naming the customer.
    ``switched_elsewhere``: customers whose enablement row names another notice whose own
    stream has that switch at that instant (checked by the caller)."""
    found: list[str] = []
    derived = derivation.customers
    by_id = {str(r["customer_id"]): r for r in recipients}
    for customer_id in sorted(set(by_id) - set(derived)):
        found.append(
            f"customer {customer_id}: a recipient in the records, not in the audience event"
        )
    for customer_id, outcome in derived.items():
        row = by_id.get(customer_id)
        if row is None:
            found.append(f"customer {customer_id}: in the audience event, not in the records")
            continue
        for name in RECIPIENT_FIELDS:
            value = getattr(outcome, name)
            recorded = row[name]
            if name == "delivery":
                value = value.value
            if recorded != value:
                found.append(_mismatch(customer_id, name, recorded, value, outcome.why))
        # The records hold exactly the verdict the events wrote (a pending one is no event).
        if row["verdict"] != outcome.record_verdict:
            found.append(
                _mismatch(customer_id, "verdict", row["verdict"], outcome.record_verdict,
                          outcome.why)
            )  # fmt: skip
    cases = {c.key: (customer_id, c) for customer_id, o in derived.items() for c in o.cases}
    seen = set()
    for row in objections:
        key = str(row["idempotency_key"])
        seen.add(key)
        if key not in cases:
            found.append(
                f"customer {row['customer_id']}: objection {key} is in the records, not in the events"
            )
            continue
        customer_id, case = cases[key]
        for name, recorded, value in (
            ("customer_id", row["customer_id"], customer_id),
            ("status", row["status"], case.status.value),
            ("timely", row["timely"], case.timely),
            ("received_at", row["received_at"], case.received_at),
        ):
            if recorded != value:
                found.append(
                    f"customer {customer_id}: objection {key} {name} is {_shown(recorded)} in"
                    f" the records, the events say {_shown(value)}"
                )
    for key in sorted(set(cases) - seen):
        found.append(
            f"customer {cases[key][0]}: objection {key} is in the events, not in the records"
        )
    switches = {r["customer_id"]: r for r in enablements}
    for customer_id, outcome in derived.items():
        row = switches.get(customer_id)
        if outcome.switched_at is None:
            continue  # never switched by this notice: whatever is there is another's
        if row is None:
            found.append(
                f"customer {customer_id}: subprocessor_enablements has no row, the events say"
                f" {'on' if outcome.activated else 'off'} since {_shown(outcome.switched_at)}"
            )
            continue
        if (
            row["notice_id"] != notice_id
            and row["since"] > outcome.switched_at
            and customer_id in switched_elsewhere
        ):
            continue  # a later notice switched it since (its own stream says so)
        if row["notice_id"] == notice_id and row["since"] != outcome.switched_at:
            found.append(
                _mismatch(customer_id, "subprocessor_enablements.since", row["since"],
                          outcome.switched_at, outcome.why)
            )  # fmt: skip
        elif row["notice_id"] != notice_id and row["since"] > outcome.switched_at:
            found.append(
                f"customer {customer_id}: subprocessor_enablements names notice"
                f" {row['notice_id']} switching it at {_shown(row['since'])}, which that"
                " notice's events do not say"
            )
            continue
        # (one already on from a baseline or an earlier notice keeps that row: compared as is)
        if row["enabled"] != outcome.activated:
            found.append(
                _mismatch(customer_id, "subprocessor_enablements.enabled", row["enabled"],
                          outcome.activated, outcome.why)
            )  # fmt: skip
    return found


def _uncell(text: str) -> str:
    """A CSV cell as written before neutralising (a leading ' added to a formula start)."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def _as_cell(value: Any) -> str:
    return str(neutralised(_cell(value)))


def csv_problems(derivation: Derivation, rows: list[dict[str, str]]) -> list[str]:
    """Each customer's derived outcome against the pack's customers.csv (the columns it has)."""
    found: list[str] = []
    derived = derivation.customers
    by_id = {_uncell(r.get("customer_id", "")): r for r in rows}
    for customer_id in sorted(set(by_id) - set(derived)):
        found.append(f"customer {customer_id}: in customers.csv, not in the audience event")
    for customer_id, outcome in derived.items():
        row = by_id.get(customer_id)
        if row is None:
            found.append(f"customer {customer_id}: in the audience event, not in customers.csv")
            continue
        latest = outcome.latest_case
        expected: dict[str, Any] = {
            name: getattr(outcome, name) for name in RECIPIENT_FIELDS if name != "delivery"
        }
        expected.update(
            delivery=outcome.delivery.value,
            objection_status=latest.status.value if latest else None,
            objection_timely=latest.timely if latest else None,
            objection_received_at=latest.received_at if latest else None,
            resolution=latest.status.value if latest else None,
            ground=outcome.ground,
        )
        verdict = _verdict_known(outcome)
        if verdict is not None:
            expected["verdict"] = verdict
        for name, value in expected.items():
            if name not in row:
                continue  # an older pack: the column did not exist yet
            if row[name] != _as_cell(value):
                found.append(
                    f"customer {customer_id}: {name} is {_uncell(row[name]) or 'empty'} in"
                    f" customers.csv, the events say {_cell(value) if value is not None else 'empty'}"
                    f" ({outcome.why})"
                )
    return found


def _outside(directory: Path, name: str) -> bool:
    """Whether ``name`` (as a manifest gives it) leads outside the pack ``directory``."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or PureWindowsPath(name).is_absolute() or "\\" in name:
        return True
    if ".." in pure.parts:
        return True
    root = directory.resolve()
    return not (directory / name).resolve().is_relative_to(root)


def _unlisted(directory: Path, listed: set[str], signing: Any) -> list[str]:
    """Everything in the pack that the manifest does not list (files, links, directories with
    nothing listed in them), besides the manifest, its signature and the public key file it
    names: none of it is covered by the signature, so an auditor must not take it as evidence."""
    covered = {PurePosixPath(name).as_posix() for name in listed}
    covered |= {MANIFEST, SIGNATURE_FILE}
    if isinstance(signing, dict) and isinstance(signing.get("public_key_file"), str):
        covered.add(PurePosixPath(signing["public_key_file"]).as_posix())
    holding = {p.as_posix() for name in covered for p in PurePosixPath(name).parents}
    found = []
    for root, dirs, names in os.walk(directory):  # links are not followed
        here = PurePosixPath(Path(root).relative_to(directory).as_posix())
        inside = []
        for name in sorted(dirs):
            relative = (here / name).as_posix()
            if relative in holding and not (Path(root) / name).is_symlink():
                inside.append(name)
            else:
                found.append(relative + ("" if (Path(root) / name).is_symlink() else "/"))
        dirs[:] = inside
        found += [(here / n).as_posix() for n in names if (here / n).as_posix() not in covered]
    return sorted(found)


def verify_pack(
    directory: Path, allow_unsigned: bool = False, key_id: str | None = None
) -> Verification:
    """Check a pack offline: paths, file hashes, the notice text hash, every event's chain link,
    the manifest's signature and the stream head's signature.

    Who signed it: the installed signing keys (current or previous) where there are some; else
    ``key_id``, the signer's published key id (`noticeflow evidence key-id`). With neither, the
    pack is refused: a pack re-signed by anyone with its own key would otherwise pass."""
    manifest_path = directory / MANIFEST
    if manifest_path.is_symlink() or _outside(directory, MANIFEST):
        return Verification(False, f"{MANIFEST}: a link leading out of the pack (refused)", 0)
    try:
        body = manifest_path.read_bytes()
        manifest = json.loads(body)
    except (OSError, json.JSONDecodeError) as error:
        return Verification(False, f"{MANIFEST}: {error}", 0)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return Verification(False, f"{MANIFEST}: not a pack manifest", 0)
    files: dict[str, Any] = manifest.get("files", {})
    outside = sorted(name for name in files if _outside(directory, str(name)))
    if outside:
        return Verification(
            False,
            f"{MANIFEST} names paths outside the pack (refused, nothing opened):"
            f" {', '.join(repr(name) for name in outside)}",
            0,
        )
    unlisted = _unlisted(directory, {str(name) for name in files}, manifest.get("signing"))
    if unlisted:
        shown = ", ".join(repr(name) for name in unlisted[:10])
        more = f" and {len(unlisted) - 10} more" if len(unlisted) > 10 else ""
        return Verification(
            False,
            f"the pack holds files not covered by the manifest's signature (not listed in"
            f" {MANIFEST}): {shown}{more}",
            0,
        )
    for required in ("events.jsonl", "notice.txt"):
        if required not in files:
            return Verification(False, f"{MANIFEST} does not list {required}", 0)
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            return Verification(False, f"{name}: missing from the pack", 0)
        if sha256_file(path) != digest:
            return Verification(False, f"{name}: does not match the manifest (altered)", 0)
    text = (directory / "notice.txt").read_bytes()
    if hashlib.sha256(text).hexdigest() != manifest.get("text_sha256"):
        return Verification(False, "notice.txt: does not match the notice text hash", 0)
    try:
        events = [
            json.loads(line)
            for line in (directory / "events.jsonl").read_text().splitlines()
            if line
        ]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return Verification(False, f"events.jsonl: {error}", 0)
    checked = _verify_events(events, manifest.get("text_sha256"), manifest.get("chain_head"))
    if not checked.ok:
        return checked
    warnings: list[str] = []
    keys, problem = _manifest_signature(directory, body, manifest, allow_unsigned, warnings, key_id)
    if problem is None:
        stream = es.notice_stream(str(manifest.get("notice_id")))
        problem = _head_problem(
            manifest.get("head"), stream, events, keys, allow_unsigned, warnings
        )
    if problem:
        return Verification(False, problem, len(events), tuple(warnings))
    return Verification.of(
        _pack_outcomes(directory, manifest, events), len(events), tuple(warnings)
    )


def _pack_outcomes(
    directory: Path, manifest: dict[str, Any], events: list[dict[str, Any]]
) -> list[str]:
    """The events replayed through the rules: every decision that breaks them, and every
    customers.csv cell that differs from the derived outcome (naming customer and column)."""
    exported = manifest.get("exported_at")
    try:
        as_of = datetime.fromisoformat(str(exported)) if exported else None
        derivation = derive_from_json(events, as_of=as_of)
    except (KeyError, TypeError, ValueError) as error:
        return [f"events.jsonl: an event does not have the fields its type needs ({error!r})"]
    found = [str(p) for p in derivation.problems]
    if "customers.csv" in manifest.get("files", {}):
        try:
            text = (directory / "customers.csv").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            return [*found, f"customers.csv: {error}"]
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        found += csv_problems(derivation, rows)
    return found


def _manifest_signature(
    directory: Path,
    body: bytes,
    manifest: dict[str, Any],
    allow_unsigned: bool,
    warnings: list[str],
    trusted_key_id: str | None = None,
) -> tuple[dict[str, bytes], str | None]:
    """(keys to check the head with, problem) for the manifest's signature."""
    installed = es.signing_public_keys()
    if trusted_key_id:  # the signer's published key id: only that key counts
        installed = {k: v for k, v in installed.items() if k == trusted_key_id}
    signing = manifest.get("signing")
    signature_path = directory / SIGNATURE_FILE
    if not isinstance(signing, dict) or not signature_path.exists():
        unsigned = (
            f"{MANIFEST} is not signed (exported before packs were signed, or its signature was"
            " removed): its files cannot be tied to this installation"
        )
        if not allow_unsigned:
            return installed, unsigned + "; --allow-unsigned to accept it with a warning"
        warnings.append(unsigned)
        return installed, None
    if signature_path.is_symlink() or _outside(directory, SIGNATURE_FILE):
        return installed, f"{SIGNATURE_FILE}: a link leading out of the pack (refused)"
    key_id = str(signing.get("key_id"))
    try:
        public = bytes.fromhex(str(signing.get("public_key")))
    except ValueError:
        return installed, f"{MANIFEST}: signing.public_key is not hex"
    if keyring.Keyring.key_id(public) != key_id:
        return installed, f"{MANIFEST}: signing.key_id is not the id of signing.public_key"
    if installed:
        if installed.get(key_id) != public:
            return installed, (
                f"{MANIFEST} is signed by a key this installation does not know (key id {key_id}):"
                " neither the current nor a previous signing key"
            )
        keys = installed
    elif trusted_key_id:
        if key_id != trusted_key_id:
            return {}, (
                f"{MANIFEST} is signed by key id {key_id}, not by the key id you gave"
                f" ({trusted_key_id})"
            )
        keys = {key_id: public}
    else:
        return {}, (
            f"cannot tell who signed this pack (its key id is {key_id}): no signing key here;"
            " give the signer's published key id with --key-id (`noticeflow evidence key-id`"
            " prints an installation's), or verify where NOTICEFLOW_SIGNING_KEY is set"
        )
    if not es.verify_signature(public, signature_path.read_bytes(), body):
        return keys, f"{MANIFEST} signature does not match (the manifest was changed after export)"
    return keys, None


def _head_problem(
    head: Any,
    stream: str,
    events: list[dict[str, Any]],
    keys: dict[str, bytes],
    allow_unsigned: bool,
    warnings: list[str],
) -> str | None:
    if head is None:
        unsigned = (
            f"the pack carries no signed head of {stream} (exported before heads were signed)"
        )
        if not allow_unsigned:
            return unsigned + "; --allow-unsigned to accept it with a warning"
        warnings.append(unsigned)
        return None
    if not isinstance(head, dict):
        return f"{MANIFEST}: head is not an object"
    last = events[-1] if events else {"version": 0, "hash": es.GENESIS.hex()}
    if head.get("stream_id") != stream:
        return f"{MANIFEST}: the head is of {head.get('stream_id')}, not {stream}"
    if head.get("version") != last["version"] or head.get("hash") != last["hash"]:
        return (
            f"{stream}: the signed head (version {head.get('version')}) is not the last event"
            f" (version {last['version']}): events removed or added at the end"
        )
    if not head.get("signature"):
        return _unsigned_head(stream, allow_unsigned, warnings)
    problem = es.head_signature_problem(head, keys)
    return f"{stream}: {problem}" if problem else None


def _unsigned_head(stream: str, allow_unsigned: bool, warnings: list[str]) -> str | None:
    unsigned = (
        f"{stream}: head is not signed (last appended before heads were signed, or its signature"
        " was removed): the events cannot be proven unaltered by the database owner"
    )
    if not allow_unsigned:
        return unsigned + "; --allow-unsigned to accept it with a warning"
    warnings.append(unsigned)
    return None


def _verify_events(
    events: list[dict[str, Any]], text_sha256: str | None, head: str | None
) -> Verification:
    problem = es.verify_chain(events)
    if problem:
        return Verification(False, f"first bad event: {problem}", len(events))
    created = next((e for e in events if e["event_type"] == "notice_created"), None)
    if created is None or created["data"].get("text_sha256") != text_sha256:
        return Verification(
            False, "the notice_created event does not carry the notice text hash", len(events)
        )
    if head is not None and (not events or events[-1]["hash"] != head):
        return Verification(
            False,
            "the last event is not the recorded chain head (events removed at the end)",
            len(events),
        )
    return Verification(True, None, len(events))


async def verify_database(
    pool: asyncpg.Pool, notice_id: str, allow_unsigned: bool = False
) -> Verification:
    """Check a notice's stream in the database: chain, head and the head's signature."""
    notice = await repository.notice_row(pool, notice_id)
    stream = es.notice_stream(notice_id)
    problem = await es.verify_stream(pool, stream)
    events = [e.as_json() for e in await es.read_stream(pool, stream, upcast=False)]
    if problem and problem.event_id == "-":  # the head: its version, hash or signature
        return Verification(False, f"{stream}: {problem.problem}", len(events))
    if problem:
        return Verification(False, f"first bad event: {problem}", len(events))
    checked = _verify_events(events, notice["text_sha256"], None)
    if not checked.ok:
        return checked
    head = await es.stream_head(pool, stream)
    warnings: list[str] = []
    if head is not None and head.signature is None:
        unsigned = _unsigned_head(stream, allow_unsigned, warnings)
        if unsigned:
            return Verification(False, unsigned, len(events))
    found = await _database_outcomes(pool, notice, events, warnings)
    return Verification.of(found, len(events), tuple(warnings))


TERMS_SQL = (  # as the audience snapshot hashed them (noticeflow/application/sending.py snapshot_audience)
    "SELECT customer_id, region, services, timezone, window_days, window_unit, country,"
    " authorisation, language FROM recipients WHERE notice_id = $1 ORDER BY customer_id"
)


async def _database_outcomes(
    pool: asyncpg.Pool, notice: asyncpg.Record, events: list[dict[str, Any]], warnings: list[str]
) -> list[str]:
    """The stream replayed through the rules, then compared with the records. The contract terms
    that count a deadline again come from the audience snapshot event where it carries them (the
    recipients' rows are their projection: a difference names the customer and the field); an
    older snapshot holds only their hash, which the recipients' rows must match."""
    from noticeflow.domain.deadlines import WindowUnit, customer_deadline
    from noticeflow.domain.notice import NoticeSpec

    notice_id = str(notice["notice_id"])
    found: list[str] = []
    terms = {
        r["customer_id"]: frozen_terms_row(dict(r)) for r in await pool.fetch(TERMS_SQL, notice_id)
    }
    snapshots = [e for e in events if e["event_type"] == "audience_snapshotted"]
    snapshot = snapshots[0] if snapshots else None
    digest = hashlib.sha256(
        json.dumps(list(terms.values()), default=str, sort_keys=True).encode()
    ).hexdigest()
    # A large audience is frozen in parts: their terms and timezones together.
    frozen = {c: t for e in snapshots for c, t in (e["data"].get("terms") or {}).items()}
    if frozen:  # the events say what the terms are: compare field by field, then count with it
        zones = {c: z for e in snapshots for c, z in (e["data"].get("timezones") or {}).items()}
        for customer_id, said in sorted(frozen.items()):
            said = {
                "authorisation": "general",
                "language": "en",
                **said,
                "timezone": zones.get(customer_id),
            }
            row = terms.get(customer_id)
            if row is not None:
                row = {"authorisation": "general", "language": "en", **row}
            for name, value in said.items():
                if (
                    row is not None
                    and row[name] != value
                    and not (name == "services" and list(row[name] or []) == list(value))
                ):
                    found.append(_mismatch(customer_id, name, row[name], value, "as frozen"))
        terms = {c: {"customer_id": c, **t, "timezone": zones.get(c)} for c, t in frozen.items()}
    window = NoticeSpec.model_validate_json(notice["spec"]).objection_window

    def deadline(customer_id: str, delivered_at: datetime) -> datetime | None:
        row = terms.get(customer_id)
        if row is None:
            return None
        return customer_deadline(
            delivered_at, window, row["timezone"], row["window_days"],
            WindowUnit(row["window_unit"] or "calendar"), country=row["country"],
        )  # fmt: skip

    trusted = bool(frozen) or (
        snapshot is not None and snapshot["data"].get("snapshot_sha256") == digest
    )
    if snapshot is not None and not trusted:  # an old snapshot (its hash may predate `country`)
        warnings.append(
            "the recipients' contract terms (region, services, timezone, window, country) do not"
            " hash to the audience_snapshotted event's snapshot_sha256 (altered since, or hashed"
            " before a term was added): deadlines are not counted again"
        )
    try:
        derivation = derive_from_json(
            events, as_of=datetime.now(UTC), terms=deadline if trusted else None
        )
    except (KeyError, TypeError, ValueError) as error:
        return [*found, f"an event does not have the fields its type needs ({error!r})"]
    found += [str(p) for p in derivation.problems]
    recipients = await pool.fetch(
        "SELECT customer_id, delivery, delivered_at, deadline, opted_in, opted_in_at, excluded_at,"
        " activated, activated_at, deemed_accepted_at, verdict, settled FROM recipients"
        " WHERE notice_id = $1 ORDER BY customer_id",
        notice_id,
    )
    objections = await pool.fetch(
        "SELECT idempotency_key, customer_id, status, timely, received_at FROM objections"
        " WHERE notice_id = $1 ORDER BY received_at, idempotency_key",
        notice_id,
    )
    enablements = await pool.fetch(
        "SELECT customer_id, enabled, since, notice_id FROM subprocessor_enablements"
        " WHERE subprocessor = $1 AND customer_id = ANY($2::text[])",
        notice["subprocessor"],
        list(derivation.customers),
    )
    elsewhere: set[str] = set()
    for row in enablements:
        if row["notice_id"] != notice_id and await pool.fetchval(
            # that notice's own stream switched it at that instant
            "SELECT EXISTS (SELECT 1 FROM events WHERE stream_id = $1"
            " AND event_type IN ('subprocessor_enabled', 'subprocessor_disabled')"
            " AND occurred_at = $2 AND data::jsonb ->> 'customer_id' = $3)",
            es.notice_stream(str(row["notice_id"])),
            row["since"],
            row["customer_id"],
        ):
            elsewhere.add(str(row["customer_id"]))
    found += record_problems(
        derivation, recipients, objections, enablements, notice_id, frozenset(elsewhere)
    )
    found += notice_record_problems(events, notice)
    return found


def notice_record_problems(events: list[dict[str, Any]], notice: Any) -> list[str]:
    """The notice's own record (what the workflow and the intake read: its phase, effective date,
    window close and approver) against its events: the last phase change, the approval."""
    expected: dict[str, Any] = {"phase": "draft", "window_closes_at": None, "approved_by": None}
    for event in events:
        data = event["data"]
        if event["event_type"] == "notice_created":
            spec = data.get("spec") or {}
            expected["effective_at"] = _instant_of(spec.get("effective_at"))
        elif event["event_type"] == "phase_changed":
            expected["phase"] = data.get("phase")
            expected["effective_at"] = _instant_of(data.get("effective_at"))
            expected["window_closes_at"] = _instant_of(data.get("window_closes_at"))
        elif event["event_type"] == "notice_approved" and data.get("by"):
            expected["approved_by"] = data["by"]
    found = []
    for name, value in expected.items():
        if notice[name] != value:
            found.append(
                f"notice {notice['notice_id']}: {name} is {_shown(notice[name])} in the records,"
                f" the events say {_shown(value)}"
            )
    return found


def _instant_of(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
