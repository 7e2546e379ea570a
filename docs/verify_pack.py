#!/usr/bin/env python3
"""Verify a noticeflow evidence pack without noticeflow: standard library + ``cryptography``.

    python3 verify_pack.py PACK_DIR --key-id KEY_ID          (the operator's published key id)
    python3 verify_pack.py PACK_DIR --public-key signer.pem   (or the signer's public key itself)

Checks, as docs/verifying.md describes them: the manifest's Ed25519 signature and every file's
SHA-256; the notice text hash; each event's place in the per-stream SHA-256 chain; the signed
stream head; then replays the events through the product's rules and compares every customer's
outcome with customers.csv. Prints each problem on its own line; exit status 0 only if none.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMULA = ("=", "+", "-", "@", "\t", "\r")
OFF = {"excluded", "terminated", "declined", "excluded_by_ops", "removed"}


def canonical(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not \\u-escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def instant(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(b"noticeflow/key-id\x1f" + raw_public_key).hexdigest()[:16]


def signed(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --- files, signatures, chain ------------------------------------------------------------------


def check_files(pack: Path, trusted_id: str | None, pem: Path | None) -> tuple[list[str], Any]:
    body = (pack / "manifest.json").read_bytes()
    manifest = json.loads(body)
    problems = []
    signing = manifest.get("signing") or {}
    listed = set(manifest["files"]) | {"manifest.json", "manifest.json.sig"}
    listed.add(signing.get("public_key_file", "signing-key.pem"))
    for path in sorted(pack.rglob("*")):
        name = path.relative_to(pack).as_posix()
        if path.is_file() and name not in listed:
            problems.append(f"{name}: in the pack but not in the manifest (not signed)")
    for name, digest in sorted(manifest["files"].items()):
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or (pack / name).is_symlink():
            problems.append(f"{name}: leads outside the pack")
        elif not (pack / name).is_file():
            problems.append(f"{name}: listed in the manifest, missing")
        elif hashlib.sha256((pack / name).read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: does not match the manifest (altered)")
    text = (pack / "notice.txt").read_bytes()
    if hashlib.sha256(text).hexdigest() != manifest.get("text_sha256"):
        problems.append("notice.txt: does not match the manifest's text_sha256")
    if pem is not None:
        loaded = serialization.load_pem_public_key(pem.read_bytes())
        assert isinstance(loaded, Ed25519PublicKey), "not an Ed25519 public key"
        raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        trusted_id = key_id(raw)
    raw = bytes.fromhex(signing.get("public_key", ""))
    if key_id(raw) != signing.get("key_id"):
        problems.append("manifest.json: signing.key_id is not the id of signing.public_key")
    if signing.get("key_id") != trusted_id:
        problems.append(
            f"manifest.json: signed by key id {signing.get('key_id')}, not the trusted {trusted_id}"
        )
    public = Ed25519PublicKey.from_public_bytes(raw)
    signature = pack / "manifest.json.sig"
    if not signature.is_file() or not signed(public, signature.read_bytes(), body):
        problems.append("manifest.json: the signature does not match (or is missing)")
    return problems, (manifest, public)


def check_chain(events: list[dict[str, Any]], manifest: dict[str, Any], public: Any) -> list[str]:
    """The per-stream SHA-256 chain, then the signed head (its last event)."""
    previous, version = bytes(32), 0
    for e in events:
        where = f"event version {e['version']} ({e['event_id']})"
        if e["version"] != version + 1:
            return [f"{where}: expected version {version + 1}: an event is missing or reordered"]
        if bytes.fromhex(e["prev_hash"]) != previous:
            return [f"{where}: previous-hash link is broken"]
        when = datetime.fromisoformat(e["occurred_at"]).astimezone(UTC).isoformat()
        header = [e["event_id"], e["stream_id"], e["version"], e["event_type"],
                  e["schema_version"], when]  # fmt: skip
        digest = hashlib.sha256(previous + canonical(header) + b"\n" + canonical(e["data"]))
        if digest.hexdigest() != e["hash"]:
            return [f"{where}: content does not match its hash (altered)"]
        previous, version = digest.digest(), e["version"]
    head = manifest.get("head") or {}
    stream = f"notice-{manifest['notice_id']}"
    if (head.get("stream_id"), head.get("version"), head.get("hash")) != (
        stream,
        version,
        previous.hex(),
    ):
        return [f"{stream}: the signed head is not the last event (events removed or added)"]
    message = canonical(["noticeflow/stream-head/v1", stream, version, previous.hex()])
    if head.get("key_id") != manifest["signing"]["key_id"] or not signed(
        public, bytes.fromhex(head.get("signature") or ""), message
    ):
        return [f"{stream}: the head signature does not match"]
    return []


# --- the rules (docs/verifying.md, "Deriving each customer's outcome") ------------------------


def decide(now: datetime, effective: datetime, c: dict[str, Any], change: str = "addition") -> str:
    cases = c["cases"].values()
    if change == "removal":  # off for every recipient from its effective date
        return "removed"
    if c["excluded_at"]:
        return "excluded_by_ops"
    if any(k["status"] == "terminated" for k in cases):
        return "terminated"
    if any(k["status"] == "excluded" for k in cases):
        return "excluded"
    if c["delivery"] != "delivered" or c["deadline"] is None:
        return "wait_for_delivery"
    if now < c["deadline"]:
        return "wait_for_deadline"
    if any(k["status"] == "open" and k["timely"] for k in cases):
        return "held"
    if c["consent"] and not c["opted_in"]:
        return "declined"
    return "activate"


def ground_of(c: dict[str, Any]) -> str:
    if c["consent"]:
        return "opted_in"
    if c["opted_in"]:
        return "approved"  # a dora contract's approval
    if not any(k["timely"] for k in c["cases"].values()):
        return "deemed_acceptance"
    return "objection_withdrawn"


def derive(events: list[dict[str, Any]], as_of: datetime | None) -> tuple[dict, list[str]]:
    problems: list[str] = []
    customers: dict[str, dict[str, Any]] = {}
    opt_in, effective, cancelled = False, None, False
    change, own, replaces = "addition", None, None  # the notice's kind, its sub-processor
    parts: list[
        tuple[Any, Any, Any]
    ] = []  # an audience frozen in parts: (parts, last id, customers)

    def bad(c: str, text: str, e: dict[str, Any]) -> None:
        problems.append(f"customer {c}: {text} (event version {e['version']})")

    def rules_at(at: datetime, c: dict[str, Any]) -> str:
        if effective is None or at < effective:
            return "before the effective date"
        return decide(at, effective, c, change)

    for e in events:
        kind, d, at = e["event_type"], e["data"], datetime.fromisoformat(e["occurred_at"])
        if kind == "notice_created":
            opt_in, effective = bool(d["spec"]["opt_in"]), instant(d["spec"]["effective_at"])
            change = d["spec"].get("kind") or "addition"
            own, replaces = d["spec"]["subprocessor"], d["spec"].get("replaces")
        elif kind == "notice_postponed":
            effective = instant(d.get("to")) or effective
        elif kind == "phase_changed":
            effective = instant(d.get("effective_at")) or effective
            cancelled = cancelled or d.get("phase") == "cancelled"
        elif kind == "notice_cancelled":
            cancelled = True
            for left in customers.values():
                if not left["activated"]:
                    left["verdict"], left["settled"] = "cancelled", True
        elif kind == "audience_snapshotted":
            # A large audience is frozen in parts 1..n, each after the last id of the one before,
            # no customer in two parts (the ids' order is the database's collation's: not checked).
            ids, number = list(d["customer_ids"]), len(parts) + 1
            if d.get("part") is not None or parts:
                after = parts[-1][1] if parts else None
                if (
                    (d.get("part"), d.get("after")) != (number, after)
                    or len(set(ids)) != len(ids)
                    or any(cid in customers for cid in ids)
                ):
                    problems.append(
                        f"audience part {d.get('part')} is not part {number} after"
                        f" {after or 'the start'} (event version {e['version']})"
                    )
                parts.append((d.get("parts"), ids[-1] if ids else after, d.get("customers")))
            elif customers:
                problems.append(f"the audience is frozen twice (event version {e['version']})")
            for cid in d["customer_ids"]:
                mode = ((d.get("terms") or {}).get(cid) or {}).get("authorisation") or "general"
                customers[cid] = {
                    # Silence is refusal: an opt-in notice, or a specific contract.
                    "consent": opt_in or mode == "specific", "authorisation": mode,
                    "delivery": "pending", "delivered_at": None, "deadline": None, "cases": {},
                    "opted_in": False, "opted_in_at": None, "excluded_at": None,
                    "activated": False, "activated_at": None, "deemed_accepted_at": None,
                    "verdict": None, "settled": False, "ground": "",
                }  # fmt: skip
        elif "customer_id" in d and kind in HANDLED:
            cid = d["customer_id"]
            c = customers.get(cid)
            if c is None:
                bad(cid, f"{kind} for a customer not in the audience", e)
                continue
            other = d.get("subprocessor", own)
            if kind.startswith("subprocessor_") and other != own:
                # only a replacement's switch-off of the one it replaces, as the new one goes on
                if (kind, other, d.get("because")) != ("subprocessor_disabled", replaces,
                                                       "replaced"):  # fmt: skip
                    bad(cid, f"{kind} names {other}, which this notice does not engage", e)
                elif not c["activated"] or c["activated_at"] != at:
                    bad(cid, f"{other} switched off as replaced without {own} switched on", e)
                continue
            if kind == "notice_delivered" and change == "removal" and d.get("deadline"):
                bad(cid, "notice_delivered gives a removal (no window) a deadline", e)
            if kind == "notice_delivered" and c["delivery"] != "delivered":
                c["delivery"] = "delivered"
                c["delivered_at"], c["deadline"] = (
                    instant(d["delivered_at"]),
                    instant(d["deadline"]),
                )
            elif kind == "notice_undelivered" and c["delivery"] != "delivered":
                c["delivery"], c["delivered_at"], c["deadline"] = "undelivered", None, None
            elif kind == "objection_received":
                if d.get("request") == "changes" and c["authorisation"] != "dora":
                    bad(cid, f"a request for changes from a customer with {c['authorisation']}"
                             " authorisation (only dora)", e)  # fmt: skip
                received = instant(d["received_at"])
                timely = c["deadline"] is None or received < c["deadline"]
                if d.get("timely") is not None and d["timely"] != timely:
                    bad(cid, f"objection {d['idempotency_key']}: timely is recorded as"
                             f" {d['timely']}, the deadline says {timely}", e)  # fmt: skip
                c["cases"][d["idempotency_key"]] = {
                    "status": "open",
                    "timely": timely,
                    "received_at": received,
                }
                c["settled"] = False
            elif kind == "objection_resolved":
                for key in d["objections"]:
                    case = c["cases"].get(key)
                    if case is None or case["status"] != "open":
                        bad(cid, f"resolution closes case {key}, which is not open", e)
                        continue
                    case["status"] = d["outcome"]
                c["settled"] = False
            elif kind in ("opt_in_recorded", "opt_in_revoked"):
                if not c["consent"] and c["authorisation"] != "dora":
                    bad(cid, f"{kind} on an ordinary notice from a general customer", e)
                c["opted_in"], c["opted_in_at"] = kind == "opt_in_recorded", at
                c["settled"] = False
            elif kind == "customer_excluded":
                c["excluded_at"], c["settled"] = c["excluded_at"] or at, False
            elif kind == "deemed_acceptance":
                if instant(d.get("deadline")) != c["deadline"]:
                    bad(cid, f"deemed_acceptance names deadline {d.get('deadline')}, the events"
                             f" say {c['deadline'] and c['deadline'].isoformat()}", e)  # fmt: skip
                timely = any(k["timely"] for k in c["cases"].values())
                if c["consent"] or timely or c["opted_in"]:
                    why = ("consent required" if c["consent"] else "a timely objection"
                           if timely else "approved")  # fmt: skip
                    bad(cid, f"deemed_acceptance where silence is not acceptance ({why})", e)
                c["deemed_event"] = instant(d.get("deadline"))
            elif kind == "subprocessor_enabled":
                verdict = rules_at(at, c)
                if cancelled or verdict != "activate":
                    bad(cid, f"switched on at {at.isoformat()} against the rules ({verdict})", e)
                ground = ground_of(c)
                if d.get("because", ground) != ground:
                    bad(cid, f"switched on because {d['because']}, the rules say {ground}", e)
                if ground == "deemed_acceptance" and c.get("deemed_event") is None:
                    bad(cid, "deemed acceptance without its deemed_acceptance event", e)
                if c["activated"]:
                    bad(cid, "switched on while already on", e)
                c["activated"], c["activated_at"], c["ground"] = True, at, ground
                c["deemed_accepted_at"] = c["deadline"] if ground == "deemed_acceptance" else None
            elif kind == "subprocessor_disabled" and change == "removal":
                if rules_at(at, c) != "removed" or d.get("because") != "removed":
                    bad(cid, f"switched off at {at.isoformat()} against the removal's date", e)
                if c.get("switched_off"):
                    bad(cid, "switched off twice by the removal", e)
                c["switched_off"] = True
            elif (kind == "subprocessor_disabled" and change == "material_change"
                  and not c["activated"]):  # fmt: skip
                # A customer that refused the changed terms: off, though on under another notice.
                verdict = rules_at(at, c)
                if verdict not in OFF or d.get("because") != verdict:
                    bad(cid, f"switched off at {at.isoformat()} while not on ({verdict})", e)
                if c.get("switched_off"):
                    bad(cid, "switched off twice by the change", e)
                c["switched_off"] = True
            elif kind == "subprocessor_disabled":
                if not c["activated"]:
                    bad(cid, "switched off while not on", e)
                c["activated"] = False
            elif kind == "customer_settled":
                verdict = rules_at(at, c)
                open_case = any(k["status"] == "open" for k in c["cases"].values())
                if d["verdict"] != verdict:
                    bad(cid, f"settled as {d['verdict']}, the rules say {verdict}", e)
                elif verdict not in OFF | {"activate"}:
                    bad(cid, f"settled as {verdict}, which settles nothing", e)
                elif open_case:
                    bad(cid, f"settled as {verdict} with a case still open", e)
                c["verdict"], c["settled"] = d["verdict"], True
    for c in customers.values():
        if c["activated"]:
            continue
        if c["settled"]:
            c["ground"] = c["verdict"]
        elif cancelled:
            c["ground"] = "cancelled"
        elif as_of is None or effective is None or as_of < effective:
            c["ground"] = "not_yet_effective"
        else:
            now = rules_at(as_of, c)
            c["ground"] = now
            if now == "activate" or now in OFF:
                open_case = any(k["status"] == "open" for k in c["cases"].values())
                c["ground"] = "case_open" if open_case else "due"
    if parts and ({p[0] for p in parts} | {len(parts)} != {len(parts)}
                  or {p[2] for p in parts} != {len(customers)}):  # fmt: skip
        problems.append(
            f"the audience's {len(parts)} part(s) do not add up to what each says"
            f" ({parts[-1][0]} parts, {parts[-1][2]} customers)"
        )
    return customers, problems


HANDLED = {
    "notice_delivered", "notice_undelivered", "objection_received", "objection_resolved",
    "opt_in_recorded", "opt_in_revoked", "customer_excluded", "deemed_acceptance",
    "subprocessor_enabled", "subprocessor_disabled", "customer_settled",
}  # fmt: skip


def cell(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA) else text


def compare(customers: dict[str, dict[str, Any]], csv_text: str) -> list[str]:
    rows = {r["customer_id"].removeprefix("'"): r for r in csv.DictReader(io.StringIO(csv_text))}
    problems = [
        f"customer {c}: in customers.csv, not in the events" for c in rows.keys() - customers
    ]
    for cid, c in sorted(customers.items()):
        row = rows.get(cid)
        if row is None:
            problems.append(f"customer {cid}: in the events, not in customers.csv")
            continue
        latest = max(c["cases"].values(), key=lambda k: k["received_at"], default=None)
        expected = {k: c[k] for k in (
            "delivery", "delivered_at", "deadline", "opted_in", "opted_in_at", "excluded_at",
            "activated", "activated_at", "deemed_accepted_at", "settled", "ground")}  # fmt: skip
        expected["objection_status"] = expected["resolution"] = latest and latest["status"]
        expected["objection_timely"] = latest and latest["timely"]
        expected["objection_received_at"] = latest and latest["received_at"]
        open_timely = any(k["status"] == "open" and k["timely"] for k in c["cases"].values())
        if c["settled"]:
            expected["verdict"] = c["verdict"]
        elif c["activated"] and not open_timely:
            expected["verdict"] = "activate"
        for column, value in expected.items():
            if column in row and row[column] != cell(value):
                problems.append(
                    f"customer {cid}: {column} is {row[column] or 'empty'} in customers.csv,"
                    f" the events say {cell(value) or 'empty'}"
                )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pack", type=Path)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--key-id", help="the signer's published key id")
    who.add_argument("--public-key", type=Path, help="the signer's Ed25519 public key (PEM)")
    args = parser.parse_args()
    if not args.pack.is_dir():
        print(f"{args.pack} is not a pack: not a directory")
        return 2
    if args.key_id is not None and not args.key_id.strip():
        print("--key-id is empty: give the signer's published key id")
        return 2
    if args.public_key is not None and not args.public_key.is_file():
        print(f"--public-key {args.public_key}: no such file")
        return 2
    key_id = args.key_id.strip().lower() if args.key_id else None  # printed as lower-case hex
    events: list[dict[str, Any]] = []
    try:
        problems, (manifest, public) = check_files(args.pack, key_id, args.public_key)
        if not problems:  # the files are what the manifest says: now read them
            with (args.pack / "events.jsonl").open(encoding="utf-8") as lines:
                events = [json.loads(line) for line in lines if line.strip()]
            problems = check_chain(events, manifest, public)
        if not problems:
            customers, problems = derive(events, instant(manifest.get("exported_at")))
            if "customers.csv" in manifest["files"]:
                problems += compare(customers, (args.pack / "customers.csv").read_text())
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as error:
        problems = [f"not a readable pack: {type(error).__name__}: {error}"]
    for problem in problems:
        print(problem)
    if not problems:
        print(f"verified: {len(events)} events; every customer's outcome follows from them")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
