"""A FastAPI seller protected by OKX's x402 middleware (okxweb3-app-x402[fastapi]), verifying and
settling through an HTTP facilitator; run by tests/interop_python.rs against pay402's facilitator.

Usage: fastapi_seller.py FACILITATOR_URL PAY_TO ASSET AMOUNT TOKEN_NAME TOKEN_VERSION [FACILITATOR_TOKEN]

Sells `GET /weather` for AMOUNT atomic units of the EIP-3009 token ASSET (EIP-712 domain
TOKEN_NAME / TOKEN_VERSION) on eip155:196, paid to PAY_TO. The middleware is the SDK's
`PaymentMiddlewareASGI` over an `x402ResourceServer` with the SDK's plain
`HTTPFacilitatorClient` (POST /verify, POST /settle, GET /supported under FACILITATOR_URL),
sending `Authorization: Bearer FACILITATOR_TOKEN` when given (through the SDK's auth provider).
Listens on a free 127.0.0.1 port and prints `listening on <URL of /weather>` first; runs until
killed.
"""

import asyncio
import socket
import sys

import uvicorn
from fastapi import FastAPI, Request
from x402 import x402ResourceServer
from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption, RouteConfig
from x402.http.facilitator_client_base import AuthHeaders
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.mechanisms.evm.exact import ExactEvmServerScheme
from x402.schemas import AssetAmount


class BearerAuth:
    """The SDK's AuthProvider protocol: the same bearer token on every facilitator endpoint."""

    def __init__(self, token: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}

    def get_auth_headers(self) -> AuthHeaders:
        return AuthHeaders(verify=self._headers, settle=self._headers, supported=self._headers)


def build_app(
    facilitator_url: str, pay_to: str, asset: str, amount: str, name: str, version: str, token: str = ""
) -> FastAPI:
    auth = BearerAuth(token) if token else None
    facilitator = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url, auth_provider=auth))
    server = x402ResourceServer(facilitator).register("eip155:196", ExactEvmServerScheme())
    routes = {
        "GET /weather": RouteConfig(
            accepts=PaymentOption(
                scheme="exact",
                pay_to=pay_to,
                price=AssetAmount(amount=amount, asset=asset, extra={"name": name, "version": version}),
                network="eip155:196",
            ),
            description="Today's weather",
            mime_type="application/json",
        )
    }
    app = FastAPI()
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.get("/weather")
    async def weather(request: Request) -> dict:
        payload = request.state.payment_payload
        return {"weather": "sunny", "paid_by": payload.payload["authorization"]["from"]}

    return app


async def main(args: list[str]) -> None:
    app = build_app(*args)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # Connections queue on the listening socket until uvicorn accepts them.
    print(f"listening on http://127.0.0.1:{port}/weather", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    if len(sys.argv) not in (7, 8):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1:]))
