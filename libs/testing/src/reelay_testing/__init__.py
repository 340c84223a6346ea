"""Dev-only test support for Reelay: fakes of the ports (Fake*), real readers, bounded waits, topic reads.

Rule: nothing here imports `reelay_common.adapters`. A fake that shared code with the adapter it
imitates would pass a contract test on both sides even when that shared code is wrong
(tests/unit/test_test_support.py checks the rule).
"""
