"""A realistic request mix for wanwu: `make loadtest` runs it headless against a live service.

Mix (weights): single-image multipart 5, raw body 3, three images in one request 1, bad
input 1 (each bad request must get its documented status and JSON error code to count as a
success). A 503 with Retry-After is counted as a failure: it means the run exceeded capacity.
Each user first reads the served model from /v1/model, so that raw requests ask only for its
languages and at most its number of classes: the mix runs against any model.
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

from loadtest.corpus import corpus

IMAGES = corpus()
BAD = [
    ("empty body", b"", "image/jpeg", "", 400, "no_image"),
    ("text", b"just some text", "text/plain", "", 415, "unsupported_media_type"),
    ("truncated", IMAGES[0][1][:200], "image/jpeg", "", 400, "undecodable_image"),
    ("topk 0", IMAGES[0][1], "image/jpeg", "?topk=0", 422, "invalid_parameter"),
]


class ClassifyingUser(HttpUser):
    """A client that classifies photos with a short think time."""

    wait_time = between(0.05, 0.3)
    languages: list[str] = ["en"]
    topk = 1

    def on_start(self) -> None:
        model = self.client.get("/v1/model").json()
        self.languages, self.topk = model["languages"], min(5, model["classes"])

    def _check(self, response, status: int = 200, code: str | None = None) -> None:
        if response.status_code != status:
            response.failure(
                f"expected {status}, got {response.status_code}: {response.text[:200]}"
            )
        elif code is not None and response.json().get("error", {}).get("code") != code:
            response.failure(f"expected error code {code}: {response.text[:200]}")
        else:
            response.success()

    @task(5)
    def multipart_one(self) -> None:
        name, data, ctype = random.choice(IMAGES)
        with self.client.post(
            "/predict",
            files={"file": (name, data, ctype)},
            name="/predict [multipart]",
            catch_response=True,
        ) as r:
            self._check(r)

    @task(3)
    def raw_body(self) -> None:
        _, data, ctype = random.choice(IMAGES)
        lang = random.choice(self.languages)
        with self.client.post(
            f"/predict?lang={lang}&topk={self.topk}",
            data=data,
            headers={"Content-Type": ctype},
            name="/predict [raw]",
            catch_response=True,
        ) as r:
            self._check(r)

    @task(1)
    def several(self) -> None:
        files = [("file", (n, d, t)) for n, d, t in random.sample(IMAGES, 3)]
        with self.client.post(
            "/predict", files=files, name="/predict [3 files]", catch_response=True
        ) as r:
            self._check(r)

    @task(1)
    def bad_input(self) -> None:
        label, data, ctype, query, status, code = random.choice(BAD)
        with self.client.post(
            f"/predict{query}",
            data=data,
            headers={"Content-Type": ctype},
            name=f"/predict [bad: {label}]",
            catch_response=True,
        ) as r:
            self._check(r, status, code)
