"""Fixtures of the import tests: the official-code test images, written once per session."""
from __future__ import annotations

import pytest

from official_layout import write_test_images


@pytest.fixture(scope="session")
def official_images(tmp_path_factory):
    return write_test_images(tmp_path_factory.mktemp("official_images"))
