"""`make chaos`: hundreds of uploads while the stack is killed under them; nothing may be lost or doubled.

The run starts its OWN Kafka and FerretDB (scripts/stack.py's test-infra specs, on ports of its own:
CHAOS_KAFKA_PORT=39092, CHAOS_KAFKA_CONTROLLER_PORT=39093, CHAOS_FERRETDB_PORT=37217), because it
kills them; then the TikTok sandbox, ingest, the uploader and the status-poller as real processes
(tests/e2e/stack.py) on the `local` blob store, and a stdlib HTTP server for the URL sources.

Then, seeded (`--seed`, printed; the same seed draws the same plan, the same kill and fault
schedule, though the machine's timing still varies):
- N uploads over M accounts (500 over 50; `--quick`: 50 over 10), direct posts of generated MP4s
  of mixed sizes, a few over 64 MB (TikTok's chunk rules: several 10 MB chunks), some streamed into
  ingest as files, the others as video URLs. Each request has its own request_id (its title on
  TikTok too) and is resent with the same id on a refused connection, a 5xx or a 429.
- The uploader, the status-poller and ingest SIGKILLed at random moments and restarted; the
  Kafka broker SIGKILLed once and restarted; FerretDB SIGKILLed once and restarted.
- The sandbox injecting chunk 5xx, responses dropped after the chunk was stored (and before),
  429 and 500 bursts on init, status, PUT, creator_info and the token endpoint, and access tokens
  that expire: the sandbox's tokens live 400 s (Reelay refreshes them 300 s early), and one account
  in five is registered with an expiry 2 h away, so its first token is refused by TikTok while
  Reelay still trusts it (the 401 path).

Afterwards, from the sandbox's own record (GET /sandbox/publishes) and Mongo (`uploads_in_flight`
+ `uploads`): every request terminal; none lost (no document, so never accepted or lost after,
or never terminal);
no duplicate publish (one request title published more than once, a chunk stored twice, a
published video whose bytes are not the source's); every history forward-only
(reelay_common.domain.states.can_transition); every dead letter on the `.dlq` topics explained
(it has a reason and names a request of this run that ended terminal); and, since every injected
fault is one to recover from, no upload failed or refused. One line on stdout:

    chaos: requests=500 terminal=500 lost=0 duplicates=0 backward=0 dlq=N ... seed=S wall=Ts

and the exit status is 1 when a count is wrong. Everything is bounded (`--budget`, 20 min by
default, 4 in `--quick`): the run stops by itself and cleans up its processes.

    uv run --no-sync python bench/chaos.py [--quick] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import http.server
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient
from reelay_common.domain.states import TERMINAL_STATES, UploadState, can_transition
from tiktok_sandbox.media import write_sample_mp4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.e2e
sys.path.insert(0, str(ROOT / "scripts"))  # reelay_dev
from reelay_dev import config as c  # noqa: E402
from reelay_dev.orchestrate import bring_down, bring_up, wipe_test_infra  # noqa: E402
from reelay_dev.procs import SystemProcessTable, running_pid  # noqa: E402

from tests.e2e.stack import Stack, running_stack  # noqa: E402

MB = 1000 * 1000
TERMINAL = {s.value for s in TERMINAL_STATES}
SERVICES = ("uploader", "status-poller", "ingest")
TOKEN_TTL_SECONDS = 400  # the sandbox's access tokens; Reelay refreshes 300 s before expiry


def say(line: str) -> None:
    """Progress on stderr (stdout carries the summary line only)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Profile:
    """How big a run is: `full` is the issue's, `quick` a few minutes' try."""

    uploads: int
    accounts: int
    small_files: int
    large_files: int
    large_share: float
    submit_seconds: float  # submissions are spread over this long
    chaos_seconds: float  # kills and infra restarts happen in this window
    kill_every: tuple[float, float]  # seconds between service kills
    budget_seconds: float  # the whole run, setup to verdict


FULL = Profile(500, 50, 40, 3, 0.04, 300, 420, (15, 40), 1200)
QUICK = Profile(50, 10, 12, 2, 0.06, 60, 120, (10, 25), 300)


