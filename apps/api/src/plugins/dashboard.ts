import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';

// The web dashboard: static ES modules and CSS from apps/api/dashboard/, served as they are (no
// build step, nothing from a CDN). It is a client of the public API like any other: it holds an
// API key in sessionStorage and sends it as a bearer token, so these routes need no key.

export const DASHBOARD_PREFIX = '/dashboard';
const ROOT = fileURLToPath(new URL('../../dashboard/', import.meta.url));

/** The API's own CSP is `default-src 'none'` (nothing it answers is meant to render); the pages
 * here need their own scripts, styles, thumbnails (blob: URLs) and calls back to the API. */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Registers `/` (a redirect), `/dashboard` (a redirect) and `/dashboard/*` (the files). */
export async function dashboard(app: FastifyInstance): Promise<void> {
  app.addHook('onSend', async (_request, reply) => {
    reply.header('content-security-policy', CSP);
  });
  await app.register(fastifyStatic, {
    root: ROOT,
    prefix: DASHBOARD_PREFIX,
    redirect: true,
    // Another registration (Swagger UI's) may already own reply.sendFile.
    decorateReply: false,
    dotfiles: 'ignore',
    index: 'index.html',
  });
  app.get('/', { schema: { hide: true } }, async (_request, reply) => reply.redirect(`${DASHBOARD_PREFIX}/`));
}
