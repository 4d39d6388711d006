"""schemathesis hooks for .ci/schemathesis: keep the fuzzer's own credential alive.

The run is authenticated with one admin API key. schemathesis reads ids out of
responses (`GET /v1/admin/api-keys` lists that key) and sends them back, so it
finds `DELETE /v1/admin/api-keys/{its own id}` and would lock itself out
mid-run. That one request, and only that one, is sent for an id that does not
exist instead (404). Suspending, deleting or demoting its own member needs no
hook: an admin cannot do that to themselves (409 `self_action`).
"""

import os

import schemathesis

OWN_KEY_ID = os.environ["ST_OWN_KEY_ID"]
NO_SUCH_KEY = "0000000000000000"


def _is_own_key(value):
    # The server trims the id and takes it with or without the `gh_` prefix.
    text = str(value).strip()
    if text.startswith("gh_"):
        text = text[3:]
    return text == OWN_KEY_ID


@schemathesis.hook
def before_call(context, case, kwargs):
    if (
        case.method.upper() == "DELETE"
        and case.path == "/v1/admin/api-keys/{id}"
        and _is_own_key((case.path_parameters or {}).get("id", ""))
    ):
        case.path_parameters["id"] = NO_SUCH_KEY


# CPython 3.11 can raise "SystemError: AST constructor recursion depth mismatch"
# when hypothesis parses a module's source deep in the stack, only to write a
# strategy's repr; schemathesis then reports a runtime error for the operation.
# The repr is cosmetic, so a description that could not be made is "unknown".
try:
    from hypothesis.internal import lambda_sources as _lambda_sources

    _describe = _lambda_sources._lambda_description

    def _lambda_description_or_unknown(f, *args, **kwargs):
        try:
            return _describe(f, *args, **kwargs)
        except SystemError:
            return "lambda: <unknown>"

    _lambda_sources._lambda_description = _lambda_description_or_unknown
except (ImportError, AttributeError):
    pass
