"""Backend tests need torch and transformers; the tiny-model fixtures live in tests/conftest.py."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
