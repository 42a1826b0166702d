import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# real test data lives beside the checkout (../shared/data); users who clone the project do not have it
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED):
        pytest.skip('../shared/data not present')
    return SHARED
