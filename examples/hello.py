"""The smallest useful workflow: greet someone, then shout it.

conveyor dev examples/hello.py --run hello --input '{"name": "Ada"}'
"""

from orchestrator import workflow
from workers import task


@task
def greet(name: str) -> str:
    return f"Hello, {name}!"


@task
async def shout(text: str) -> str:
    return text.upper()


@workflow
def hello(name: str = "world") -> str:
    return shout(greet(name))
