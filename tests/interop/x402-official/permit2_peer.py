"""The official x402 Python SDK (PyPI `x402` 2.25) on Permit2 payments, for
tests/interop_permit2.rs: it verifies payloads pay402 signed and signs payloads pay402 verifies.

Usage:
  permit2_peer.py verify KIND REQUIREMENTS_JSON PAYLOAD_JSON FACILITATOR_ADDRESS
      Runs the SDK's own facilitator verification (`upto`: verify_upto_permit2 without the
      on-chain simulation; `exact`: exact.permit2_utils.verify_permit2) of the inner PAYLOAD
      against REQUIREMENTS. The chain is a stub answering what a chain would: the payer is an
      EOA (no code), the asset is a contract, the Permit2 allowance and the balance are ample.
      The signature check is the SDK's (typed data built by the SDK, ecrecover).
      Prints {"isValid", "invalidReason", "payer"}.
  permit2_peer.py sign KIND REQUIREMENTS_JSON PRIVATE_KEY
      Signs with the SDK's client (`upto`: UptoEvmScheme; `exact`: create_permit2_payload) and
      prints the inner payload ({permit2Authorization, signature}).
KIND is `upto` or `exact`.
"""

import json
import sys

from eth_account import Account
from x402.schemas import PaymentPayload, PaymentRequirements
from x402.mechanisms.evm.signers import EthAccountSigner

AMPLE = 10**30


class StubChain:
    """A FacilitatorEvmSigner whose chain reads are fixed answers (no RPC)."""

    def __init__(self, facilitator, asset):
        self.facilitator = facilitator
        self.asset = asset.lower()

    def get_addresses(self):
        return [self.facilitator]

    def get_code(self, address):
        return b"\x60\x00" if address.lower() == self.asset else b""

    def read_contract(self, address, abi, function_name, *args):
        if function_name in ("allowance", "balanceOf"):
            return AMPLE
        raise RuntimeError(f"unexpected read {function_name}")


def main():
    mode, kind = sys.argv[1], sys.argv[2]
    requirements = PaymentRequirements.model_validate(json.loads(sys.argv[3]))
    if mode == "verify":
        inner = json.loads(sys.argv[4])
        chain = StubChain(sys.argv[5], requirements.asset)
        payload = PaymentPayload.model_validate(
            {"x402Version": 2, "payload": inner, "accepted": requirements.model_dump(mode="json", by_alias=True)}
        )
        if kind == "upto":
            from x402.mechanisms.evm.upto.permit2_utils import verify_upto_permit2

            result = verify_upto_permit2(chain, payload, requirements, None, simulate=False)
        else:
            from x402.mechanisms.evm.exact.permit2_utils import verify_permit2

            result = verify_permit2(chain, payload, requirements, None)
        print(json.dumps({"isValid": result.is_valid, "invalidReason": result.invalid_reason, "payer": result.payer}))
    elif mode == "sign":
        signer = EthAccountSigner(Account.from_key(sys.argv[4]))
        if kind == "upto":
            from x402.mechanisms.evm.upto.client import UptoEvmScheme

            inner = UptoEvmScheme(signer).create_payment_payload(requirements)
        else:
            from x402.mechanisms.evm.exact.permit2_utils import create_permit2_payload

            inner = create_permit2_payload(signer, requirements)
        print(json.dumps(inner))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
