// The official Node x402 client (@x402/fetch + @x402/evm 2.27.0 with viem) pays one x402 URL;
// run by tests/interop_node.rs with NODE_PATH pointing at the installed node_modules
// (scripts/deps/41-node-peers.sh).
//
// Usage: node x402_fetch_pay.cjs URL PRIVATE_KEY SPEND_CONTROLS
//   SPEND_CONTROLS  "default": the client's built-in spend controls (only its known default
//                   assets; X Layer's USD₮0 is not among them)
//                   "allow:<network>:<asset>:<atomic cap>": the defaults plus that asset,
//                   capped per payment
//
// Prints one JSON object on stdout: payer, status, body, paymentRequired / paymentPayload (what
// the client parsed and signed; null if it never signed), paymentResponse (PAYMENT-RESPONSE
// decoded by @x402/fetch; null if none), error (the message if the client threw, else null).
"use strict";

const { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } = require("@x402/fetch");
const { ExactEvmScheme } = require("@x402/evm");
const { privateKeyToAccount } = require("viem/accounts");

function spendControls(spec) {
    if (spec === "default") return undefined;
    const m = /^allow:(eip155:\d+):(0x[0-9a-fA-F]{40}):(\d+)$/.exec(spec);
    if (!m) throw new Error(`bad SPEND_CONTROLS ${spec}`);
    return { allowedAssets: [{ network: m[1], asset: m[2], maxAmountPerPayment: m[3] }] };
}

async function main() {
    const [url, key, spec] = process.argv.slice(2);
    if (!url || !key || !spec) throw new Error("usage: x402_fetch_pay.cjs URL PRIVATE_KEY SPEND_CONTROLS");
    const account = privateKeyToAccount(key);
    const client = x402Client.fromConfig({
        schemes: [{ network: "eip155:196", client: new ExactEvmScheme(account) }],
        spendControls: spendControls(spec),
    });
    let created = null;
    client.onAfterPaymentCreation(async (ctx) => {
        created = ctx;
    });
    const result = { payer: account.address, status: null, body: null, paymentRequired: null, paymentPayload: null, paymentResponse: null, error: null };
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
    if (created) {
        result.paymentRequired = created.paymentRequired;
        result.paymentPayload = created.paymentPayload;
    }
    console.log(JSON.stringify(result));
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
