// Test double of a real OpenID provider for tenantry's integration tests: the npm package
// `oidc-provider` (9.13.3) run as one or more issuers on loopback, each on its own port, plus a
// control API under `/__test/` on the same port that changes clients, users and keys at runtime
// and makes the provider misbehave on purpose (so that the relying party's refusals can be tested).
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// prints one line on stdout once every issuer listens:
//   {"ready":true,"issuers":{"alpha":"http://127.0.0.1:PORT",...}}
// and logs to stderr only. It exits when stdin reaches EOF (the Rust test keeps a pipe open, so the
// provider dies with the test) and on SIGTERM/SIGINT. tests/common/oidc.rs starts it; by hand, keep
// stdin open: `sleep infinity | node tests/oidc/provider.mjs CONFIG.json` (not `< /dev/null`).
//
// Control API, on every issuer's own port (JSON in and out, no auth: a loopback test double):
//   PUT    /__test/clients/:client_id   client metadata → created or replaced, used from the next request
//   DELETE /__test/clients/:client_id   the client is gone
//   PUT    /__test/users/:sub           {"claims": {...}} → created or replaced
//   PUT    /__test/misbehave            {id_token_claims, id_token_signing, discovery_issuer,
//                                        authorization_response_iss, token_error} (all optional;
//                                        replaces the previous one; unknown fields are refused)
//   DELETE /__test/misbehave            normal again (GET shows the current one)
//   POST   /__test/keys                 {"action": "rotate" | "single-without-kid"} → {"jwks": ...}
//   GET    /__test/keys                 {"jwks": the JWKS served}
//   GET    /__test/last-authorization   parameters of the last authorization request, {} if none
//   GET    /__test/last-authorization-response   {"location": the last redirect to a redirect_uri}
//   GET    /__test/last-end-session     parameters the end-session endpoint last received
//   GET    /__test/token-requests       {"count", "last": {client_id, authenticated, grant_type,
//                                        status, error}}
//
// How the pieces fit:
// - Every issuer owns its state (clients, users, keys, an in-memory store for sessions, grants,
//   codes…) outside the `Provider` object. A key change builds a new `Provider` from that state
//   behind the same http server: sessions and codes survive because they live in the store, and
//   the cookie keys stay the same.
// - The harness owns the key set: `keys[0]` signs. oidc-provider gets the private keys (it signs
//   with the first one and verifies id_token_hint with any of them); the JWKS the issuer serves is
//   the harness's public view, which can hold a key without `kid` (oidc-provider itself always
//   assigns one). Whenever the served view and oidc-provider's own token would differ (a key
//   without kid, a misbehaviour), the harness re-signs the token endpoint's id_token.
// - A Koa middleware in front of oidc-provider's routes records requests and rewrites responses
//   (discovery issuer, JWKS, the authorization response redirect, the token response).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// stdout carries exactly one line (the ready line): oidc-provider writes its notices with
// console.info, so every console output goes to stderr.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const started = Date.now();
const log = (...args) => console.error(`[oidc-harness +${Date.now() - started}ms]`, ...args);

const MISBEHAVIOUR_FIELDS = new Set([
  'id_token_claims',
  'id_token_signing',
  'discovery_issuer',
  'authorization_response_iss',
  'token_error',
]);
const SIGNING_MODES = new Set(['none', 'bad-signature', 'unknown-key', 'hs256-public-key']);

// Models whose entries are indexed by grant (revoked together when a grant is revoked).
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

// ---------------------------------------------------------------------------------------------
// Storage

/** A Map with per-entry expiry; outlives the Provider objects built on it. */
class Store {
  #entries = new Map();

  get(key) {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    this.#entries.set(key, { value, expiresAt });
  }

  delete(key) {
    this.#entries.delete(key);
  }
}

/**
 * The oidc-provider adapter of one issuer: `Client` is read from the issuer's client map (so a
 * client changed through the control API is used at the very next request: oidc-provider builds
 * a new Client object whenever the metadata it finds differ), everything else lives in its store.
 */
