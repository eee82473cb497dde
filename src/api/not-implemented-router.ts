import fs from 'node:fs';
import type { Router } from 'express';
import YAML from 'yaml';
import { AppError } from '../errors';
import type { RouteScope } from './auth';
import { OPENAPI_FILE } from './openapi-router';
import { newRouter, requireScope } from './routing';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

interface Operation {
  method: (typeof METHODS)[number];
  path: string;
  scope: RouteScope;
}

/** The documented operations under `prefixes`, with their scope, read from the contract. */
function documentedOperations(file: string, prefixes: readonly string[]): Operation[] {
  const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as {
    paths: Record<string, Partial<Record<string, { 'x-herald-scope'?: string }>>>;
  };
  const out: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    if (!prefixes.some((prefix) => path === prefix || path.startsWith(`${prefix}/`))) continue;
    for (const method of METHODS) {
      const operation = item[method];
      if (operation) out.push({ method, path, scope: (operation['x-herald-scope'] ?? 'admin') as RouteScope });
    }
  }
  return out;
}

/**
 * Answers every documented operation under `prefixes` (exactly those paths, each behind its own
 * scope, as the real routers would) with a 501 `not_implemented` problem saying `detail`. Used by
 * an engine that does not offer a feature yet (the JetStream engine: subscriptions and delivery),
 * so that the API says so instead of pretending.
 */
export function createNotImplementedRouter(opts: { prefixes: readonly string[]; detail: string; file?: string }): Router {
  const router = newRouter();
  for (const op of documentedOperations(opts.file ?? OPENAPI_FILE, opts.prefixes)) {
    const expressPath = op.path.replace(/\{([A-Za-z]+)\}/g, ':$1');
    router[op.method](expressPath, requireScope(op.scope), () => {
      throw new AppError('not_implemented', opts.detail);
    });
  }
  return router;
}
