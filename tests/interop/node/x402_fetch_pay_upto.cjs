// The official Node x402 client (@x402/fetch + @x402/evm 2.27.0 with viem) pays one URL whose 402
// offers `upto` and/or `exact` over Permit2; run by tests/x402_upto_interop.rs with NODE_PATH
// pointing at the installed node_modules (scripts/deps/41-node-peers.sh).
//
// Usage: node x402_fetch_pay_upto.cjs URL PRIVATE_KEY NETWORK:ASSET:CAP
//   Registers @x402/evm's own `upto` client scheme and its `exact` client scheme (which signs a
//   Permit2 PermitWitnessTransferFrom when the offer has extra.assetTransferMethod = "permit2"),
//   with spend controls allowing ASSET on NETWORK up to CAP atomic units per payment.
//
// Prints one JSON object on stdout: payer, status, body, paymentPayload (what the client signed;
// null if it never signed), paymentResponse (PAYMENT-RESPONSE decoded by @x402/fetch; null if
// none), error (the message if the client threw, else null).
"use strict";

const { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } = require("@x402/fetch");
const { ExactEvmScheme } = require("@x402/evm");
const { UptoEvmScheme } = require("@x402/evm/upto/client");
const { privateKeyToAccount } = require("viem/accounts");

async function main() {
    const [url, key, spec] = process.argv.slice(2);
    const m = /^(eip155:\d+):(0x[0-9a-fA-F]{40}):(\d+)$/.exec(spec || "");
    if (!url || !key || !m) throw new Error("usage: x402_fetch_pay_upto.cjs URL PRIVATE_KEY NETWORK:ASSET:CAP");
    const account = privateKeyToAccount(key);
    const client = x402Client.fromConfig({
        schemes: [
            { network: "eip155:196", client: new UptoEvmScheme(account) },
            { network: "eip155:196", client: new ExactEvmScheme(account) },
        ],
        spendControls: { allowedAssets: [{ network: m[1], asset: m[2], maxAmountPerPayment: m[3] }] },
    });
    let created = null;
    client.onAfterPaymentCreation(async (ctx) => {
        created = ctx;
    });
    const result = { payer: account.address, status: null, body: null, paymentPayload: null, paymentResponse: null, error: null };
    try {
        const response = await wrapFetchWithPayment(fetch, client)(url);
        result.status = response.status;
        const text = await response.text();
        try {
            result.body = JSON.parse(text);
        } catch {
            result.body = text;
        }
        const settled = response.headers.get("PAYMENT-RESPONSE");
        if (settled) result.paymentResponse = decodePaymentResponseHeader(settled);
    } catch (e) {
        result.error = e instanceof Error ? e.message : String(e);
    }
    if (created) result.paymentPayload = created.paymentPayload;
    console.log(JSON.stringify(result));
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