function adapterFor(issuer) {
  return class HarnessAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      if (this.model === 'Client') {
        issuer.clients.set(id, structuredClone(payload));
        return;
      }
      const { store } = issuer;
      store.set(this.key(id), payload, expiresIn);
      if (this.model === 'Session' && payload.uid) {
        store.set(`sessionUid:${payload.uid}`, id, expiresIn);
      }
      if (payload.userCode) {
        store.set(`userCode:${payload.userCode}`, id, expiresIn);
      }
      if (GRANTABLE.has(this.model) && payload.grantId) {
        const grantKey = `grant:${payload.grantId}`;
        const members = store.get(grantKey) ?? new Set();
        members.add(this.key(id));
        store.set(grantKey, members);
      }
    }

    async find(id) {
      if (this.model === 'Client') {
        const metadata = issuer.clients.get(id);
        return metadata === undefined ? undefined : structuredClone(metadata);
      }
      return issuer.store.get(this.key(id));
    }

    async findByUid(uid) {
      const id = issuer.store.get(`sessionUid:${uid}`);
      return id === undefined ? undefined : this.find(id);
    }

    async findByUserCode(userCode) {
      const id = issuer.store.get(`userCode:${userCode}`);
      return id === undefined ? undefined : this.find(id);
    }

    async consume(id) {
      const payload = issuer.store.get(this.key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }

    async destroy(id) {
      if (this.model === 'Client') {
        issuer.clients.delete(id);
        return;
      }
      issuer.store.delete(this.key(id));
    }

    async revokeByGrantId(grantId) {
      const grantKey = `grant:${grantId}`;
      for (const key of issuer.store.get(grantKey) ?? []) {
        issuer.store.delete(key);
      }
      issuer.store.delete(grantKey);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Keys and JWTs

let keyCounter = 0;

/** A fresh RSA signing key; `kid` null means a key without `kid` in the served JWKS. */
function newKey(issuerName, { withKid = true } = {}) {
  keyCounter += 1;
  // Encoded by the key generation itself, then imported again: on Node 20, exporting a key
  // object that generateKeyPairSync returned can deadlock (a GC during the export runs the
  // finished generation job's destructor, which waits for the lock the export holds).
  const pair = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const privateKey = crypto.createPrivateKey(pair.privateKey);
  const publicKey = crypto.createPublicKey(pair.publicKey);
  const kid = withKid
    ? `${issuerName}-${keyCounter}-${crypto.randomBytes(4).toString('hex')}`
    : null;
  const jwk = privateKey.export({ format: 'jwk' });
  const privateJwk = { ...jwk, alg: 'RS256', use: 'sig', ...(kid ? { kid } : {}) };
  const publicJwk = {
    kty: 'RSA',
    use: 'sig',
    ...(kid ? { kid } : {}),
    alg: 'RS256',
    e: jwk.e,
    n: jwk.n,
  };
  return {
    kid,
    privateKey,
    publicKey,
    privateJwk,
    publicJwk,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }),
  };
}

const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function decodeJwt(jwt) {
  const [header, payload] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')),
  };
}

