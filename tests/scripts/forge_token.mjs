// Builds the tokens a real provider will not issue, for the tests that prove
// the service refuses them: signed with the local provider's own private keys
// but with bad claims, or with `alg: none`, or HS256 keyed with the provider's
// public key (the algorithm-confusion attack). Only node:crypto.
//
//   node tests/scripts/forge_token.mjs KEYS_FILE SPEC_JSON
//
// SPEC: { "alg": "RS256"|"ES256"|"EdDSA"|"HS256"|"none",
//         "kid": "…" (default: the first key of the alg's type; null: none),
//         "claims": { … },
//         "typ": "…" (the header's typ; default at+jwt; null: none),
//         "flip": true   (flip one bit of the signature) }
// Prints the token.
import { createHmac, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [keysFile, specJson] = process.argv.slice(2);
const spec = JSON.parse(specJson);
const { keys } = JSON.parse(readFileSync(keysFile, 'utf8'));
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

const kty = { RS256: 'RSA', HS256: 'RSA', ES256: 'EC', EdDSA: 'OKP', none: 'RSA' }[spec.alg];
if (!kty) throw new Error(`unknown alg ${spec.alg}`);
const jwk = keys.find((k) => k.kty === kty);
const header = { alg: spec.alg };
const typ = spec.typ === undefined ? 'at+jwt' : spec.typ;
if (typ !== null) header.typ = typ;
const kid = spec.kid === undefined ? jwk.kid : spec.kid;
if (kid !== null) header.kid = kid;
const input = `${b64(header)}.${b64(spec.claims)}`;

let signature;
if (spec.alg === 'none') {
  signature = Buffer.alloc(0);
} else if (spec.alg === 'HS256') {
  // The public key as a verifier that mixes up algorithms would hold it.
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  const pem = createPublicKey({ key: pub, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
  signature = createHmac('sha256', pem).update(input).digest();
} else {
  const key = createPrivateKey({ key: jwk, format: 'jwk' });
  signature =
    spec.alg === 'EdDSA'
      ? sign(null, Buffer.from(input), key)
      : sign('sha256', Buffer.from(input), spec.alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
}
if (spec.flip && signature.length > 0) signature[signature.length >> 1] ^= 0x01;
console.log(`${input}.${signature.toString('base64url')}`);
