"""The official x402 Python client (PyPI `x402` 2.25) pays one URL with the `payment-identifier`
extension, then resends the identical payment; run by tests/payment_identifier.rs.

Usage: pay_with_id.py URL PRIVATE_KEY PAYMENT_ID ASSET

Requests URL through the SDK's httpx transport (402 -> the SDK's own
`append_payment_identifier_to_extensions` adds PAYMENT_ID to the echoed extension -> sign an
EIP-3009 authorization offline -> retry with PAYMENT-SIGNATURE), then sends the same
PAYMENT-SIGNATURE again ("recovering a lost response"). Spend controls allow ASSET on eip155:196
up to 10000 atomic units per payment. Prints one JSON object:
  status, body, paymentResponse        the paid answer (PAYMENT-RESPONSE decoded by the SDK)
  paymentPayload                       the payload the SDK signed and sent
  resendStatus, resendBody, resendPaymentResponse   the answer to the identical resend
"""

import asyncio
import json
import sys

import httpx
from eth_account import Account
from x402 import x402Client
from x402.extensions.payment_identifier import append_payment_identifier_to_extensions
from x402.http import decode_payment_response_header, encode_payment_signature_header
from x402.http.clients.httpx import wrapHttpxWithPayment
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def body_of(response):
    try:
        return response.json()
    except ValueError:
        return response.text


def settlement_of(response):
    header = response.headers.get("PAYMENT-RESPONSE")
    return dump(decode_payment_response_header(header)) if header else None


async def main(url: str, key: str, payment_id: str, asset: str) -> dict:
    account = Account.from_key(key)
    created = []

    def add_id(ctx):
        extensions = ctx.payment_required.extensions
        if extensions is not None:
            append_payment_identifier_to_extensions(extensions, payment_id)

    client = (
        x402Client()
        .on_before_payment_creation(add_id)
        .on_after_payment_creation(created.append)
        .set_spend_controls(
            {"allowed_assets": [{"network": "eip155:196", "asset": asset, "max_amount_per_payment": "10000"}]}
        )
    )
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:196")
    async with wrapHttpxWithPayment(client, timeout=30.0) as http:
        response = await http.get(url)
    out = {
        "status": response.status_code,
        "body": body_of(response),
        "paymentResponse": settlement_of(response),
        "paymentPayload": dump(created[0].payment_payload) if created else None,
    }
    if created:
        header = encode_payment_signature_header(created[0].payment_payload)
        async with httpx.AsyncClient(timeout=30.0) as plain:
            resend = await plain.get(url, headers={"PAYMENT-SIGNATURE": header})
        out["resendStatus"] = resend.status_code
        out["resendBody"] = body_of(resend)
        out["resendPaymentResponse"] = settlement_of(resend)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
