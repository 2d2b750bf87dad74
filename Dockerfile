# syntax=docker/dockerfile:1
# CPU image for the API and the worker (compose picks the entry point). The build stage installs
# every dependency, compiles the TypeScript (`npm run build`, each workspace's src/ → dist/) and
# drops the dev dependencies; the runtime stage takes that tree without the compilers and runs
# the JavaScript with plain node.

# ---- build -------------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS build

WORKDIR /app
# Build tools only for native addons without a prebuilt binary for this platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 make g++ \
 && rm -rf /var/lib/apt/lists/* \
 && chown node:node /app
# As `node`, like the runtime stage, so what the install writes is owned by the runtime user.
USER node

# Manifests first so the dependency layer is cached until they change. Every workspace's
# package.json must be here for `npm ci` to match the lock file: add new workspaces below.
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

# All dependencies: TypeScript is a dev dependency. With network here, the optional
# @tensorflow/tfjs-node installs (downloads libtensorflow CPU).
# Uses the image's npm 10, which runs dependency install scripts (npm 11.19+ needs allowScripts).
RUN npm ci --no-audit --no-fund

COPY --chown=node:node . .
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime -----------------------------------------------------------------------------------
FROM node:20-bookworm-slim

WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && chown node:node /app \
 && install -d -o node -g node -m 700 /run/finetune
# /run/finetune: the compose file's credentials volume; a new named volume takes this directory's
# owner and mode, so only `node` can read the files created there.
USER node

# The whole built tree: apps/*/dist and packages/*/dist (what the API and the worker run), the
# dashboard's static files, the migrations, production node_modules (native addons built above on
# this same base image), and the sources the one-shot compose services run through tsx
# (scripts/create-credentials.ts; the Prisma CLI for `migrate`).
COPY --from=build --chown=node:node /app /app
# With network here, `prisma --version` fetches Prisma's schema engine now (into this user's cache),
# so the compose `migrate` service (`prisma migrate deploy`) needs no network at run time.
RUN npx --no-install prisma --version

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/tmp/finetune
EXPOSE 3000
CMD ["node", "apps/api/dist/server.js"]
