// Compiles Solidity sources with an npm `solc` (solc-js) and writes, for each requested
// contract, its ABI and creation / runtime bytecode as JSON (stable key order, one trailing
// newline), so the output can be committed and reproduced byte for byte.
//
// Usage: node scripts/solc-compile.js SOLC_MODULE_DIR SETTINGS_JSON OUT_JSON ROOT SOURCE... -- CONTRACT...
//   SOLC_MODULE_DIR  the installed npm package directory (node_modules/solc), pinned by its caller
//   SETTINGS_JSON    solc standard-JSON `settings` (optimizer, viaIR, metadata, ...), as a string
//   ROOT             directory the source names are relative to; imports resolve against it, and
//                    `solmate/` resolves to ROOT/lib/solmate/ (Permit2's remapping)
//   CONTRACT         `source.sol:Name` to emit
// Exits non-zero on any compiler error or missing contract.
"use strict";
const fs = require("fs");
const path = require("path");

const args = process.argv.slice(2);
const sep = args.indexOf("--");
if (sep < 5) {
  console.error("usage: solc-compile.js SOLC_DIR SETTINGS OUT ROOT SOURCE... -- CONTRACT...");
  process.exit(2);
}
const [solcDir, settingsText, out, root] = args;
const sources = args.slice(4, sep);
const wanted = args.slice(sep + 1);
const solc = require(path.resolve(solcDir));

function resolve(name) {
  const relative = name.startsWith("solmate/") ? path.join("lib", name) : name;
  return path.join(root, relative);
}

const input = {
  language: "Solidity",
  sources: Object.fromEntries(sources.map((s) => [s, { content: fs.readFileSync(resolve(s), "utf8") }])),
  settings: Object.assign(JSON.parse(settingsText), {
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  }),
};
const findImports = (name) => {
  try {
    return { contents: fs.readFileSync(resolve(name), "utf8") };
  } catch (e) {
    return { error: `not found: ${name}` };
  }
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage || e.message);
  process.exit(1);
}
const result = { compiler: `solc ${solc.version()}`, settings: JSON.parse(settingsText), contracts: {} };
for (const id of wanted) {
  const [file, name] = id.split(":");
  const contract = ((output.contracts || {})[file] || {})[name];
  if (!contract) {
    console.error(`contract ${id} not in the compiler output`);
    process.exit(1);
  }
  result.contracts[name] = {
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
  };
}
fs.writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
