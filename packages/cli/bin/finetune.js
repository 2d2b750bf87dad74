#!/usr/bin/env node
// Runs the TypeScript sources directly, as the rest of the repo does (no build step): tsx's
// loader is registered for this process, then the CLI is imported.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
