"""The official x402 Python facilitator (PyPI `x402` 2.25: `UptoEvmFacilitatorScheme` and the
Permit2 path of `ExactEvmFacilitatorScheme`, over its `FacilitatorWeb3Signer`) verifies and settles
one payment on a chain; run by tests/x402_upto_interop.rs on anvil with payloads pay402 signed.

Usage: facilitate_upto.py RPC_URL FACILITATOR_KEY REQUEST_FILE

REQUEST_FILE (JSON): {"paymentPayload": …, "paymentRequirements": …, "settleAmount": "…" | null}.
Verifies with the requirements as given (amount = the authorised maximum for `upto`), then settles
with `amount` replaced by settleAmount when given (the resource server's actual charge). Prints one
JSON object: facilitatorAddress, supported (the facilitator's kinds), verify, settle.
"""

import asyncio
import json
import sys

from x402 import x402Facilitator
from x402.mechanisms.evm.exact import register_exact_evm_facilitator
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme
from x402.schemas import PaymentPayload, PaymentRequirements


def dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(rpc_url: str, key: str, request_file: str) -> dict:
    with open(request_file, encoding="utf-8") as f:
        request = json.load(f)
    signer = FacilitatorWeb3Signer(private_key=key, rpc_url=rpc_url)
    facilitator = x402Facilitator()
    facilitator.register(["eip155:196"], UptoEvmFacilitatorScheme(signer))
    register_exact_evm_facilitator(facilitator, signer, networks="eip155:196")
    payload = PaymentPayload.model_validate(request["paymentPayload"])
    requirements = PaymentRequirements.model_validate(request["paymentRequirements"])
    verified = await facilitator.verify(payload, requirements)
    out = {
        "facilitatorAddress": signer.address,
        "supported": dump(facilitator.get_supported()),
        "verify": dump(verified),
        "settle": None,
    }
    if verified.is_valid:
        settle_requirements = requirements
        if request.get("settleAmount") is not None:
            settle_requirements = requirements.model_copy(update={"amount": str(request["settleAmount"])})
        out["settle"] = dump(await facilitator.settle(payload, settle_requirements))
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))))