@dataclass
class Video:
    path: Path
    size: int
    sha256: str


@dataclass
class Planned:
    """One request of the run, drawn from the seed."""

    request_id: str
    account: int
    kind: str  # "file" (streamed into ingest) or "url"
    video: Video
    start_at: float  # seconds after the submissions begin
    accepted: bool = False
    outcome: str = ""  # "" while unsent; "accepted", or why not
    attempts: int = 0


@dataclass
class Chaos:
    """What was done to the stack, for the summary."""

    kills: Counter[str] = field(default_factory=Counter)
    kafka_restarts: int = 0
    mongo_restarts: int = 0
    fault_sets: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # what the sandbox injected, by kind
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the infrastructure it kills


class OwnInfra:
    """Kafka and FerretDB of this run, started and stopped as scripts/stack.py test-infra does."""

    def __init__(self, base: Path) -> None:
        env = dict(os.environ)
        env["TEST_KAFKA_PORT"] = os.environ.get("CHAOS_KAFKA_PORT", "39092")
        env["TEST_KAFKA_CONTROLLER_PORT"] = os.environ.get("CHAOS_KAFKA_CONTROLLER_PORT", "39093")
        env["TEST_FERRETDB_PORT"] = os.environ.get("CHAOS_FERRETDB_PORT", "37217")
        self.cfg = c.StackConfig.for_tests(ROOT, base, env, python=sys.executable)
        self.table = SystemProcessTable()
        self.kafka = c.kafka_spec(self.cfg)
        self.mongo = c.ferretdb_spec(self.cfg)

    async def up(self) -> None:
        wipe_test_infra(self.cfg, self.table, say)
        await bring_up(self.cfg, [[self.kafka, self.mongo]], self.table, say)

    def down(self) -> None:
        bring_down(self.cfg, [[self.kafka, self.mongo]], self.table, say)

    async def restart(self, spec: c.ProcessSpec, outage_seconds: float) -> None:
        """SIGKILL the server (no clean shutdown), leave it down a while, start it on its data."""
        pid = running_pid(self.cfg, spec, self.table)
        if pid is None:
            raise RuntimeError(f"{spec.name} is not running")
        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await asyncio.to_thread(os.waitpid, pid, 0)  # our child: reap it
        say(f"chaos: {spec.name} SIGKILLed (pid {pid}); down for {outage_seconds:.0f}s")
        await asyncio.sleep(outage_seconds)
        await bring_up(self.cfg, [[spec]], self.table, say)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.cfg.kafka_bootstrap_servers

    @property
    def mongodb_uri(self) -> str:
        return self.cfg.mongodb_uri


# ------------------------------------------------------------------ videos and the URL source


def make_videos(rng: random.Random, directory: Path, profile: Profile) -> tuple[list[Video], list[Video]]:
    """Small single-chunk videos (0.2..8 MB) and a few over 64 MB (6..8 chunks of 10 MB)."""
    directory.mkdir(parents=True, exist_ok=True)

    def one(name: str, size: int) -> Video:
        path = write_sample_mp4(directory / name, size, seed=rng.randrange(1 << 30))
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for piece in iter(functools.partial(f.read, 1 << 20), b""):
                digest.update(piece)
        return Video(path, size, digest.hexdigest())

    small = [one(f"small-{i}.mp4", rng.randrange(200_000, 8 * MB)) for i in range(profile.small_files)]
    large = [one(f"large-{i}.mp4", rng.randrange(66 * MB, 80 * MB)) for i in range(profile.large_files)]
    return small, large


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A stdlib HTTP server over `directory` on 127.0.0.1 (the URL sources); its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a reader killed mid-download (the uploader, SIGKILLed) is the point, not an error

    handler = functools.partial(Quiet, directory=str(directory))
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def plan(
    rng: random.Random, seed: int, profile: Profile, small: list[Video], large: list[Video]
) -> list[Planned]:
    """Every request of the run: account, source kind, video and when it is sent."""
    out = []
    for i in range(profile.uploads):
        video = rng.choice(large) if rng.random() < profile.large_share else rng.choice(small)
        out.append(
            Planned(
                request_id=f"chaos-{seed}-{i:04d}",
                account=i % profile.accounts,
                kind="file" if rng.random() < 0.6 else "url",
                video=video,
                start_at=rng.uniform(0, profile.submit_seconds),
            )
        )
    return sorted(out, key=lambda p: p.start_at)


