#!/usr/bin/env node
// Checks that our ERC-8004 registries expose every function and event of the official ones with identical
// signatures (arguments, return types, mutability, indexed flags). The official surface is declared in
// contracts/src/interfaces/IERC8004*.sol; when the reference ABIs of the official deployments are present
// (AGENTRIPE_ERC8004_ABIS, default ../shared/reference/erc8004), those declarations are checked against
// them as well. Run after `forge build`.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const referenceDir = process.env.AGENTRIPE_ERC8004_ABIS || path.join(root, '..', 'shared', 'reference', 'erc8004');
// The official registries are UUPS proxies; their upgrade and ownership machinery is not part of ERC-8004.
const PROXY_MACHINERY = new Set([
  'initialize', 'upgradeToAndCall', 'proxiableUUID', 'UPGRADE_INTERFACE_VERSION', 'owner', 'transferOwnership',
  'renounceOwnership', 'Initialized', 'OwnershipTransferred', 'Upgraded',
]);

const pairs = [
  { iface: 'IERC8004Identity', impl: 'IdentityRegistry', reference: 'IdentityRegistry.abi.json' },
  { iface: 'IERC8004Reputation', impl: 'ReputationRegistry', reference: 'ReputationRegistry.abi.json' },
];

function artifactAbi(name, file) {
  return JSON.parse(fs.readFileSync(path.join(root, 'out', file || `${name}.sol`, `${name}.json`), 'utf8')).abi;
}

function type(param) {
  if (!param.type.startsWith('tuple')) return param.type;
  return `(${param.components.map(type).join(',')})${param.type.slice(5)}`;
}

// One line per function or event, carrying everything a caller or a log decoder depends on.
function surface(abi) {
  const lines = new Map();
  for (const item of abi) {
    if (item.type === 'function') {
      const line = `function ${item.name}(${item.inputs.map(type)}) ${item.stateMutability} returns (${item.outputs.map(type)})`;
      lines.set(line, item.name);
    } else if (item.type === 'event') {
      const line = `event ${item.name}(${item.inputs.map((p) => type(p) + (p.indexed ? ' indexed' : ''))})${item.anonymous ? ' anonymous' : ''}`;
      lines.set(line, item.name);
    }
  }
  return lines;
}

function missing(expected, actual, skip = new Set()) {
  return [...expected].filter(([line, name]) => !skip.has(name) && !actual.has(line)).map(([line]) => line);
}

let failures = 0;
let checks = 0;
for (const { iface, impl, reference } of pairs) {
  const declared = surface(artifactAbi(iface, `${iface}.sol`));
  const implemented = surface(artifactAbi(impl));
  const gaps = missing(declared, implemented);
  checks += 1;
  if (gaps.length) {
    failures += 1;
    console.error(`${impl} lacks, or differs from, ${iface}:\n  ${gaps.join('\n  ')}`);
  }

  const referencePath = path.join(referenceDir, reference);
  if (fs.existsSync(referencePath)) {
    const official = surface(JSON.parse(fs.readFileSync(referencePath, 'utf8')));
    const undeclared = missing(official, declared, PROXY_MACHINERY);
    const extra = missing(declared, official);
    checks += 1;
    if (undeclared.length || extra.length) {
      failures += 1;
      if (undeclared.length) console.error(`${iface} misses from the official ABI:\n  ${undeclared.join('\n  ')}`);
      if (extra.length) console.error(`${iface} declares what the official ABI lacks:\n  ${extra.join('\n  ')}`);
    }
  } else {
    console.log(`note: ${referencePath} not found; checked ${impl} against ${iface} only`);
  }
}
console.log(`abi: ${checks - failures} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