function rs256(header, payload, privateKey) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const signature = crypto.sign('sha256', Buffer.from(input), privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

/** Signs an id_token payload the way the issuer's key state and misbehaviour say. */
function signIdToken(issuer, originalHeader, payload, mode) {
  const active = issuer.keys[0];
  const header = { ...originalHeader, alg: 'RS256' };
  delete header.kid;
  if (active.kid) header.kid = active.kid;

  switch (mode) {
    case undefined:
    case null:
      return rs256(header, payload, active.privateKey);
    case 'none':
      return `${b64json({ alg: 'none' })}.${b64json(payload)}.`;
    case 'bad-signature': {
      const [h, p, s] = rs256(header, payload, active.privateKey).split('.');
      const signature = Buffer.from(s, 'base64url');
      for (let i = 0; i < 8; i += 1) signature[signature.length / 2 + i] ^= 0xa5;
      return `${h}.${p}.${signature.toString('base64url')}`;
    }
    case 'unknown-key':
      issuer.unknownKey ??= newKey(`${issuer.name}-unknown`);
      return rs256(header, payload, issuer.unknownKey.privateKey);
    case 'hs256-public-key': {
      const input = `${b64json({ ...header, alg: 'HS256' })}.${b64json(payload)}`;
      const mac = crypto.createHmac('sha256', active.publicPem).update(input).digest('base64url');
      return `${input}.${mac}`;
    }
    default:
      throw new Error(`unknown id_token_signing ${mode}`);
  }
}

/** The JWKS the issuer serves: the public half of the harness's keys, in order. */
function servedJwks(issuer) {
  return { keys: issuer.keys.map((key) => structuredClone(key.publicJwk)) };
}

// ---------------------------------------------------------------------------------------------
// HTML

const escapeHtml = (value) => String(value)
  .replaceAll('&', '&amp;')
  .replaceAll('<', '&lt;')
  .replaceAll('>', '&gt;')
  .replaceAll('"', '&quot;')
  .replaceAll("'", '&#39;');

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(issuer, uid, { clientId, error, login } = {}) {
  const value = login ?? issuer.userOrder[0] ?? '';
  return page(`Sign in to ${issuer.name}`, `${clientId ? `<p>for client <code id="client-id">${escapeHtml(clientId)}</code></p>\n` : ''}${error ? `<p id="error" class="error">${escapeHtml(error)}</p>\n` : ''}<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="login">User</label>
<input name="login" id="login" value="${escapeHtml(value)}">
<button id="sign-in" type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------------------------------------
// The Provider of one issuer

function buildProvider(issuer) {
  const configuration = {
    adapter: adapterFor(issuer),
    jwks: { keys: issuer.keys.map((key) => structuredClone(key.privateJwk)) },
    cookies: {
      keys: issuer.cookieKeys,
      names: {
        session: `${issuer.name}_session`,
        interaction: `${issuer.name}_interaction`,
        resume: `${issuer.name}_interaction_resume`,
      },
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    conformIdTokenClaims: false,
    // Fixed lifetimes (seconds); the defaults are functions that log a notice on first use.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 600,
      ClientCredentials: 600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page(`Sign out of ${issuer.name}`, `${form}
<button id="sign-out" type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>
<button id="stay" type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page(`Signed out of ${issuer.name}`, '<p id="signed-out">You are signed out.</p>');
        },
      },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    async findAccount(_ctx, sub) {
      if (!issuer.users.has(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...structuredClone(issuer.users.get(sub) ?? {}), sub };
        },
      };
    },
    // No consent screen: the grant always holds what the request asks for.
    async loadExistingGrant(ctx) {
      const { provider, client, account, session } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      let grant = grantId ? await provider.Grant.find(grantId) : undefined;
      if (!grant || grant.accountId !== account.accountId) {
        grant = new provider.Grant({ clientId: client.clientId, accountId: account.accountId });
      }
      grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page(`${issuer.name}: error`, Object.entries(out)
        .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: <span id="${escapeHtml(key)}">${escapeHtml(value)}</span></p>`)
        .join('\n'));
    },
  };

  const provider = new Provider(issuer.url, configuration);
  provider.on('server_error', (_ctx, err) => log(issuer.name, 'server_error', err));
  provider.use(async (ctx, next) => {
    await next();
    rewrite(issuer, ctx);
  });
  return provider;
}

/** Records what the RP sent and applies the misbehaviour to what oidc-provider answered. */
function rewrite(issuer, ctx) {
  const route = ctx.oidc?.route;
  const misbehaviour = issuer.misbehaviour;
  const requestParams = () => (ctx.method === 'POST'
    ? { ...(ctx.oidc?.body ?? {}) }
    : Object.fromEntries(new URL(ctx.href).searchParams));

  switch (route) {
    case 'discovery':
      if (misbehaviour.discovery_issuer !== undefined && ctx.body && typeof ctx.body === 'object') {
        ctx.body = { ...ctx.body, issuer: misbehaviour.discovery_issuer };
      }
      break;

    case 'jwks':
      if (ctx.status === 200) ctx.body = servedJwks(issuer);
      break;

    case 'authorization':
    case 'resume': {
      if (route === 'authorization') issuer.lastAuthorization = requestParams();
      const location = ctx.response.get('location');
      if (!location) break;
      const target = new URL(location, issuer.url);
      const toInteraction = target.origin === issuer.url && target.pathname.startsWith('/interaction/');
      const toClient = !toInteraction
        && (target.searchParams.has('code') || target.searchParams.has('error'));
      if (!toClient) break;
      if ('authorization_response_iss' in misbehaviour) {
        if (misbehaviour.authorization_response_iss === null) {
          target.searchParams.delete('iss');
        } else {
          target.searchParams.set('iss', misbehaviour.authorization_response_iss);
        }
        const status = ctx.status;
        ctx.redirect(target.href);
        ctx.status = status;
      }
      issuer.lastAuthorizationResponse = { location: ctx.response.get('location') };
      break;
    }

    case 'end_session':
      issuer.lastEndSession = requestParams();
      break;

    case 'token': {
      const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
      const client = ctx.oidc?.client;
      const authenticated = Boolean(client)
        && body.error !== 'invalid_client'
        && !(body.error === 'invalid_request' && /client authentication/.test(body.error_description ?? ''));
      issuer.tokenRequests.count += 1;
      issuer.tokenRequests.last = {
        client_id: client?.clientId ?? basicClientId(ctx) ?? ctx.oidc?.body?.client_id ?? null,
        authenticated,
        grant_type: ctx.oidc?.body?.grant_type ?? null,
        status: ctx.status,
        error: body.error ?? null,
      };

      if (misbehaviour.token_error !== undefined) {
        ctx.remove('www-authenticate');
        ctx.status = 400;
        ctx.body = {
          error: misbehaviour.token_error,
          error_description: 'forced by the test harness (misbehave.token_error)',
        };
        break;
      }
      const active = issuer.keys[0];
      const resign = misbehaviour.id_token_claims !== undefined
        || misbehaviour.id_token_signing !== undefined
        || active.kid === null;
      if (ctx.status === 200 && typeof body.id_token === 'string' && resign) {
        const { header, payload } = decodeJwt(body.id_token);
        for (const [claim, value] of Object.entries(misbehaviour.id_token_claims ?? {})) {
          if (value === null) delete payload[claim];
          else payload[claim] = value;
        }
        ctx.body = {
          ...body,
          id_token: signIdToken(issuer, header, payload, misbehaviour.id_token_signing),
        };
      }
      break;
    }

    default:
  }
}

function basicClientId(ctx) {
  const header = ctx.get('authorization');
  const match = /^basic\s+(.+)$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i === -1) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, i).replaceAll('+', '%20'));
  } catch {
    return undefined;
  }
}

function rebuild(issuer) {
  issuer.provider = buildProvider(issuer);
  issuer.callback = issuer.provider.callback();
}

// ---------------------------------------------------------------------------------------------
// HTTP: control API, interaction pages, then oidc-provider

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new HttpError(413, 'request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readJson(req) {
  const text = await readBody(req);
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `the body is not JSON: ${err.message}`);
  }
}

function send(res, status, contentType, body) {
  res.statusCode = status;
  res.setHeader('content-type', contentType);
  res.setHeader('cache-control', 'no-store');
  res.end(body);
}

const sendJson = (res, status, value) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
const sendHtml = (res, status, html) => send(res, status, 'text/html; charset=utf-8', html);

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

function checkMisbehaviour(value) {
  if (!isObject(value)) throw new HttpError(400, 'misbehave wants a JSON object');
  for (const field of Object.keys(value)) {
    if (!MISBEHAVIOUR_FIELDS.has(field)) {
      throw new HttpError(400, `unknown misbehave field ${field} (known: ${[...MISBEHAVIOUR_FIELDS].join(', ')})`);
    }
  }
  if (value.id_token_claims !== undefined && !isObject(value.id_token_claims)) {
    throw new HttpError(400, 'id_token_claims wants an object {claim: value|null}');
  }
  if (value.id_token_signing !== undefined && !SIGNING_MODES.has(value.id_token_signing)) {
    throw new HttpError(400, `id_token_signing is one of ${[...SIGNING_MODES].join(', ')}`);
  }
  for (const field of ['discovery_issuer', 'token_error']) {
    if (value[field] !== undefined && typeof value[field] !== 'string') {
      throw new HttpError(400, `${field} wants a string`);
    }
  }
  if ('authorization_response_iss' in value
    && value.authorization_response_iss !== null
    && typeof value.authorization_response_iss !== 'string') {
    throw new HttpError(400, 'authorization_response_iss wants a string or null');
  }
}

async function setClient(issuer, clientId, body) {
  if (!isObject(body)) throw new HttpError(400, 'client metadata wants a JSON object');
  const metadata = { ...body, client_id: clientId };
  try {
    await issuer.provider.Client.validate(metadata);
  } catch (err) {
    throw new HttpError(400, `invalid client metadata: ${err.error_description ?? err.message}`);
  }
  issuer.clients.set(clientId, metadata);
  return metadata;
}

function setUser(issuer, sub, claims) {
  if (!isObject(claims)) throw new HttpError(400, 'a user wants {"claims": {...}}');
  if (!issuer.users.has(sub)) issuer.userOrder.push(sub);
  issuer.users.set(sub, structuredClone(claims));
}

async function control(issuer, req, res, path) {
  const { method } = req;
  let match;
  if (method === 'PUT' && (match = /^\/__test\/clients\/([^/]+)$/.exec(path))) {
    const metadata = await setClient(issuer, decodeURIComponent(match[1]), await readJson(req));
    return sendJson(res, 200, metadata);
  }
  if (method === 'DELETE' && (match = /^\/__test\/clients\/([^/]+)$/.exec(path))) {
    const clientId = decodeURIComponent(match[1]);
    const existed = issuer.clients.delete(clientId);
    return sendJson(res, existed ? 200 : 404, { client_id: clientId, deleted: existed });
  }
  if (method === 'PUT' && (match = /^\/__test\/users\/([^/]+)$/.exec(path))) {
    const sub = decodeURIComponent(match[1]);
    const body = await readJson(req);
    setUser(issuer, sub, body.claims);
    return sendJson(res, 200, { sub, claims: issuer.users.get(sub) });
  }
  if (path === '/__test/misbehave' && method === 'PUT') {
    const body = await readJson(req);
    checkMisbehaviour(body);
    issuer.misbehaviour = body;
    log(issuer.name, 'misbehave', JSON.stringify(body));
    return sendJson(res, 200, { misbehave: body });
  }
  if (path === '/__test/misbehave' && method === 'DELETE') {
    issuer.misbehaviour = {};
    log(issuer.name, 'behaves again');
    return sendJson(res, 200, { misbehave: {} });
  }
  if (path === '/__test/misbehave' && method === 'GET') {
    return sendJson(res, 200, { misbehave: issuer.misbehaviour });
  }
  if (path === '/__test/keys' && method === 'POST') {
    const { action } = await readJson(req);
    if (action === 'rotate') {
      issuer.keys = [newKey(issuer.name), issuer.keys[0]];
    } else if (action === 'single-without-kid') {
      issuer.keys = [newKey(issuer.name, { withKid: false })];
    } else {
      throw new HttpError(400, 'keys wants {"action": "rotate" | "single-without-kid"}');
    }
    rebuild(issuer);
    log(issuer.name, 'keys', action, issuer.keys.map((key) => key.kid));
    return sendJson(res, 200, { jwks: servedJwks(issuer) });
  }
  if (method === 'GET') {
    switch (path) {
      case '/__test/keys':
        return sendJson(res, 200, { jwks: servedJwks(issuer) });
      case '/__test/last-authorization':
        return sendJson(res, 200, issuer.lastAuthorization ?? {});
      case '/__test/last-authorization-response':
        return sendJson(res, 200, issuer.lastAuthorizationResponse ?? {});
      case '/__test/last-end-session':
        return sendJson(res, 200, issuer.lastEndSession ?? {});
      case '/__test/token-requests':
        return sendJson(res, 200, issuer.tokenRequests);
      default:
    }
  }
  return sendJson(res, 404, { error: `no control route ${method} ${path}` });
}

async function finishConsent(issuer, req, res, details) {
  const { provider } = issuer;
  const { prompt: { details: missing }, params, session } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  grant ??= new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function interaction(issuer, req, res, uid, action) {
  const { provider } = issuer;
  const form = action === 'login' && req.method === 'POST'
    ? new URLSearchParams(await readBody(req))
    : undefined;
  if (action === 'login' && !form) {
    return sendHtml(res, 405, page(`${issuer.name}: error`, '<p>POST the login form</p>'));
  }
  if (!action && req.method !== 'GET') {
    return sendHtml(res, 405, page(`${issuer.name}: error`, '<p>method not allowed</p>'));
  }

  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, page(`${issuer.name}: error`, `<p id="error">${escapeHtml(err.error_description ?? err.message)}</p>`));
  }
  if (details.uid !== uid) {
    return sendHtml(res, 400, page(`${issuer.name}: error`, '<p id="error">interaction mismatch</p>'));
  }
  const clientId = details.params.client_id;

  if (details.prompt.name === 'consent') {
    return finishConsent(issuer, req, res, details);
  }
  if (!form) {
    return sendHtml(res, 200, loginPage(issuer, uid, { clientId }));
  }
  const login = form.get('login') ?? '';
  if (!issuer.users.has(login)) {
    return sendHtml(res, 400, loginPage(issuer, uid, { clientId, login, error: `unknown user ${login}` }));
  }
  return provider.interactionFinished(
    req,
    res,
    { login: { accountId: login } },
    { mergeWithLastSubmission: false },
  );
}

async function handle(issuer, req, res) {
  const path = new URL(req.url, issuer.url).pathname;
  res.on('finish', () => log(issuer.name, req.method, req.url.split('?')[0], res.statusCode));
  try {
    if (path.startsWith('/__test/')) {
      return await control(issuer, req, res, path);
    }
    const match = /^\/interaction\/([^/]+)(?:\/(login))?$/.exec(path);
    if (match) {
      return await interaction(issuer, req, res, match[1], match[2]);
    }
    return issuer.callback(req, res);
  } catch (err) {
    if (!(err instanceof HttpError)) log(issuer.name, 'error', err);
    if (res.headersSent) {
      res.destroy(err);
      return undefined;
    }
    return sendJson(res, err.status ?? 500, { error: err.message });
  }
}

// ---------------------------------------------------------------------------------------------
// Startup

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

async function startIssuer(spec) {
  if (!isObject(spec) || typeof spec.name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(spec.name)) {
    throw new Error(`every issuer needs a name of letters, digits, - and _: ${JSON.stringify(spec)}`);
  }
  const host = spec.host ?? '127.0.0.1';
  const issuer = {
    name: spec.name,
    host,
    url: undefined,
    clients: new Map(),
    users: new Map(),
    userOrder: [],
    store: new Store(),
    cookieKeys: [crypto.randomBytes(32).toString('base64url')],
    keys: [newKey(spec.name)],
    unknownKey: undefined,
    misbehaviour: {},
    lastAuthorization: undefined,
    lastAuthorizationResponse: undefined,
    lastEndSession: undefined,
    tokenRequests: { count: 0, last: null },
    provider: undefined,
    callback: undefined,
  };
  for (const user of spec.users ?? []) {
    setUser(issuer, user.sub, user.claims ?? {});
  }

  // Bind first: the issuer URL carries the port.
  const server = http.createServer((req, res) => {
    handle(issuer, req, res);
  });
  server.keepAliveTimeout = 1000;
  log(spec.name, 'keys generated');
  const port = await listen(server, spec.port ?? 0, host);
  log(spec.name, 'listening on port', port);
  issuer.server = server;
  issuer.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  rebuild(issuer);

  for (const client of spec.clients ?? []) {
    if (!isObject(client) || typeof client.client_id !== 'string') {
      throw new Error(`issuer ${spec.name}: every client needs a client_id`);
    }
    await setClient(issuer, client.client_id, client);
  }
  return issuer;
}

let issuers = [];
let stopping = false;

function shutdown(reason, code = 0) {
  if (stopping) return;
  stopping = true;
  log('stopping:', reason);
  for (const issuer of issuers) {
    issuer.server?.closeAllConnections?.();
    issuer.server?.close();
  }
  setTimeout(() => process.exit(code), 50).unref();
  process.exitCode = code;
}

async function main() {
  const [configPath] = process.argv.slice(2);
  if (!configPath) {
    throw new Error('usage: node provider.mjs CONFIG.json');
  }
  log('starting, pid', process.pid);
  const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  if (!Array.isArray(config.issuers) || config.issuers.length === 0) {
    throw new Error('the config needs "issuers": [...]');
  }
  const names = new Set();
  for (const spec of config.issuers) {
    if (names.has(spec.name)) throw new Error(`issuer name ${spec.name} is used twice`);
    names.add(spec.name);
  }

  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.stdin.on('end', () => shutdown('stdin reached EOF'));
  process.stdin.on('error', () => shutdown('stdin failed'));
  process.stdin.on('data', () => {});
  process.stdin.resume();

  issuers = await Promise.all(config.issuers.map(startIssuer));
  const ready = { ready: true, issuers: Object.fromEntries(issuers.map((i) => [i.name, i.url])) };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  log('ready', JSON.stringify(ready.issuers));
}

main().catch((err) => {
  log('failed to start:', err);
  shutdown('startup failed', 1);
});