# ------------------------------------------------------------------ accounts and submissions


async def connect_accounts(http: httpx.AsyncClient, stack: Stack, profile: Profile, seed: int) -> list[str]:
    """Sandbox users with tokens registered in ingest; one in five told its token lives 2 h (a lie)."""
    accounts = []
    for i in range(profile.accounts):
        username = f"chaos-{seed}-{i:02d}"
        resp = await http.post(f"{stack.sandbox_url}/sandbox/users", json={"username": username})
        resp.raise_for_status()
        open_id = resp.json()["open_id"]
        resp = await http.post(f"{stack.sandbox_url}/sandbox/users/{open_id}/tokens")
        resp.raise_for_status()
        tokens = resp.json()
        account_id = f"acct-{username}"
        resp = await http.post(
            f"{stack.ingest_url}/v1/accounts",
            headers=stack.headers,
            json={
                "account_id": account_id,
                "open_id": open_id,
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "expires_in": 7200 if i % 5 == 4 else tokens["expires_in"],
                "refresh_expires_in": tokens["refresh_expires_in"],
                "scope": tokens["scope"],
            },
        )
        if resp.status_code != 201:
            raise RuntimeError(f"registering {account_id}: {resp.status_code} {resp.text}")
        accounts.append(account_id)
    return accounts


async def submit(
    http: httpx.AsyncClient, stack: Stack, req: Planned, account_id: str, source_url: str, deadline: float
) -> None:
    """Send one request until ingest accepts it (202) or refuses it for good; the same request_id
    every time, so a resend after a dropped answer is a replay, never a second upload."""
    post_info = {"privacy_level": "SELF_ONLY", "title": req.request_id}
    delay = 0.5
    while time.monotonic() < deadline:
        req.attempts += 1
        try:
            if req.kind == "file":
                with req.video.path.open("rb") as f:
                    resp = await http.post(
                        f"{stack.ingest_url}/v1/uploads",
                        headers=stack.headers,
                        data={
                            "account_id": account_id,
                            "mode": "direct",
                            "request_id": req.request_id,
                            "post_info": json.dumps(post_info),
                        },
                        files={"file": (req.video.path.name, f, "video/mp4")},
                    )
            else:
                resp = await http.post(
                    f"{stack.ingest_url}/v1/uploads",
                    headers=stack.headers,
                    json={
                        "account_id": account_id,
                        "mode": "direct",
                        "request_id": req.request_id,
                        "video_url": f"{source_url}/{req.video.path.name}",
                        "post_info": post_info,
                    },
                )
        except httpx.HTTPError:
            resp = None
        if resp is not None and resp.status_code == 202:
            req.accepted, req.outcome = True, "accepted"
            return
        if resp is not None and resp.status_code < 500 and resp.status_code not in (408, 429):
            req.outcome = f"refused {resp.status_code} {resp.text[:200]}"
            say(f"submit: {req.request_id} {req.outcome}")
            return
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 5.0)
    req.outcome = "gave up (ingest never accepted it before the deadline)"


async def submit_all(
    http: httpx.AsyncClient,
    stack: Stack,
    requests: list[Planned],
    accounts: list[str],
    source_url: str,
    deadline: float,
) -> None:
    began = time.monotonic()

    async def one(req: Planned) -> None:
        await asyncio.sleep(max(0.0, began + req.start_at - time.monotonic()))
        await submit(http, stack, req, accounts[req.account], source_url, deadline)

    await asyncio.gather(*(one(r) for r in requests))
    say(f"submit: {sum(r.accepted for r in requests)}/{len(requests)} accepted")


# ------------------------------------------------------------------ the chaos itself


