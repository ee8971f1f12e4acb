"""Check bookkeeping shared by the interop scripts (jwt_oidc.py, workload_api_client.py): each
check prints `ok NAME` or `FAIL NAME: DETAIL`, and a check that crashes is a failed check, not
a crashed run."""

import traceback

RESULTS = []


class Failed(Exception):
    """A check's expectation not met."""


def expect(cond, why):
    if not cond:
        raise Failed(why)


def check(name, fn, *args):
    try:
        fn(*args)
    except Failed as e:
        RESULTS.append(False)
        print(f"FAIL {name}: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - a crashed check is a failed check
        RESULTS.append(False)
        print(f"FAIL {name}: unexpected {''.join(traceback.format_exception_only(type(e), e)).strip()}", flush=True)
    else:
        RESULTS.append(True)
        print(f"ok {name}", flush=True)
