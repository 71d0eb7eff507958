"""OKX's Python x402 client (okxweb3-app-x402) pays one x402 URL; run by tests/interop_python.rs.

Usage: x402_pay.py URL PRIVATE_KEY

Requests URL through the SDK's httpx transport (402 -> sign an EIP-3009 authorization offline ->
retry with PAYMENT-SIGNATURE) and prints one JSON object on stdout:
  payer             the signer's address
  status            the final HTTP status
  body              the final body (JSON if it parses, else text)
  paymentRequired   the 402 challenge as the SDK parsed it (null if it never paid)
  paymentPayload    the payment payload the SDK signed and sent (null if it never paid)
  paymentResponse   the PAYMENT-RESPONSE header, decoded by the SDK (null if none)
"""

import asyncio
import json
import sys

from eth_account import Account
from x402 import x402Client
from x402.http import decode_payment_response_header
from x402.http.clients.httpx import wrapHttpxWithPayment
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(url: str, key: str) -> dict:
    account = Account.from_key(key)
    created = []
    client = x402Client().on_after_payment_creation(created.append)
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:196")
    async with wrapHttpxWithPayment(client, timeout=30.0) as http:
        response = await http.get(url)
    settled = response.headers.get("PAYMENT-RESPONSE")
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return {
        "payer": account.address,
        "status": response.status_code,
        "body": body,
        "paymentRequired": dump(created[0].payment_required) if created else None,
        "paymentPayload": dump(created[0].payment_payload) if created else None,
        "paymentResponse": dump(decode_payment_response_header(settled)) if settled else None,
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