def fault_config(rng: random.Random) -> dict[str, Any]:
    """One standing fault configuration of the sandbox: chunk faults at some rate, plus bursts."""
    config: dict[str, Any] = {
        "seed": rng.randrange(1 << 30),
        "put_error_rate": rng.choice([0.0, 0.03, 0.06]),
        "put_drop_after_store_rate": rng.choice([0.02, 0.05, 0.08]),
        "put_drop_before_store_rate": rng.choice([0.0, 0.02]),
    }
    if rng.random() < 0.5:
        config["rate_limit_burst"] = {
            ep: rng.randrange(2, 8) for ep in ("video_init", "status_fetch", "upload", "creator_info")
        }
    if rng.random() < 0.4:
        config["error_burst"] = {
            ep: rng.randrange(1, 5) for ep in ("video_init", "status_fetch", "oauth_token")
        }
    return config


async def inject_faults(
    http: httpx.AsyncClient, stack: Stack, rng: random.Random, until: float, chaos: Chaos
) -> None:
    """A new sandbox fault configuration every 10..30 s until `until`; then none."""

    async def tally() -> None:  # each new configuration restarts the sandbox's count: keep it first
        stats = (await http.get(f"{stack.sandbox_url}/sandbox/stats")).json()
        chaos.faults.update(stats.get("faults_injected") or {})

    while time.monotonic() < until:
        config = fault_config(rng)
        await tally()
        resp = await http.put(f"{stack.sandbox_url}/sandbox/faults", json=config)
        if resp.status_code != 200:
            chaos.errors.append(f"PUT /sandbox/faults: {resp.status_code} {resp.text}")
        chaos.fault_sets += 1
        await asyncio.sleep(rng.uniform(10, 30))
    await tally()
    await http.put(f"{stack.sandbox_url}/sandbox/faults", json={})
    say("chaos: sandbox faults off")


async def kill_and_restart(stack: Stack, name: str, rng: random.Random, chaos: Chaos) -> None:
    await asyncio.to_thread(stack.kill, name, signal.SIGKILL)
    chaos.kills[name] += 1
    await asyncio.sleep(rng.uniform(0.0, 4.0))
    for attempt in range(5):
        try:
            await asyncio.to_thread(stack.start, name)
            return
        except RuntimeError as exc:  # e.g. the broker still coming back: try again
            say(f"chaos: {name} restart {attempt + 1} failed: {str(exc)[:300]}")
            await asyncio.sleep(5)
    chaos.errors.append(f"{name} could not be restarted")


async def wreak(stack: Stack, infra: OwnInfra, rng: random.Random, profile: Profile, chaos: Chaos) -> None:
    """Service kills at random moments through the window; Kafka once, FerretDB once, each at a
    random moment (one event at a time, so a service is never started with its broker down)."""
    began = time.monotonic()
    window = profile.chaos_seconds
    kafka_at = began + rng.uniform(0.2, 0.45) * window
    mongo_at = began + rng.uniform(0.55, 0.8) * window
    next_kill = began + rng.uniform(*profile.kill_every)
    while True:
        now = time.monotonic()
        if now >= began + window and chaos.kafka_restarts and chaos.mongo_restarts:
            break
        if chaos.kafka_restarts == 0 and now >= kafka_at:
            await infra.restart(infra.kafka, rng.uniform(8, 15))
            chaos.kafka_restarts += 1
        elif chaos.mongo_restarts == 0 and now >= mongo_at:
            await infra.restart(infra.mongo, rng.uniform(10, 20))
            chaos.mongo_restarts += 1
        elif now >= next_kill:
            name = rng.choice(SERVICES)
            say(f"chaos: SIGKILL {name}")
            await kill_and_restart(stack, name, rng, chaos)
            next_kill = time.monotonic() + rng.uniform(*profile.kill_every)
        await asyncio.sleep(0.5)
    say(f"chaos: done ({dict(chaos.kills)} kills, Kafka and FerretDB restarted once each)")


# ------------------------------------------------------------------ the verdict


