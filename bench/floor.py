"""The floor: the same API calls as the pipeline makes, sent by a bare ``requests`` loop.

Same bodies as the worker sends (one ``PUT /v2/coupon/redeem`` per order with the bill's k coupons,
one ``PUT /v2/points/updateRedemption`` per order), same authentication header, against a fresh
sandbox state holding the same redemptions. No broker, no database, no rate limiter, no audit:
what is left is the cost of HTTP and of the sandbox. Bodies are encoded before the clock starts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from typing import Any

import requests

from bench import infra
from bench.load import Scenario, register_with_sandbox, scenario


def _headers() -> dict[str, str]:
    digest = hashlib.md5(infra.PASSWORD.encode()).hexdigest()
    token = base64.b64encode(f"{infra.USERNAME}:{digest}".encode()).decode()
    return {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Basic {token}",
    }


def calls_of(traffic: Scenario) -> list[tuple[str, bytes]]:
    """(path, body) for every call the worker makes for ``traffic``, in the worker's order."""
    coupons: dict[str, list[dict[str, Any]]] = {}
    points: dict[str, dict[str, Any]] = {}
    bills: dict[str, dict[str, Any]] = {}
    for event in traffic.events:
        order_ref = event["order_ref"]
        if event["type"] == "coupon.redeemed":
            coupons.setdefault(order_ref, []).append(event)
        elif event["type"] == "points.redeemed":
            points[order_ref] = event
        elif event["type"] == "transaction.completed":
            bills[order_ref] = event
    calls: list[tuple[str, bytes]] = []
    for order_ref, bill in bills.items():
        customer = bill["customer"]
        if order_ref in coupons:
            body = {
                "redemptions": [
                    {
                        "redemptionId": c["redemption_id"],
                        "billAmount": float(bill["bill_amount"]),
                        "transactionNumber": bill["bill_number"],
                        "billId": bill["bill_id"],
                        "customFields": bill["custom_fields"],
                    }
                    for c in coupons[order_ref]
                ],
                "user": {customer["identifier_type"]: customer["identifier_value"]},
            }
            calls.append(("/v2/coupon/redeem", json.dumps(body, separators=(",", ":")).encode()))
        if order_ref in points:
            body = {
                "redemptionId": points[order_ref]["redemption_id"],
                "billNumber": bill["bill_number"],
                "billId": bill["bill_id"],
                "customFields": bill["custom_fields"],
                "entity": {
                    "type": "CUSTOMER",
                    "identifierType": customer["identifier_type"],
                    "identifierValue": customer["identifier_value"],
                },
            }
            calls.append(
                ("/v2/points/updateRedemption", json.dumps(body, separators=(",", ":")).encode())
            )
    return calls


def _loop(base_url: str, calls: list[tuple[str, bytes]], failures: list[int]) -> None:
    headers = _headers()
    with requests.Session() as http:
        for path, body in calls:
            answer = http.put(base_url + path, data=body, headers=headers, timeout=10)
            if answer.status_code != 200:
                failures.append(answer.status_code)


def measure(sandbox: infra.SandboxProcess, traffic: Scenario, threads: int) -> dict[str, Any]:
    """Send every call of ``traffic`` with ``threads`` sessions (orders split evenly)."""
    sandbox.reset(rate_limit_per_minute=0)
    register_with_sandbox(traffic, sandbox.url)
    calls = calls_of(traffic)
    # Whole orders per thread (a coupon call and its points call stay together and in order).
    per_order = [calls[i : i + 2] for i in range(0, len(calls), 2)]
    slices = [[c for order in per_order[n::threads] for c in order] for n in range(threads)]
    failures: list[int] = []
    workers = [
        threading.Thread(target=_loop, args=(sandbox.url, part, failures), daemon=True)
        for part in slices
    ]
    sandbox_cpu_before = sandbox.cpu_seconds()
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    seconds = time.perf_counter() - started
    if any(worker.is_alive() for worker in workers):
        raise TimeoutError("the floor loop did not finish within 600 s")
    stats = sandbox.stats()
    by_status = stats.get("by_status", {})
    # Check that the calls did what the pipeline's do: sampled items were updated once.
    step_c, step_p = max(1, len(traffic.coupons) // 20), max(1, len(traffic.points) // 20)
    updated = [
        sandbox.admin("GET", f"coupons/{c['redemption_id']}").get("update_count")
        for c in traffic.coupons[::step_c]
    ] + [
        sandbox.admin("GET", f"points/{p['redemption_id']}").get("update_count")
        for p in traffic.points[::step_p]
    ]
    return {
        "threads": threads,
        "calls": len(calls),
        "seconds": round(seconds, 3),
        "calls_per_s": round(len(calls) / seconds, 1),
        "items_per_s": round(traffic.items / seconds, 1),
        "failures": len(failures),
        "sandbox_by_status": by_status,
        "sandbox_cpu_s": round(sandbox.cpu_seconds() - sandbox_cpu_before, 1),
        "sampled_items_updated_once": all(count == 1 for count in updated),
    }


def run(
    sandbox: infra.SandboxProcess, *, orders: int, coupons_per_bill: int, threads: list[int]
) -> dict[str, Any]:
    traffic = scenario(orders, coupons_per_bill=coupons_per_bill, prefix="bench", seed=11)
    runs = [measure(sandbox, traffic, n) for n in threads]
    best = max(runs, key=lambda r: r["items_per_s"])
    return {
        "orders": orders,
        "items": traffic.items,
        "runs": runs,
        "best_threads": best["threads"],
        "items_per_s": best["items_per_s"],
        "calls_per_s": best["calls_per_s"],
    }
