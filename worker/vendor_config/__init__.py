"""Vendor redemption configurations (seed 004), kept as files under version control.

``recon vendor push DIR`` reads every ``DIR/*.json``, checks each file (every problem of a file
is reported at once), and sends only the configurations that changed since their last success.

File shape: the request body of ``PUT /api_gateway/rewards/core/v1/vendor/redemption/{id}/brand/
{brandId}`` as the page documents it, plus our addressing, which is not sent::

    {
      "id": 25772,                       # the vendor redemption id (positive integer, required)
      "brandId": 61,                     # optional: else --brand-id, else LOYALTY_BRAND_ID
      "name": "miles",
      "redemptionType": "MILES",         # one of the page's 15 types
      "vendorId": "124",                 # non-empty string
      "enabled": true,
      "responseKeys": ["voucher"],
      "actions": [{
        "name": "issue", "execOrder": 1, # integer, unique among the actions
        "apiType": "POST",               # GET, POST, PUT, PATCH or DELETE
        "apiUrl": "https://vendor.example/v1/issue",
        "apiBody": "{\\"mobile\\": \\"${mobile}\\", \\"ref\\": \\"rewardTransactionId\\"}",
        "apiHeaders": {"Authorization": "Basic ..."},   # never printed, logged or stored
        "contextKeys": {"voucher": "response.coupon.code"},  # keys name responseKeys
        "retryAction": false, "enabled": true, "actionId": 20811
      }]
    }

Keys the page does not document are refused, so a misspelt key does not vanish silently.
``apiBody`` / ``apiBodyField`` must be JSON once ``${...}``, ``customfield_<name>``,
``fulfillmentStatus`` and ``rewardTransactionId`` are filled (inside a JSON string or bare).

Pushing: 5016 records a ``succeeded`` outcome (kind ``vendor``, redemption_id = the id) and the
content hash; a refusal records ``failed`` with the platform's code; a transient failure
records ``gave_up`` and is sent again by the next push; refused credentials stop the push.
"""

from worker.vendor_config.files import InvalidFile, VendorConfig, load_directory, load_file
from worker.vendor_config.push import (
    MissingDigestKey,
    Planned,
    PushResult,
    content_digest,
    plan_push,
    push_config,
)
from worker.vendor_config.validate import Problem, check_document

__all__ = [
    "InvalidFile",
    "MissingDigestKey",
    "Planned",
    "Problem",
    "PushResult",
    "VendorConfig",
    "check_document",
    "content_digest",
    "load_directory",
    "load_file",
    "plan_push",
    "push_config",
]