async def read_uploads(mongodb_uri: str, database: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """This run's upload documents, in flight or archived (the archived copy wins: it is the later)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000)
    try:
        db = client[database]
        docs: dict[str, dict[str, Any]] = {}
        for name in ("uploads_in_flight", "uploads"):
            async for doc in db[name].find({}, {"state": 1, "history": 1, "account_id": 1}):
                if doc["_id"] in ids:
                    docs[doc["_id"]] = doc
        return docs
    finally:
        await client.close()


async def wait_terminal(infra: OwnInfra, database: str, ids: set[str], deadline: float) -> None:
    """Until every accepted request is terminal in Mongo, or the deadline."""
    last = -1
    while time.monotonic() < deadline:
        try:
            docs = await read_uploads(infra.mongodb_uri, database, ids)
        except Exception as exc:  # a read during an outage: try again
            say(f"wait: Mongo read failed: {exc}")
            await asyncio.sleep(5)
            continue
        done = sum(1 for d in docs.values() if d.get("state") in TERMINAL)
        if done != last:
            states = Counter(d.get("state") for d in docs.values())
            say(f"wait: {done}/{len(ids)} terminal {dict(states)}")
            last = done
        if done == len(ids):
            return
        await asyncio.sleep(5)


def backward_histories(docs: dict[str, dict[str, Any]]) -> list[str]:
    """Request ids whose history takes a step can_transition forbids, or ends off its state."""
    bad = []
    for rid, doc in docs.items():
        states = [UploadState(h["state"]) for h in doc.get("history", [])]
        steps_ok = all(can_transition(a, b) for a, b in itertools.pairwise(states))
        if not steps_ok or not states or states[-1].value != doc.get("state"):
            bad.append(f"{rid}: {[s.value for s in states]} -> {doc.get('state')}")
    return bad


def duplicates(publishes: list[dict[str, Any]], by_id: dict[str, Planned]) -> tuple[list[str], Counter[str]]:
    """What TikTok holds more than once, or wrongly: a request published twice, a chunk stored
    twice, a published video whose bytes differ from the source, a publish of no request of ours."""
    problems = []
    complete: Counter[str] = Counter()
    inits: Counter[str] = Counter()
    for pub in publishes:
        title = (pub.get("post_info") or {}).get("title")
        if title not in by_id:
            problems.append(f"publish {pub['publish_id']} of no request of this run (title {title!r})")
            continue
        inits[title] += 1
        stored = [(ch["first"], ch["last"]) for ch in pub["chunks"] if ch["stored"]]
        if len(stored) != len(set(stored)):
            problems.append(f"{title}: a chunk stored twice in {pub['publish_id']}: {stored}")
        if pub["complete"]:
            complete[title] += 1
            if pub["sha256"] != by_id[title].video.sha256:
                problems.append(f"{title}: TikTok holds other bytes than the source ({pub['publish_id']})")
    problems += [f"{rid}: {n} complete TikTok publishes" for rid, n in complete.items() if n > 1]
    return problems, inits


async def read_dead_letters(bootstrap: str, topics: list[str]) -> list[dict[str, Any]]:
    """Every record on the `.dlq` topics of this run's topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    letters: list[dict[str, Any]] = []
    try:
        known = await consumer.topics()
        parts = [
            TopicPartition(f"{t}.dlq", p)
            for t in topics
            if f"{t}.dlq" in known
            for p in (consumer.partitions_for_topic(f"{t}.dlq") or set())
        ]
        if not parts:
            return letters
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while any((await consumer.position(tp)) < ends[tp] for tp in parts):
            batch = await consumer.getmany(timeout_ms=2000)
            for records in batch.values():
                for rec in records:
                    try:
                        letters.append({"dlq_topic": rec.topic, **json.loads(rec.value or b"{}")})
                    except ValueError:
                        letters.append({"dlq_topic": rec.topic, "reason": "", "error": "not JSON"})
    finally:
        await consumer.stop()
    return letters


def unexplained(letters: list[dict[str, Any]], docs: dict[str, dict[str, Any]]) -> list[str]:
    """A dead letter is explained when it says why (a reason) and names a request of this run that
    still ended terminal: the record was set aside, the upload was not lost with it."""
    out = []
    for letter in letters:
        rid = letter.get("request_id")
        doc = docs.get(rid) if isinstance(rid, str) else None
        if not letter.get("reason") or doc is None or doc.get("state") not in TERMINAL:
            out.append(
                f"{letter.get('dlq_topic')}: reason={letter.get('reason')!r} request_id={rid!r} "
                f"error={str(letter.get('error'))[:200]!r}"
            )
    return out


# ------------------------------------------------------------------ the run


def stack_env() -> dict[str, str]:
    """What the stack runs with beyond tests/e2e/stack.py's defaults."""
    return {
        "SANDBOX_ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL_SECONDS),
        "SANDBOX_PROCESSING_DELAY_SECONDS": "3",
        "REELAY_LOG_LEVEL": "info",
        "REELAY_TOPIC_PARTITIONS": "6",
        # FerretDB on SQLite has one writer (SQLITE_BUSY under load): fewer status polls than the
        # e2e stack's; settled uploads still archived at once, as there, since every update of
        # `uploads_in_flight` scans that collection on FerretDB (docs/design.md).
        "POLLER_MIN_INTERVAL_SECONDS": "2",
        "POLLER_MAX_INTERVAL_SECONDS": "10",
    }


async def run(args: argparse.Namespace) -> int:
    profile = QUICK if args.quick else FULL
    if args.uploads:
        profile = Profile(**{**profile.__dict__, "uploads": args.uploads})
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    started = time.monotonic()
    budget_end = started + (args.budget or profile.budget_seconds)
    say(
        f"chaos: seed={seed} uploads={profile.uploads} accounts={profile.accounts} (rerun with --seed {seed})"
    )
    rng = random.Random(seed)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="reelay-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"chaos: working in {work}")
    infra = OwnInfra(work / "infra")
    chaos = Chaos()
    try:
        await infra.up()
        small, large = await asyncio.to_thread(make_videos, rng, work / "videos", profile)
        requests = plan(rng, seed, profile, small, large)
        by_id = {r.request_id: r for r in requests}
        with (
            serving(work / "videos") as source_url,
            running_stack(
                kafka_bootstrap_servers=infra.kafka_bootstrap_servers,
                mongodb_uri=infra.mongodb_uri,
                workdir=work / "stack",
                blob_store="local",
                extra_env=stack_env(),
            ) as stack,
        ):
            say(f"chaos: stack up (logs in {work / 'stack'})")
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
                    accounts = await connect_accounts(http, stack, profile, seed)
                    # Leave the last third of the budget for draining and the verdict.
                    submit_deadline = started + 0.66 * (budget_end - started)
                    chaos_task = asyncio.create_task(wreak(stack, infra, rng, profile, chaos))
                    faults_task = asyncio.create_task(
                        inject_faults(
                            http,
                            stack,
                            random.Random(rng.random()),
                            time.monotonic() + profile.chaos_seconds,
                            chaos,
                        )
                    )
                    await submit_all(http, stack, requests, accounts, source_url, submit_deadline)
                    await asyncio.gather(chaos_task, faults_task)
                    accepted = {r.request_id for r in requests if r.accepted}
                    await wait_terminal(infra, stack.database, accepted, budget_end - 60)
                    docs = await read_uploads(infra.mongodb_uri, stack.database, set(by_id))
                    publishes = (await http.get(f"{stack.sandbox_url}/sandbox/publishes")).json()["publishes"]
                    stats = (await http.get(f"{stack.sandbox_url}/sandbox/stats")).json()
                    letters = await read_dead_letters(
                        infra.kafka_bootstrap_servers, list(stack.topics.values())
                    )
                    return verdict(requests, docs, publishes, stats, letters, chaos, seed, started, stack)
            finally:
                await asyncio.to_thread(stop_stack, stack)
    finally:
        infra.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"chaos: kept {work}")


