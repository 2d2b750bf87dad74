# syntax=docker/dockerfile:1
# CPU image for the API and the worker (compose picks the entry point). No build step: tsx runs
# the TypeScript sources, as in development.
FROM node:20-bookworm-slim

WORKDIR /app
# Build tools only for native addons without a prebuilt binary for this platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

# Manifests first so the dependency layer is cached until they change. Every workspace's
# package.json must be here for `npm ci` to match the lock file: add new workspaces below.
# Everything below runs as `node`, so caches (Prisma's engine download) land where the runtime
# user finds them.
# /run/finetune: the compose file's credentials volume; a new named volume takes this directory's
# owner and mode, so only `node` can read the files created there.
RUN chown node:node /app && install -d -o node -g node -m 700 /run/finetune
USER node
# .npmrc sets onnxruntime-node-install=skip: its install script would otherwise download the CUDA
# provider from outside the npm registry (the CPU binaries ship in the package).
COPY --chown=node:node package.json package-lock.json .npmrc ./
COPY --chown=node:node apps/api/package.json apps/api/
COPY --chown=node:node apps/worker/package.json apps/worker/
COPY --chown=node:node packages/cli/package.json packages/cli/
COPY --chown=node:node packages/core/package.json packages/core/
COPY --chown=node:node packages/db/package.json packages/db/
COPY --chown=node:node packages/ml/package.json packages/ml/
COPY --chown=node:node packages/queue/package.json packages/queue/
COPY --chown=node:node packages/storage/package.json packages/storage/
# The root postinstall generates the Prisma client from these.
COPY --chown=node:node prisma ./prisma
COPY --chown=node:node prisma.config.ts ./
COPY --chown=node:node scripts/prisma-generate.ts scripts/

# With network here, the optional @tensorflow/tfjs-node installs (downloads libtensorflow CPU)
# and `prisma --version` fetches Prisma's schema engine now, so the compose `migrate` service
# (`prisma migrate deploy`) needs no network at run time.
# Uses the image's npm 10, which runs dependency install scripts (npm 11.19+ needs allowScripts).
RUN npm ci --omit=dev --no-audit --no-fund \
 && npx --no-install prisma --version

COPY --chown=node:node . .

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/tmp/finetune
EXPOSE 3000
CMD ["node", "--import", "tsx", "apps/api/src/server.ts"]
