"""Flow control: a customer's orders synced through an API that allows 5 calls a second.

    conveyor dev examples/flow_control.py --run sync_customer --input '{"customer": "acme"}'

- at most 2 runs per customer at a time (a third waits `queued`, with its place in line);
- `charge` at most once at a time per account, across every run and workflow;
- `push_order` at most 5 calls a second (the rest wait for a token, they never fail), and at
  most 3 of a run's orders in flight at a time;
- a run triggered with `--priority 9` (CLI) or `priority=9` (client) goes ahead of the queue.

While it runs, `conveyor status RUN_ID` says why a node waits, and the dashboard shows it.
"""

import time
from typing import Any

from orchestrator import workflow
from workers import task


@task(concurrency={"limit": 1, "key": "$.input.account"})
def charge(account: str, orders: list[int]) -> str:
    time.sleep(0.2)
    return f"charged {account} for {len(orders)} orders"


@task(rate_limit={"limit": 5, "per": "1s", "key": "$.input.api_key"})
def push_order(order: int, api_key: str) -> dict[str, Any]:
    return {"order": order, "sent_at": round(time.time(), 3)}


@workflow(concurrency={"limit": 2, "key": "$.input.customer"}, priority=5)
def sync_customer(
    customer: str = "acme",
    account: str = "acct-1",
    api_key: str = "key-1",
    orders: list[int] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],  # noqa: B006 (a spec default)
) -> dict[str, object]:
    receipt = charge(account, orders)
    pushed = push_order.map(orders, api_key=api_key, max_parallel=3)
    return {"customer": customer, "receipt": receipt, "pushed": pushed}
