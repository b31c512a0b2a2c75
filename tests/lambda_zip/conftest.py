"""The zip's tests use the session fixtures of tests/conftest.py and the helpers of building.py."""

from .building import (  # noqa: F401  (imported by the tests as .conftest)
    BUILD_SH, REPO, TARGET_VERSION, ZIP_NAME, build, run_in_tree, unzip, zip_from,
)
