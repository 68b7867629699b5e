from tests.api.support import api, harness  # noqa: F401  (pytest fixtures)
