import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# real clips and DAVIS frames for the tests that need them: a folder with videos/, davis-mini/, davis-mini-osvos/ and
# davis-mini-osvos.golden.json (the official evaluator's scores), by default data/ in the folder beside the checkout
# named shared; a clone without it skips those tests
DATA = os.environ.get('MOTIONMAE_TEST_DATA', os.path.join(os.path.dirname(ROOT), 'shared', 'data'))


@pytest.fixture
def shared_data():
    if not os.path.isdir(DATA):
        pytest.skip(f'real test data not found: no folder {DATA} (videos/, davis-mini/; set MOTIONMAE_TEST_DATA)')
    return DATA
