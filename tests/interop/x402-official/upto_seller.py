"""A FastAPI seller of the x402 `upto` scheme with the official x402 Python SDK (PyPI `x402`
2.25): its `PaymentMiddlewareASGI`, `x402ResourceServer`, `upto` server scheme and plain
`HTTPFacilitatorClient`; run by tests/interop_permit2.rs against pay402's embedded facilitator
served over HTTP (GET /supported, POST /verify, POST /settle under FACILITATOR_URL).

Usage: upto_seller.py FACILITATOR_URL PAY_TO ASSET MAX TOKEN_NAME TOKEN_VERSION

Sells `GET /summarize?words=N` on eip155:196 with scheme `upto`, a maximum of MAX atomic units of
ASSET (EIP-712 domain TOKEN_NAME / TOKEN_VERSION), paid to PAY_TO; the SDK fills
`extra.facilitatorAddress` from the facilitator's `/supported`. The handler charges 100 atomic
units per word with the SDK's `set_settlement_overrides` ({"amount": "<100 * N>"}). Listens on a
free 127.0.0.1 port and prints `listening on <URL of /summarize>` first; runs until killed.
"""

import asyncio
import socket
import sys

import uvicorn
from fastapi import FastAPI, Request, Response
from x402 import x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption, RouteConfig
from x402.http.middleware.fastapi import PaymentMiddlewareASGI, set_settlement_overrides
from x402.mechanisms.evm.upto.server import UptoEvmScheme
from x402.schemas import AssetAmount


def build_app(facilitator_url: str, pay_to: str, asset: str, maximum: str, name: str, version: str) -> FastAPI:
    facilitator = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url))
    server = x402ResourceServer(facilitator).register("eip155:196", UptoEvmScheme())
    routes = {
        "GET /summarize": RouteConfig(
            accepts=PaymentOption(
                scheme="upto",
                pay_to=pay_to,
                price=AssetAmount(amount=maximum, asset=asset, extra={"name": name, "version": version}),
                network="eip155:196",
            ),
            description="A summary, billed per word",
            mime_type="application/json",
        )
    }
    app = FastAPI()
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.get("/summarize")
    async def summarize(request: Request, response: Response, words: int = 0) -> dict:
        set_settlement_overrides(response, {"amount": str(100 * words)})
        return {"summary": "word " * words}

    return app


async def main(args: list[str]) -> None:
    app = build_app(*args)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}/summarize", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1:]))
