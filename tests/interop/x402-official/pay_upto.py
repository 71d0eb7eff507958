"""The official x402 Python client (PyPI `x402` 2.25) pays one URL whose 402 offers `upto`
and/or `exact` over Permit2; run by tests/x402_upto_interop.rs.

Usage: pay_upto.py URL PRIVATE_KEY ASSET CAP

Registers the SDK's own `UptoEvmClientScheme` and `ExactEvmClientScheme` (the latter signs a
Permit2 `PermitWitnessTransferFrom` when the offer has `extra.assetTransferMethod = "permit2"`)
for eip155:196, with spend controls allowing ASSET up to CAP atomic units per payment, and
requests URL through the SDK's httpx transport. Prints one JSON object: status, body,
paymentResponse (PAYMENT-RESPONSE decoded by the SDK), paymentPayload (what the SDK signed).
"""

import asyncio
import json
import sys

from eth_account import Account
from x402 import x402Client
from x402.http import decode_payment_response_header
from x402.http.clients.httpx import wrapHttpxWithPayment
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto import UptoEvmClientScheme


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(url: str, key: str, asset: str, cap: str) -> dict:
    signer = EthAccountSigner(Account.from_key(key))
    created = []
    client = (
        x402Client()
        .on_after_payment_creation(created.append)
        .set_spend_controls(
            {"allowed_assets": [{"network": "eip155:196", "asset": asset, "max_amount_per_payment": cap}]}
        )
        .register("eip155:196", UptoEvmClientScheme(signer))
        .register("eip155:196", ExactEvmClientScheme(signer))
    )
    async with wrapHttpxWithPayment(client, timeout=30.0) as http:
        response = await http.get(url)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    header = response.headers.get("PAYMENT-RESPONSE")
    return {
        "status": response.status_code,
        "body": body,
        "paymentResponse": dump(decode_payment_response_header(header)) if header else None,
        "paymentPayload": dump(created[0].payment_payload) if created else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5]))))
