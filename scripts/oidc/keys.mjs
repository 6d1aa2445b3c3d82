// The local provider's signing keys: one private JWKS file (mode 0600).
//
//   node scripts/oidc/keys.mjs rotate FILE [RSA|EC|OKP]  # prints the new kid
//   node scripts/oidc/keys.mjs prune FILE                # keep the newest of each type
//
// The provider signs with the FIRST key of the wanted type and publishes all of
// them, so `rotate` puts the new key first and keeps the old ones after it:
// tokens signed before still verify until `prune` drops them. Either takes
// effect at the provider on SIGHUP (scripts/oidc.sh rotate does both).
// Only node:crypto here: this file must work before `npm ci` has run.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

// Both halves come back as JWK objects, encoded by the generation itself, and
// never as KeyObjects: Node 20 can deadlock when a KeyObject from
// generateKeyPairSync is exported while a garbage collection frees the job
// that made it (both take the key's one mutex, on the same thread: the main
// thread waits on it for ever, seen as a provider start that hung in 1 of
// ~300 starts on a loaded machine; `node` at 100 % of nothing, a futex wait).
const JWK = { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } };
const KINDS = {
  RSA: { alg: 'RS256', gen: () => generateKeyPairSync('rsa', { modulusLength: 2048, ...JWK }) },
  EC: { alg: 'ES256', gen: () => generateKeyPairSync('ec', { namedCurve: 'P-256', ...JWK }) },
  OKP: { alg: 'EdDSA', gen: () => generateKeyPairSync('ed25519', JWK) },
};

// RFC 7638 thumbprint (the members in lexicographic order), as oidc-provider
// computes a missing kid, so kids are stable and unique per key.
function thumbprint(jwk) {
  const members = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'] }[jwk.kty];
  const canonical = JSON.stringify(Object.fromEntries(members.map((m) => [m, jwk[m]])));
  return createHash('sha256').update(canonical).digest('base64url');
}

export function generateKey(kty) {
  const kind = KINDS[kty];
  if (!kind) throw new Error(`unknown key type ${kty} (RSA, EC or OKP)`);
  const jwk = kind.gen().privateKey;
  return { kid: thumbprint(jwk), alg: kind.alg, use: 'sig', ...jwk };
}

export function readKeys(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

// Write then rename: a provider reloading on SIGHUP never reads half a file.
export function writeKeys(file, jwks) {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export function loadOrCreate(file) {
  if (!existsSync(file)) writeKeys(file, { keys: Object.keys(KINDS).map(generateKey) });
  return readKeys(file);
}

export function rotate(file, kty = 'RSA') {
  const jwks = loadOrCreate(file);
  const key = generateKey(kty);
  writeKeys(file, { keys: [key, ...jwks.keys] });
  return key.kid;
}

export function prune(file) {
  const seen = new Set();
  const keys = readKeys(file).keys.filter((k) => !seen.has(k.kty) && seen.add(k.kty));
  writeKeys(file, { keys });
  return keys.map((k) => k.kid);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [command, file, kty] = process.argv.slice(2);
  if (command === 'rotate' && file) {
    console.log(rotate(file, kty));
  } else if (command === 'prune' && file) {
    console.log(prune(file).join('\n'));
  } else if (command === 'create' && file) {
    console.log(loadOrCreate(file).keys.map((k) => k.kid).join('\n'));
  } else {
    console.error('usage: keys.mjs rotate FILE [RSA|EC|OKP] | prune FILE | create FILE');
    process.exit(2);
  }
}
