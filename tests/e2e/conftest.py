from tests.integration.conftest import harness  # noqa: F401  (pytest fixture)
