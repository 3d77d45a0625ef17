"""schemathesis hooks for bench/schemathesis.sh (loaded through
SCHEMATHESIS_HOOKS).

The fuzzer authenticates with the bootstrap admin key and, left alone, soon
finds that key's id (GET /v1/keys lists it) and revokes, rolls, deactivates
or narrows it: every later request is then 401 and most of the run tests
nothing. `before_call` swaps the admin key's id, wherever a generated
request names it (path parameter `id`, query `id`), for a well-formed id
that does not exist. And it gives every generated `Idempotency-Key` a
fresh value: the fuzzer draws the same few values for unrelated requests,
which keyward rightly answers 422 `idempotency_key_reused` (its own tests
cover the header: crates/keyward/tests/api/idempotency.rs). Nothing else is
changed.
"""
import os
import uuid

import schemathesis

ADMIN_ID = os.environ.get("KW_ADMIN_KEY_ID", "")
DECOY = "key_" + "Z" * 16


@schemathesis.hook
def before_call(context, case, kwargs):
    # case.headers is a case-insensitive mapping (not a dict).
    headers = case.headers
    if headers is not None and "idempotency-key" in headers:
        headers["idempotency-key"] = str(uuid.uuid4())
    if not ADMIN_ID:
        return
    for params in (case.path_parameters, case.query):
        if isinstance(params, dict) and params.get("id") == ADMIN_ID:
            params["id"] = DECOY
