import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_TENANT_ID, type ApiKeyCredentials, type TenantsRepository } from '@finetune/db';
import { hashApiKey, keyPrefix, sameHash } from '../auth/api-keys.ts';
import { sendProblem } from './problem-details.ts';

export type Role = 'admin' | 'member';

/** Who is calling: set on every authenticated /v1 request. */
export interface Caller {
  tenantId: string;
  /** The key's row id; null for ADMIN_API_KEY, which has no row. */
  keyId: string | null;
  /** The key's public prefix, for logs. */
  keyPrefix: string;
  role: Role;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller (tenant, key, role). Null outside /v1. */
    caller: Caller | null;
  }
}

export interface AuthOptions {
  secret: string;
  adminApiKey: string | undefined;
  /** A key's row by its prefix (auth/credentials-cache.ts). */
  credentials: (prefix: string) => Promise<ApiKeyCredentials | null>;
  tenants: TenantsRepository;
}

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/i;

function unauthorized(reply: FastifyReply, detail: string, error?: 'invalid_token') {
  reply.header('www-authenticate', error ? `Bearer realm="finetune", error="${error}"` : 'Bearer realm="finetune"');
  return sendProblem(reply, { status: 401, code: 'unauthorized', detail });
}

/** Registers `request.caller`; call once on the root instance. */
export function decorateCaller(app: FastifyInstance): void {
  app.decorateRequest('caller', null);
}

/**
 * The onRequest hook of the /v1 scope: every request needs `Authorization: Bearer <key>`. A key
 * is looked up by its prefix (cached only while every key change is reported, so a revoked key
 * fails at once: see auth/credentials-cache.ts) and its HMAC compared in constant time on every
 * request. The request's logger then carries the tenant and the
 * key's prefix — never the key.
 */
export function authenticate(options: AuthOptions) {
  const adminHash = options.adminApiKey ? hashApiKey(options.secret, options.adminApiKey) : null;
  const adminPrefix = options.adminApiKey ? (keyPrefix(options.adminApiKey) ?? 'env-admin') : null;
  let defaultTenantReady = false;

  return async function onRequest(request: FastifyRequest, reply: FastifyReply) {
    const header = request.headers.authorization;
    if (header === undefined) return unauthorized(reply, 'send an API key: Authorization: Bearer <key>');
    const match = BEARER.exec(header);
    if (!match) return unauthorized(reply, 'the Authorization header must be "Bearer <key>"', 'invalid_token');
    const key = match[1]!;
    const hash = hashApiKey(options.secret, key);

    let caller: Caller | null = null;
    if (adminHash && sameHash(hash, adminHash)) {
      // The bootstrap admin key acts in the default tenant, created on first use.
      if (!defaultTenantReady) {
        await options.tenants.ensureDefault();
        defaultTenantReady = true;
      }
      caller = { tenantId: DEFAULT_TENANT_ID, keyId: null, keyPrefix: adminPrefix!, role: 'admin' };
    } else {
      const prefix = keyPrefix(key);
      const row = prefix ? await options.credentials(prefix) : null;
      // Compared even when revoked, so both answers take the same time.
      if (row && sameHash(hash, Buffer.from(row.keyHash, 'hex')) && row.revokedAt === null) {
        caller = { tenantId: row.tenantId, keyId: row.id, keyPrefix: row.prefix, role: row.role };
      }
    }
    if (!caller) return unauthorized(reply, 'the API key is unknown or revoked', 'invalid_token');

    request.caller = caller;
    bindCaller(request, reply, { tenantId: caller.tenantId, keyPrefix: caller.keyPrefix });
  };
}

/**
 * Adds the caller to the request's log lines. Fastify's request logger is already a child made
 * for this request: pino's `setBindings` extends it in place, where a child of that child cost
 * 3–4 % of a `GET /v1/jobs/:id` (CPU profile under load). A logger without `setBindings` (a
 * custom or disabled one) gets a child instead.
 */
function bindCaller(request: FastifyRequest, reply: FastifyReply, bindings: { tenantId: string; keyPrefix: string }): void {
  const log = request.log as FastifyRequest['log'] & { setBindings?: (bindings: object) => void };
  if (typeof log.setBindings === 'function') {
    log.setBindings(bindings);
    return;
  }
  request.log = log.child(bindings);
  reply.log = request.log;
}

/** Route-level onRequest for admin-only routes (after `authenticate`). */
export async function requireAdmin(request: FastifyRequest, reply: FastifyReply) {
  if (request.caller?.role !== 'admin') {
    return sendProblem(reply, { status: 403, code: 'forbidden', detail: 'this call needs an admin API key' });
  }
}

/** The authenticated caller of a /v1 route. */
export function callerOf(request: FastifyRequest): Caller {
  if (!request.caller) throw new Error('route outside the authenticated /v1 scope');
  return request.caller;
}
