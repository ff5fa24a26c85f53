"""A bounded load test on loopback: classify clients race adders and forgetters for a few seconds."""

from __future__ import annotations

import random
import threading
import time

import httpx

from procvision.memory import VisualMemory, read_audit
from procvision.serve import MemoryState, ServeConfig, create_app
from procvision.serve.live import serve_in_thread
from tests.serve.conftest import TOKEN, auth, query_png

SECONDS = 3.0
CLASSIFIERS = 8


def test_concurrent_classify_add_forget_lose_nothing(memdir) -> None:
    app = create_app(MemoryState(memdir), ServeConfig(token=TOKEN, max_wait_ms=5))
    initial = set(VisualMemory.load(memdir).ids.tolist())
    failures: list[str] = []
    reads: list[tuple[float, set[int]]] = []  # (request start, neighbour ids seen)
    forgets: list[tuple[float, list[int]]] = []  # (response time, removed ids)
    added: list[int] = []
    sent = {"classify": 0, "add": 0, "forget": 0, "forget_top": 0}
    lock = threading.Lock()
    with serve_in_thread(app) as url:
        stop = time.monotonic() + SECONDS

        def classifier(seed: int) -> None:
            rnd = random.Random(seed)
            with httpx.Client(base_url=url, timeout=60) as c:
                while time.monotonic() < stop:
                    name = rnd.choice(["red", "green", "blue"])
                    t0 = time.monotonic()
                    r = c.post(
                        "/classify?k=64",
                        files=[
                            ("files", ("q.png", query_png(name, rnd.randrange(1000)), "image/png"))
                        ],
                    )
                    with lock:
                        sent["classify"] += 1
                        if r.status_code != 200:
                            failures.append(f"classify {r.status_code} {r.text}")
                            continue
                        reads.append((t0, {n["id"] for n in r.json()["results"][0]["neighbours"]}))

        def adder() -> None:
            rnd = random.Random(1)
            with httpx.Client(base_url=url, timeout=60, headers=auth()) as c:
                while time.monotonic() < stop:
                    name = rnd.choice(["red", "green", "blue"])
                    r = c.post("/items", files=[("files", ("a.png", query_png(name, rnd.randrange(10**6)), "image/png"))],
                               data={"labels": [name]})  # fmt: skip
                    with lock:
                        sent["add"] += 1
                        if r.status_code != 200:
                            failures.append(f"add {r.status_code} {r.text}")
                        else:
                            added.extend(r.json()["ids"])

        def forgetter() -> None:
            rnd = random.Random(2)
            with httpx.Client(base_url=url, timeout=60, headers=auth()) as c:
                while time.monotonic() < stop:
                    ids = [i["id"] for i in c.get("/items?limit=1000").json()["items"]]
                    if len(ids) < 4:
                        time.sleep(0.01)
                        continue
                    # the highest id too, every other round: ids are never reused (issue 11)
                    pick = rnd.sample(ids, 2)
                    if sent["forget"] % 2 == 0 and max(ids) not in pick:
                        pick[0] = max(ids)
                    top = max(ids) in pick
                    r = c.post("/items/forget", json={"ids": pick, "reason": "load test"})
                    with lock:
                        sent["forget"] += 1
                        if r.status_code != 200:
                            failures.append(f"forget {r.status_code} {r.text}")
                        else:
                            forgets.append((time.monotonic(), r.json()["removed_ids"]))
                            sent["forget_top"] += top and max(ids) in r.json()["removed_ids"]

        threads = [threading.Thread(target=classifier, args=(s,)) for s in range(CLASSIFIERS)]
        threads += [threading.Thread(target=adder), threading.Thread(target=forgetter)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with httpx.Client(base_url=url) as c:
            final_health = c.get("/health").json()
            final_listed = {i["id"] for i in c.get("/items?limit=1000").json()["items"]}
    assert not failures, failures[:5]
    assert sent["classify"] == len(reads) >= CLASSIFIERS and sent["add"] == len(added) >= 1
    assert sent["forget"] == len(forgets) >= 1
    # ids are never reused, also after the highest id was forgotten
    assert len(set(added)) == len(added) and not set(added) & initial
    assert sent["forget_top"] >= 1  # some forgets took the highest id of the moment
    # every forget holds: no request that started after a forget answered sees a removed id
    for done, removed in forgets:
        for start, seen in reads:
            if start > done:
                assert not seen & set(removed), (removed, seen)
    # the audit log matches the final contents
    records = read_audit(memdir)
    removed_all = {i for r in records for i in r["removed_ids"]}
    assert removed_all == {i for _, ids in forgets for i in ids} and len(records) == len(forgets)
    final = VisualMemory.load(memdir)
    assert set(final.ids.tolist()) == (initial | set(added)) - removed_all == final_listed
    assert (
        final_health["count"] == len(final) and final_health["content_hash"] == final.content_hash()
    )
    print(f"load test: {sent} in {SECONDS} s; batches {final_health['batching']}")