def stop_stack(stack: Stack, grace_seconds: float = 45.0) -> None:
    """SIGTERM every service at once, SIGKILL what still runs after the grace: a loaded machine can
    keep a service past tests/e2e/stack.py's one-by-one 60 s wait, which must not leave it running."""
    alive = [s.process for s in stack.services.values() if s.process is not None and s.process.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in alive:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def verdict(
    requests: list[Planned],
    docs: dict[str, dict[str, Any]],
    publishes: list[dict[str, Any]],
    stats: dict[str, Any],
    letters: list[dict[str, Any]],
    chaos: Chaos,
    seed: int,
    started: float,
    stack: Stack,
) -> int:
    by_id = {r.request_id: r for r in requests}
    terminal = [rid for rid in by_id if docs.get(rid, {}).get("state") in TERMINAL]
    lost = [r.request_id for r in requests if r.request_id not in docs]
    stalled = [rid for rid, d in docs.items() if d.get("state") not in TERMINAL]
    dups, inits = duplicates(publishes, by_id)
    backward = backward_histories(docs)
    dlq_bad = unexplained(letters, docs)
    states = Counter(d.get("state") for d in docs.values())
    refused = [r for r in requests if not r.accepted]
    for title, lines in (
        ("never accepted", [f"{r.request_id}: {r.outcome}" for r in refused]),
        ("lost (no document)", lost),
        ("not terminal", [f"{rid}: {docs[rid].get('state')}" for rid in stalled]),
        ("duplicates", dups),
        ("backward histories", backward),
        ("unexplained dead letters", dlq_bad),
        ("dead letters", [f"{x.get('dlq_topic')}: {x.get('reason')} {x.get('request_id')}" for x in letters]),
        (
            "failed uploads",
            [
                f"{rid}: {d.get('history', [{}])[-1].get('detail')}"
                for rid, d in docs.items()
                if d.get("state") == "failed"
            ],
        ),
        ("errors of the harness", chaos.errors),
    ):
        if lines:
            say(f"{title} ({len(lines)}):")
            for line in lines[:30]:
                say(f"  {line}")
    say(f"sandbox: faults injected {dict(chaos.faults)}; responses by code {stats.get('violations')}")
    kills = "+".join(f"{chaos.kills[n]}" for n in SERVICES)
    extra_inits = sum(n - 1 for n in inits.values() if n > 1)
    line = (
        f"chaos: requests={len(requests)} terminal={len(terminal)} lost={len(lost) + len(stalled)} "
        f"duplicates={len(dups)} backward={len(backward)} dlq={len(letters)} "
        f"dlq_unexplained={len(dlq_bad)} published={states.get('published', 0)} "
        f"failed={states.get('failed', 0)} "
        f"unconfirmed={states.get('unconfirmed', 0)} stalled={len(stalled)} refused={len(refused)} "
        f"kills={kills} kafka_restarts={chaos.kafka_restarts} mongo_restarts={chaos.mongo_restarts} "
        f"faults={chaos.faults.total()} reinits={extra_inits} "
        f"seed={seed} wall={time.monotonic() - started:.0f}s"
    )
    print(line, flush=True)
    ok = (
        len(terminal) == len(requests)
        and not lost
        and not stalled
        and not dups
        and not backward
        and not dlq_bad
        # Every fault injected is one TikTok or the infrastructure recovers from: an upload that
        # still ends failed (or was refused) is one a user lost.
        and not states.get("failed")
        and not refused
        and not chaos.errors
        and chaos.kafka_restarts == 1
        and chaos.mongo_restarts == 1
    )
    if not ok:
        say(
            f"chaos: FAILED; the services' logs are in {stack.services['ingest'].log_path.parent} "
            "(--keep keeps them)"
        )
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"))
    p.add_argument("--seed", type=int, default=int(os.environ["SEED"]) if os.environ.get("SEED") else None)
    p.add_argument("--uploads", type=int, default=None, help="override the profile's number of uploads")
    p.add_argument("--budget", type=float, default=None, help="seconds the whole run may take")
    p.add_argument("--workdir", default=None, help="where data and logs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    args = p.parse_args()
    # `timeout` (make chaos) sends SIGTERM: treat it as Ctrl-C, which asyncio.run turns into a
    # cancellation, so the stack and the infrastructure are still stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
