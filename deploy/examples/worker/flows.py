"""The module of an example worker image (deploy/examples/worker/Containerfile).

An order is priced, then a receipt is written. The compose file serves it with its `worker`
service, and the container tests run it end to end:

    conveyor run receipt --input '{"items": [{"sku": "tea", "qty": 2, "cents": 450}]}' --wait
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import workflow
from workers import task


class Item(BaseModel):
    sku: str
    qty: int
    cents: int


@task
def price(items: list[Item]) -> int:
    """Total in cents."""
    return sum(item.qty * item.cents for item in items)


@task
def receipt_line(total_cents: int, customer: str) -> str:
    return f"{customer}: {total_cents // 100}.{total_cents % 100:02d} EUR"


@workflow
def receipt(items: list[Item], customer: str = "guest") -> str:
    return receipt_line(price(items), customer)
